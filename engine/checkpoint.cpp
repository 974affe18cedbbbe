// See checkpoint.h.
#include "engine/checkpoint.h"

#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "engine/model_dir.h"
#include "engine/unet_weights.h"
#include "nn/atomic_file.h"
#include "nn/safetensors.h"

namespace diffuse {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string find_latest_checkpoint(const std::string& run_dir) {
  fs::path dir = fs::path(run_dir) / "checkpoints";
  if (!fs::is_directory(dir)) return "";
  int64_t best = -1;
  std::string best_path;
  for (auto& e : fs::directory_iterator(dir)) {
    std::string name = e.path().filename().string();
    if (name.rfind("step-", 0) != 0 || !e.is_directory()) continue;
    std::string num = name.substr(5);
    if (num.empty() || num.find_first_not_of("0123456789") != std::string::npos) continue;  // step-N.tmp-* etc.
    if (!fs::exists(e.path() / "state.json")) continue;
    int64_t n = std::stoll(num);
    if (n > best) {
      best = n;
      best_path = e.path().string();
    }
  }
  return best_path;
}

std::string save_checkpoint(const std::string& run_dir, const TrainState& st, UNet2D& model, UNet2D& ema_model,
                            optim::EMA& ema, optim::AdamW& adam, const std::string& scheduler_json) {
  fs::path final_dir = fs::path(run_dir) / "checkpoints" / ("step-" + std::to_string(st.step));
  fs::path tmp = final_dir.string() + ".tmp-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  try {
    fs::create_directories(tmp);
    save_model_dir((tmp / "model").string(), model, scheduler_json);
    ema.copy_to(ema_model.parameters());
    save_model_dir((tmp / "ema").string(), ema_model, scheduler_json);

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
    replace_directory(tmp.string(), final_dir.string());
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
  json state;
  std::string state_path = (d / "state.json").string();
  try {
    state = json::parse(read_file(state_path));
  } catch (const json::exception& e) {
    throw Error(state_path + ": not valid checkpoint state (" + std::string(e.what()) + ")");
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
      if (!opt.contains(key)) throw Error(opt_path + ": tensor " + key + " is missing");
      Tensor v = opt.get(key, DType::f32);
      if (v.shape() != (*vec)[i].shape())
        throw Error(opt_path + ": tensor " + key + " has shape " + shape_str(v.shape()) + ", expected " +
                    shape_str((*vec)[i].shape()));
      (*vec)[i].copy_from(v.to((*vec)[i].device()));
    }
  }
  TrainState st;
  try {
    st.step = state.at("step").get<int64_t>();
    st.batch_position.epoch = state.at("batch_epoch").get<uint64_t>();
    st.batch_position.index = state.at("batch_index").get<int64_t>();
    st.dropout_offset = state.at("dropout_offset").get<uint64_t>();
    st.loss = state.value("loss", 0.0);
    ema.set_optimization_step(state.at("ema_optimization_step").get<int64_t>());
    adam.set_step_count(state.at("adam_step_count").get<int64_t>());
  } catch (const json::exception& e) {
    throw Error(state_path + ": missing or malformed field (" + std::string(e.what()) + ")");
  }
  return st;
}

}  // namespace diffuse
