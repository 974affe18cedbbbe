// See checkpoint.h. A checkpoint is published by one rename of step-N.tmp-<pid>/ to step-N/, and
// the checkpoints directory is fsync'ed after it so that the rename survives a power cut.
#include "engine/checkpoint.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <filesystem>
#include <optional>
#include <nlohmann/json.hpp>

#include "engine/model_dir.h"
#include "engine/unet_weights.h"
#include "nn/atomic_file.h"
#include "nn/json_input.h"
#include "nn/safetensors.h"

namespace diffuse {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// The decimal number `text` spells exactly (digits only, no sign, no overflow), if it does.
std::optional<int64_t> parse_digits(std::string_view text) {
  if (text.empty() || text.find_first_not_of("0123456789") != std::string_view::npos) return std::nullopt;
  int64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return v;
}

// The pid in a checkpoint temporary's name "step-<digits>.tmp-<pid>".
std::optional<int64_t> checkpoint_temp_pid(const std::string& name) {
  const size_t dot = name.find(".tmp-");
  if (name.rfind("step-", 0) != 0 || dot == std::string::npos || !parse_digits(name.substr(5, dot - 5)))
    return std::nullopt;
  return parse_digits(name.substr(dot + 5));
}

// The pid in an AtomicFile temporary's name "<name>.tmp-<pid>-<digits>".
std::optional<int64_t> atomic_file_temp_pid(const std::string& name) {
  const size_t at = name.rfind(".tmp-");
  if (at == std::string::npos || at == 0) return std::nullopt;
  const std::string rest = name.substr(at + 5);
  const size_t dash = rest.find('-');
  if (dash == std::string::npos || !parse_digits(rest.substr(dash + 1))) return std::nullopt;
  return parse_digits(rest.substr(0, dash));
}

// True only when the process is certainly gone; a live one, or one we may not signal, is kept.
bool process_is_gone(int64_t pid) {
  if (pid <= 0 || pid > INT32_MAX || pid == ::getpid()) return false;
  return ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
}

}  // namespace

std::vector<std::string> remove_stale_temporaries(const std::string& run_dir) {
  std::vector<std::string> removed;
  auto sweep = [&](const fs::path& dir, bool directories) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) return;
    std::vector<fs::path> stale;
    for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
      const std::string name = it->path().filename().string();
      // symlink_status: a link named like a temporary is not ours, whatever it points at.
      const fs::file_status st = it->symlink_status(ec);
      if (ec) break;
      const bool kind_ok = directories ? fs::is_directory(st) : fs::is_regular_file(st);
      const std::optional<int64_t> pid = directories ? checkpoint_temp_pid(name) : atomic_file_temp_pid(name);
      if (kind_ok && pid && process_is_gone(*pid)) stale.push_back(it->path());
    }
    for (const fs::path& p : stale) {
      std::error_code rm;
      fs::remove_all(p, rm);
      if (rm) throw Error(p.string() + ": cannot remove this leftover of an interrupted run (" + rm.message() + ")");
      removed.push_back(p.string());
    }
    if (!stale.empty()) fsync_directory(dir.string());
  };
  const fs::path run(run_dir);
  sweep(run / "checkpoints", true);
  sweep(run, false);
  sweep(run / "samples", false);
  return removed;
}

std::string find_latest_checkpoint(const std::string& run_dir, int64_t* step) {
  fs::path dir = fs::path(run_dir) / "checkpoints";
  if (!fs::is_directory(dir)) return "";
  int64_t best = -1;
  std::string best_path;
  for (auto& e : fs::directory_iterator(dir)) {
    std::string name = e.path().filename().string();
    if (name.rfind("step-", 0) != 0 || !e.is_directory()) continue;
    const std::optional<int64_t> n = parse_digits(std::string_view(name).substr(5));  // not step-N.tmp-* etc.
    if (!n || !fs::exists(e.path() / "state.json")) continue;
    if (*n > best) {
      best = *n;
      best_path = e.path().string();
    }
  }
  if (step) *step = best;
  return best_path;
}

bool is_checkpoint_dir(const std::string& dir) {
  std::error_code ec;
  const fs::path p(dir);
  return fs::exists(p / "state.json", ec) && (fs::is_directory(p / "ema", ec) || fs::is_directory(p / "model", ec));
}

bool is_run_dir(const std::string& dir) {
  std::error_code ec;
  return fs::is_directory(fs::path(dir) / "checkpoints", ec) || fs::exists(fs::path(dir) / "metrics.jsonl", ec);
}

std::string checkpoint_model_dir(const std::string& checkpoint) {
  std::error_code ec;
  const fs::path p(checkpoint);
  return fs::is_directory(p / "ema", ec) ? (p / "ema").string() : (p / "model").string();
}

std::string resolve_model_dir(const std::string& path) {
  if (is_checkpoint_dir(path)) return checkpoint_model_dir(path);
  if (!is_run_dir(path)) return path;
  const std::string latest = find_latest_checkpoint(path);
  if (latest.empty()) throw Error(path + ": a run directory without a complete checkpoint yet", ErrorKind::bad_input);
  return checkpoint_model_dir(latest);
}

