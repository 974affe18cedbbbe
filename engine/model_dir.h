// Model directories (docs/design.md §9): diffusers' pipeline layout (model_index.json, unet/config.json,
// unet/diffusion_pytorch_model.safetensors, scheduler/scheduler_config.json) or a bare UNet
// directory (config.json + diffusion_pytorch_model.safetensors). The weights may also be sharded
// (diffusion_pytorch_model.safetensors.index.json naming the shards) or a variant, as diffusers
// 0.31 writes them (docs/formats.md "Weights files"). PyTorch pickle weights (.bin) are never read.
// Saving is atomic: the directory is assembled under a temporary name and renamed into place.
#pragma once
#include <memory>
#include <string>

#include "nn/unet2d.h"

namespace diffuse {

struct ModelDirectory {
  std::string root;
  std::string unet_dir;               // holds config.json and the weights
  std::string weights_path;           // a safetensors file, or a sharded model's index.json
  std::string scheduler_config_path;  // empty when the directory has none
};

// `dir` may also be a training checkpoint or run directory: resolve_model_dir (engine/checkpoint.h)
// picks its model directory, and `root` is that one.
// `variant` ("" for none; "fp16", "bf16", ... as diffusers' `variant=`) picks
// diffusion_pytorch_model.VARIANT.safetensors (or diffusion_pytorch_model.safetensors.index.VARIANT.json).
// When the weights asked for are absent the error says what is there instead: the variant to
// ask for, or pickle weights and how to convert them.
ModelDirectory locate_model_dir(const std::string& dir, const std::string& variant = "");
std::unique_ptr<UNet2D> load_unet(const ModelDirectory& dir);

// The weights file names diffusers uses for `variant` ("" for none).
std::string weights_file_name(const std::string& variant);
std::string weights_index_name(const std::string& variant);

// Writes a diffusers pipeline directory. scheduler_config_json may be empty (no scheduler/).
void save_model_dir(const std::string& dir, UNet2D& model, const std::string& scheduler_config_json);

// Adds the weights variant `variant` ("fp16": F16, "bf16": BF16) of `model` to the model
// directory `dir`, next to its f32 weights (which stay: resuming training needs them), as
// diffusers' save_pretrained(variant=...) names it. Atomic, like every write.
void save_weights_variant(const std::string& dir, UNet2D& model, const std::string& variant);

// Replaces `dst` by the fully written directory `tmp` (rename; an existing dst is moved aside
// first and removed only after the new one is in place).
void replace_directory(const std::string& tmp, const std::string& dst);

}  // namespace diffuse
