// See model_dir.h.
#include "engine/model_dir.h"

#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "engine/checkpoint.h"
#include "engine/unet_weights.h"
#include "nn/atomic_file.h"
#include "nn/json_input.h"

namespace diffuse {

namespace fs = std::filesystem;

namespace {

[[noreturn]] void refuse(const std::string& message) { throw Error(message, ErrorKind::bad_input); }

// A variant is one word of a file name: diffusers inserts it between dots.
void check_variant(const std::string& variant) {
  bool ok = !variant.empty() && variant.size() <= 32;
  for (char ch : variant) ok = ok && (std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-');
  if (!ok)
    throw Error("variant \"" + text_excerpt(variant) + "\" is not a variant name (letters, digits, _ and -, like fp16)",
                ErrorKind::usage);
}

// What the weights directory holds when the file asked for is absent: the variants present, and
// any pickle weights.
struct OtherWeights {
  std::set<std::string> variants;  // "" for the plain weights
  std::string pickle;              // a .bin file name, "" when none
};

OtherWeights other_weights(const fs::path& dir) {
  OtherWeights out;
  const std::string stem = "diffusion_pytorch_model.";
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(stem, 0) != 0) continue;
    const std::string rest = name.substr(stem.size());  // e.g. fp16.safetensors, safetensors.index.fp16.json
    auto ends_with = [&](const std::string& tail) {
      return rest.size() >= tail.size() && rest.compare(rest.size() - tail.size(), tail.size(), tail) == 0;
    };
    if (ends_with(".bin") || ends_with(".bin.index.json") || rest == "bin") {
      out.pickle = name;
    } else if (rest == "safetensors" || rest == "safetensors.index.json") {
      out.variants.insert("");
    } else if (rest.rfind("safetensors.index.", 0) == 0 && ends_with(".json")) {
      out.variants.insert(rest.substr(18, rest.size() - 18 - 5));
    } else if (ends_with(".safetensors") && rest.find('-') == std::string::npos) {  // not a shard
      out.variants.insert(rest.substr(0, rest.size() - 12));
    }
  }
  return out;
}

[[noreturn]] void no_weights(const fs::path& unet_dir, const std::string& variant) {
  const std::string where = unet_dir.string();
  const std::string wanted = weights_file_name(variant);
  OtherWeights other = other_weights(unet_dir);
  other.variants.erase(variant);
  std::string listed;
  for (const auto& v : other.variants) listed += (listed.empty() ? "" : ", ") + (v.empty() ? "none" : v);
  if (!other.variants.empty()) {
    if (variant.empty() && other.variants.size() == 1)
      refuse(where + ": no " + wanted + "; the directory holds only the " + *other.variants.begin() +
             " variant: load it with --variant " + *other.variants.begin() + " (Model::load's variant)");
    refuse(where + ": no " + wanted + " (nor " + weights_index_name(variant) + "); variants present: " + listed +
           " (choose one with --variant; none means no --variant)");
  }
  if (!other.pickle.empty())
    refuse(where + ": the weights are PyTorch pickle (" + other.pickle +
           "), which diffuse never reads: unpickling runs code from the file. Convert them to " + wanted +
           " with diffusers (docs/formats.md, \"Converting .bin weights\")");
  refuse((unet_dir / wanted).string() + ": weights file not found");
}

}  // namespace

std::string weights_file_name(const std::string& variant) {
  return variant.empty() ? "diffusion_pytorch_model.safetensors" : "diffusion_pytorch_model." + variant + ".safetensors";
}

std::string weights_index_name(const std::string& variant) {
  return variant.empty() ? "diffusion_pytorch_model.safetensors.index.json"
                         : "diffusion_pytorch_model.safetensors.index." + variant + ".json";
}

