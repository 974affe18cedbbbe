// What a model directory, a training checkpoint or a run directory holds, read from its headers
// and small JSON files only (`diffuse inspect`, docs/cli.md): the parameter count comes from the
// safetensors header's shapes, so inspecting never loads the weights (the file is mapped, its
// data pages are not touched). The JSON form's keys are documented in docs/cli.md.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "engine/scheduler_config.h"
#include "nn/unet_config.h"

namespace diffuse {

// One weights file of the UNet: the main diffusion_pytorch_model.safetensors (or a sharded
// model's index, its shards added up) or a diffusers variant beside it
// (diffusion_pytorch_model.fp16.safetensors, ...).
struct WeightsFileSummary {
  std::string file;  // the name inside the UNet folder
  uint64_t bytes = 0;
  int64_t tensors = 0;
  int64_t parameters = 0;
  std::map<std::string, int64_t> dtype_parameters;  // stored dtype ("F32", "BF16", ...) → elements
};

struct ModelSummary {
  std::string directory;
  std::string layout;  // "pipeline" (unet/ + scheduler/) or "unet" (a bare UNet folder)
  UNet2DConfig unet;
  int64_t parameters = 0;  // of the main weights file
  int classes = 0;         // class labels --class takes (num_class_embeds - 1 null class); 0: unconditional
  std::vector<WeightsFileSummary> weights;  // the main file first, then variants by name
  std::optional<SchedulerConfig> scheduler;
  std::string scheduler_path;  // empty when the directory has no scheduler config
};

struct CheckpointSummary {
  std::string directory;
  int64_t step = 0;
  double loss = 0;  // state.json's: the loss of that step
  uint64_t optimizer_bytes = 0;
};

struct RunSummary {
  std::string directory;
  std::vector<int64_t> checkpoint_steps;  // complete checkpoints, ascending
  nlohmann::json options;                 // config.json's "train" object (null when absent)
  nlohmann::json last_metrics;            // metrics.jsonl's last line (null when absent)
};

struct Inspection {
  std::string kind;  // "model", "checkpoint" or "run"
  std::string path;  // as given
  ModelSummary model;  // for a checkpoint or run: its ema/ (what `diffuse sample` should use)
  std::optional<CheckpointSummary> checkpoint;
  std::optional<RunSummary> run;  // also for a checkpoint inside a run directory
};

// Recognises what `path` is; a missing path or a directory that is none of the three is one
// diffuse::Error (ErrorKind::bad_input) naming it.
Inspection inspect_path(const std::string& path);

// The --json object (docs/cli.md lists its keys).
nlohmann::json inspection_json(const Inspection& inspection);

}  // namespace diffuse
