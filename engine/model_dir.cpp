// See model_dir.h.
#include "engine/model_dir.h"

#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "engine/unet_weights.h"
#include "nn/atomic_file.h"

namespace diffuse {

namespace fs = std::filesystem;

ModelDirectory locate_model_dir(const std::string& dir) {
  if (!fs::is_directory(dir)) throw Error(dir + ": model directory not found");
  ModelDirectory m;
  m.root = dir;
  const char* weights = "diffusion_pytorch_model.safetensors";
  if (fs::exists(fs::path(dir) / "unet" / "config.json")) {
    m.unet_dir = (fs::path(dir) / "unet").string();
  } else if (fs::exists(fs::path(dir) / "config.json")) {
    m.unet_dir = dir;
  } else {
    throw Error(dir + ": not a model directory (expected unet/config.json or config.json)");
  }
  if (!fs::exists(fs::path(m.unet_dir) / weights))
    throw Error((fs::path(m.unet_dir) / weights).string() + ": weights file not found");
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
  load_unet_weights(*model, (fs::path(dir.unet_dir) / "diffusion_pytorch_model.safetensors").string());
  return model;
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
      auto sched = nlohmann::json::parse(scheduler_config_json);
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