ModelDirectory locate_model_dir(const std::string& given, const std::string& variant) {
  if (!variant.empty()) check_variant(variant);
  const std::string dir = resolve_model_dir(given);
  if (!fs::is_directory(dir)) refuse(dir + ": model directory not found");
  ModelDirectory m;
  m.root = dir;
  if (fs::exists(fs::path(dir) / "unet" / "config.json")) {
    m.unet_dir = (fs::path(dir) / "unet").string();
  } else if (fs::exists(fs::path(dir) / "config.json")) {
    m.unet_dir = dir;
  } else {
    refuse(dir + ": not a model directory (expected unet/config.json or config.json, a checkpoint or a run)");
  }
  // As diffusers: a sharded model's index wins over a single file.
  const fs::path index = fs::path(m.unet_dir) / weights_index_name(variant);
  const fs::path single = fs::path(m.unet_dir) / weights_file_name(variant);
  if (fs::exists(index)) m.weights_path = index.string();
  else if (fs::exists(single)) m.weights_path = single.string();
  else no_weights(m.unet_dir, variant);
  for (auto p : {fs::path(dir) / "scheduler" / "scheduler_config.json", fs::path(dir) / "scheduler_config.json"})
    if (fs::exists(p)) {
      m.scheduler_config_path = p.string();
      break;
    }
  return m;
}

std::unique_ptr<UNet2D> load_unet(const ModelDirectory& dir) {
  UNet2DConfig config = load_unet_config((fs::path(dir.unet_dir) / "config.json").string());
  auto model = std::make_unique<UNet2D>(config, 0);
  load_unet_weights(*model, dir.weights_path);
  return model;
}

void save_weights_variant(const std::string& dir, UNet2D& model, const std::string& variant) {
  WeightsDType dtype;
  if (variant == "fp16") dtype = WeightsDType::f16;
  else if (variant == "bf16") dtype = WeightsDType::bf16;
  else throw Error("cannot save weights variant \"" + text_excerpt(variant) + "\": fp16 or bf16", ErrorKind::usage);
  const ModelDirectory m = locate_model_dir(dir);
  save_unet_weights(model, (fs::path(m.unet_dir) / weights_file_name(variant)).string(), {}, dtype);
}

void replace_directory(const std::string& tmp, const std::string& dst) {
  std::error_code ec;
  std::string old;
  if (fs::exists(dst)) {
    old = dst + ".old-" + std::to_string(::getpid());
    fs::remove_all(old, ec);
    fs::rename(dst, old, ec);
    if (ec) throw Error(dst + ": cannot replace (" + ec.message() + ")");
  }
  fs::rename(tmp, dst, ec);
  if (ec) {
    if (!old.empty()) fs::rename(old, dst);
    throw Error(dst + ": cannot move the new directory into place (" + ec.message() + ")");
  }
  // The rename is durable only once the parent directory's entry is on disk.
  fsync_directory(fs::path(dst).parent_path().empty() ? "." : fs::path(dst).parent_path().string());
  if (!old.empty()) fs::remove_all(old, ec);
}

void save_model_dir(const std::string& dir, UNet2D& model, const std::string& scheduler_config_json) {
  fs::path tmp = fs::path(dir).string() + ".tmp-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  try {
    fs::create_directories(tmp / "unet");
    write_file_atomic((tmp / "unet" / "config.json").string(), unet_config_to_json(model.config()));
    save_unet_weights(model, (tmp / "unet" / "diffusion_pytorch_model.safetensors").string());
    nlohmann::json index = {{"_class_name", "DDPMPipeline"}, {"_diffusers_version", "0.30.0"},
                            {"unet", {"diffusers", "UNet2DModel"}}};
    if (!scheduler_config_json.empty()) {
      fs::create_directories(tmp / "scheduler");
      write_file_atomic((tmp / "scheduler" / "scheduler_config.json").string(), scheduler_config_json);
      // The text is ours (written by scheduler_config_to_json), but parse it as any other.
      auto sched = parse_json_input(scheduler_config_json, "scheduler config");
      index["scheduler"] = {"diffusers", sched.value("_class_name", "DDPMScheduler")};
    }
    write_file_atomic((tmp / "model_index.json").string(), index.dump(2) + "\n");
    replace_directory(tmp.string(), dir);
  } catch (const fs::filesystem_error& e) {
    fs::remove_all(tmp, ec);
    throw Error(dir + ": cannot write model directory (" + e.code().message() + ")");
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

}  // namespace diffuse
