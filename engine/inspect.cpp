// `diffuse inspect` (see inspect.h): recognises a model directory, a checkpoint or a run directory
// and summarises it from the safetensors headers, the configs, state.json and metrics.jsonl.
#include "engine/inspect.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "diffuse/error.h"
#include "engine/checkpoint.h"
#include "engine/model_dir.h"
#include "engine/noise_schedule.h"
#include "engine/unet_weights.h"
#include "nn/json_input.h"
#include "nn/safetensors.h"

namespace diffuse {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kWeightsStem = "diffusion_pytorch_model";
constexpr const char* kWeightsFile = "diffusion_pytorch_model.safetensors";

Error bad_input(const std::string& message) { return Error(message, ErrorKind::bad_input); }

// Through nn/json_input.h: size, depth and duplicate keys checked, errors naming the file.
json parse_json_file(const std::string& path) {
  return parse_json_input(read_json_input_file(path, "JSON file"), path);
}

// Counts elements per stored dtype from the header's shapes; the data pages stay unread.
WeightsFileSummary summarise_weights(const fs::path& unet_dir, const std::string& name) {
  const fs::path path = unet_dir / name;
  SafetensorsFile file = SafetensorsFile::open(path.string());
  WeightsFileSummary s;
  s.file = name;
  s.bytes = fs::file_size(path);
  s.tensors = static_cast<int64_t>(file.size());
  for (const std::string& tensor : file.names()) {
    const int64_t n = shape_numel(file.shape(tensor));
    s.parameters += n;
    s.dtype_parameters[file.dtype(tensor)] += n;
  }
  return s;
}

// A sharded model (diffusers' diffusion_pytorch_model.safetensors.index.json) as one summary: the
// shards its weight_map names, each read from its header, added up under the index's name.
WeightsFileSummary summarise_sharded_weights(const fs::path& index_path) {
  const json index = parse_json_file(index_path.string());
  if (!index.contains("weight_map") || !index.at("weight_map").is_object())
    throw bad_input(index_path.string() + ": no \"weight_map\" object");
  std::set<std::string> shards;
  for (const auto& [tensor, shard] : index.at("weight_map").items())
    if (shard.is_string()) shards.insert(shard.get<std::string>());
  WeightsFileSummary total;
  total.file = index_path.filename().string();
  for (const std::string& shard : shards) {
    const WeightsFileSummary s = summarise_weights(index_path.parent_path(), shard);
    total.bytes += s.bytes;
    total.tensors += s.tensors;
    total.parameters += s.parameters;
    for (const auto& [dtype, n] : s.dtype_parameters) total.dtype_parameters[dtype] += n;
  }
  return total;
}

// diffusers' variant files sit beside the main one: diffusion_pytorch_model.<variant>.safetensors.
std::vector<std::string> variant_weight_files(const fs::path& unet_dir) {
  std::vector<std::string> names;
  const std::string prefix = std::string(kWeightsStem) + ".";
  for (const auto& e : fs::directory_iterator(unet_dir)) {
    const std::string name = e.path().filename().string();
    if (name != kWeightsFile && name.rfind(prefix, 0) == 0 && e.path().extension() == ".safetensors")
      names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

ModelSummary summarise_model(const std::string& dir) {
  const bool looks_like_model = fs::exists(fs::path(dir) / "unet" / "config.json") || fs::exists(fs::path(dir) / "config.json");
  if (!looks_like_model)
    throw bad_input(dir + ": not a model directory, checkpoint or run directory (no unet/config.json, config.json, "
                          "state.json or checkpoints/)");
  ModelDirectory located;
  try {
    located = locate_model_dir(dir);
  } catch (const Error& e) {
    throw bad_input(e.what());
  }
  ModelSummary m;
  m.directory = dir;
  m.layout = located.unet_dir == dir ? "unet" : "pipeline";
  m.unet = load_unet_config((fs::path(located.unet_dir) / "config.json").string());
  const auto& classes = m.unet.num_class_embeds;
  m.classes = classes && *classes > 1 ? *classes - 1 : 0;
  m.weights.push_back(is_weights_index(located.weights_path) ? summarise_sharded_weights(located.weights_path)
                                                             : summarise_weights(located.unet_dir, kWeightsFile));
  for (const std::string& name : variant_weight_files(located.unet_dir))
    m.weights.push_back(summarise_weights(located.unet_dir, name));
  m.parameters = m.weights.front().parameters;
  m.scheduler_path = located.scheduler_config_path;
  if (!m.scheduler_path.empty()) m.scheduler = read_scheduler_config(m.scheduler_path);
  return m;
}

CheckpointSummary summarise_checkpoint(const fs::path& dir) {
  const std::string state_path = (dir / "state.json").string();
  const json state = parse_json_file(state_path);
  CheckpointSummary c;
  c.directory = dir.string();
  try {
    c.step = state.at("step").get<int64_t>();
    c.loss = state.at("loss").get<double>();
  } catch (const json::exception& e) {
    throw bad_input(state_path + ": " + e.what());
  }
  const fs::path optimizer = dir / "optimizer.safetensors";
  if (fs::exists(optimizer)) c.optimizer_bytes = fs::file_size(optimizer);
  return c;
}

// The last complete line of metrics.jsonl (a crash can leave a torn one after it), read from the
// file's last 64 KiB: a long run's file has a line per step.
json last_metrics_line(const fs::path& path) {
  if (!fs::exists(path)) return nullptr;
  std::ifstream file(path, std::ios::binary);
  if (!file) throw bad_input(path.string() + ": cannot be read");
  const uintmax_t size = fs::file_size(path), tail = std::min<uintmax_t>(size, 64 << 10);
  file.seekg(static_cast<std::streamoff>(size - tail));
  std::string text(tail, '\0');
  file.read(text.data(), static_cast<std::streamsize>(tail));
  std::istringstream lines(text);
  json last = nullptr;
  for (std::string line; std::getline(lines, line);) {
    try {
      json parsed = parse_json_input(line, path.string());
      if (parsed.is_object()) last = std::move(parsed);
    } catch (const Error&) {
      // a torn line (the first, cut by the 64 KiB window, or the last after a crash)
    }
  }
  return last;
}

RunSummary summarise_run(const fs::path& dir) {
  RunSummary r;
  r.directory = dir.string();
  const fs::path checkpoints = dir / "checkpoints";
  if (fs::is_directory(checkpoints))
    for (const auto& e : fs::directory_iterator(checkpoints)) {
      // The same rule as find_latest_checkpoint: step-<digits> holding state.json.
      const std::string name = e.path().filename().string();
      const std::string digits = name.rfind("step-", 0) == 0 ? name.substr(5) : "";
      if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) continue;
      if (e.is_directory() && fs::exists(e.path() / "state.json")) r.checkpoint_steps.push_back(std::stoll(digits));
    }
  std::sort(r.checkpoint_steps.begin(), r.checkpoint_steps.end());
  const fs::path config = dir / "config.json";
  r.options = nullptr;
  if (fs::exists(config)) {
    const json run_config = parse_json_file(config.string());
    if (run_config.contains("train")) r.options = run_config.at("train");
  }
  r.last_metrics = last_metrics_line(dir / "metrics.jsonl");
  return r;
}

json scheduler_json(const ModelSummary& m) {
  if (!m.scheduler) return nullptr;
  const SchedulerConfig& s = *m.scheduler;
  return {{"path", m.scheduler_path},
          {"class", scheduler_class_name(s.kind)},
          {"prediction_type", prediction_type_name(s.prediction_type)},
          {"beta_schedule", beta_schedule_name(s.beta_schedule)},
          {"beta_start", s.beta_start},
          {"beta_end", s.beta_end},
          {"num_train_timesteps", s.num_train_timesteps},
          {"timestep_spacing", timestep_spacing_name(s.spacing())}};
}

}  // namespace

Inspection inspect_path(const std::string& path) {
  const fs::path p(path);
  if (!fs::exists(p)) throw bad_input(path + ": not found");
  if (!fs::is_directory(p))
    throw bad_input(path + ": not a directory (expected a model directory, a checkpoint or a run directory)");
  Inspection out;
  out.path = path;
  if (is_checkpoint_dir(path)) {
    out.kind = "checkpoint";
    out.checkpoint = summarise_checkpoint(p);
    out.model = summarise_model(checkpoint_model_dir(path));
    const fs::path run = p.parent_path().parent_path();  // RUN/checkpoints/step-N
    if (p.parent_path().filename() == "checkpoints" && is_run_dir(run.string())) out.run = summarise_run(run);
  } else if (is_run_dir(path)) {
    out.kind = "run";
    const std::string model = resolve_model_dir(path);  // the latest checkpoint's (an error if none)
    out.run = summarise_run(p);
    out.checkpoint = summarise_checkpoint(fs::path(model).parent_path());
    out.model = summarise_model(model);
  } else {
    out.kind = "model";
    out.model = summarise_model(path);
  }
  return out;
}

json inspection_json(const Inspection& in) {
  const ModelSummary& m = in.model;
  json weights = json::array();
  for (const WeightsFileSummary& w : m.weights)
    weights.push_back({{"file", w.file},
                       {"bytes", w.bytes},
                       {"tensors", w.tensors},
                       {"parameters", w.parameters},
                       {"dtypes", w.dtype_parameters}});
  json out = {{"kind", in.kind},
              {"path", in.path},
              {"model",
               {{"directory", m.directory},
                {"layout", m.layout},
                {"parameters", m.parameters},
                {"classes", m.classes},
                {"unet", json::parse(unet_config_to_json(m.unet))},
                {"weights", weights},
                {"scheduler", scheduler_json(m)}}},
              {"checkpoint", nullptr},
              {"run", nullptr}};
  if (in.checkpoint)
    out["checkpoint"] = {{"directory", in.checkpoint->directory},
                         {"step", in.checkpoint->step},
                         {"loss", in.checkpoint->loss},
                         {"optimizer_bytes", in.checkpoint->optimizer_bytes}};
  if (in.run)
    out["run"] = {{"directory", in.run->directory},
                  {"checkpoints", in.run->checkpoint_steps},
                  {"options", in.run->options},
                  {"last_metrics", in.run->last_metrics}};
  return out;
}

}  // namespace diffuse