std::string save_checkpoint(const std::string& run_dir, const TrainState& st, UNet2D& model, UNet2D& ema_model,
                            optim::EMA& ema, optim::AdamW& adam, const std::string& scheduler_json,
                            const std::string& ema_variant) {
  fs::path final_dir = fs::path(run_dir) / "checkpoints" / ("step-" + std::to_string(st.step));
  fs::path tmp = final_dir.string() + ".tmp-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  try {
    fs::create_directories(tmp);
    save_model_dir((tmp / "model").string(), model, scheduler_json);
    ema.copy_to(ema_model.parameters());
    save_model_dir((tmp / "ema").string(), ema_model, scheduler_json);
    if (!ema_variant.empty()) save_weights_variant((tmp / "ema").string(), ema_model, ema_variant);

    std::vector<std::pair<std::string, Tensor>> moments;
    ParamList names = model.named_parameters();
    for (size_t i = 0; i < names.size(); ++i) {
      moments.emplace_back("exp_avg." + names[i].first, adam.exp_avg()[i]);
      moments.emplace_back("exp_avg_sq." + names[i].first, adam.exp_avg_sq()[i]);
    }
    save_safetensors((tmp / "optimizer.safetensors").string(), moments);

    json state = {{"step", st.step},
                  {"batch_epoch", st.batch_position.epoch},
                  {"batch_index", st.batch_position.index},
                  {"dropout_offset", st.dropout_offset},
                  {"ema_optimization_step", ema.optimization_step()},
                  {"adam_step_count", adam.step_count()},
                  {"loss", st.loss}};
    write_file_atomic((tmp / "state.json").string(), state.dump(2) + "\n");
    fsync_directory(tmp.string());  // model/ and ema/ were renamed into it
    replace_directory(tmp.string(), final_dir.string());
    fsync_directory(final_dir.parent_path().string());
  } catch (const fs::filesystem_error& e) {
    fs::remove_all(tmp, ec);
    throw Error(final_dir.string() + ": cannot write checkpoint (" + e.code().message() + ")");
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  return final_dir.string();
}

TrainState load_checkpoint(const std::string& dir, UNet2D& model, UNet2D& ema_model, optim::EMA& ema, optim::AdamW& adam) {
  fs::path d(dir);
  const std::string state_path = (d / "state.json").string();
  // Read and checked before any weights load: nesting depth, size and duplicate keys by
  // parse_json_input, every integer's range by json_integer below.
  const json state = parse_json_input(read_json_input_file(state_path, "checkpoint state"), state_path);
  if (!state.is_object()) throw Error(state_path + ": not valid checkpoint state (not a JSON object)", ErrorKind::bad_input);
  TrainState st;
  auto field = [&](const char* key, int64_t max) -> int64_t {
    if (!state.contains(key)) throw Error(state_path + ": missing field \"" + key + "\"", ErrorKind::bad_input);
    return json_integer(state.at(key), 0, max, state_path + ": " + key);
  };
  st.step = field("step", INT64_MAX);
  st.batch_position.epoch = static_cast<uint64_t>(field("batch_epoch", UINT32_MAX));  // the batcher keys on epoch << 32
  st.batch_position.index = field("batch_index", INT64_MAX);
  st.dropout_offset = static_cast<uint64_t>(field("dropout_offset", INT64_MAX));
  const int64_t ema_step = field("ema_optimization_step", INT64_MAX), adam_step = field("adam_step_count", INT64_MAX);
  if (state.contains("loss")) {
    if (!state.at("loss").is_number())
      throw Error(state_path + ": loss = " + json_excerpt(state.at("loss")) + " is not a number", ErrorKind::bad_input);
    st.loss = state.at("loss").get<double>();
  }
  load_unet_weights(model, (d / "model" / "unet" / "diffusion_pytorch_model.safetensors").string());
  load_unet_weights(ema_model, (d / "ema" / "unet" / "diffusion_pytorch_model.safetensors").string());
  std::vector<Tensor> shadow_src = ema_model.parameters();
  for (size_t i = 0; i < shadow_src.size(); ++i) ema.shadow()[i].copy_from(shadow_src[i]);

  std::string opt_path = (d / "optimizer.safetensors").string();
  SafetensorsFile opt = SafetensorsFile::open(opt_path);
  ParamList names = model.named_parameters();
  for (size_t i = 0; i < names.size(); ++i) {
    for (auto [prefix, vec] : {std::pair{"exp_avg.", &adam.exp_avg()}, std::pair{"exp_avg_sq.", &adam.exp_avg_sq()}}) {
      std::string key = prefix + names[i].first;
      if (!opt.contains(key)) throw Error(opt_path + ": tensor " + key + " is missing", ErrorKind::bad_input);
      Tensor v = opt.get(key, DType::f32);
      if (v.shape() != (*vec)[i].shape())
        throw Error(opt_path + ": tensor " + key + " has shape " + shape_str(v.shape()) + ", expected " +
                        shape_str((*vec)[i].shape()),
                    ErrorKind::bad_input);
      (*vec)[i].copy_from(v.to((*vec)[i].device()));
    }
  }
  ema.set_optimization_step(ema_step);
  adam.set_step_count(adam_step);
  return st;
}

}  // namespace diffuse
