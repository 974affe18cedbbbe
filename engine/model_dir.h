// Model directories (docs/design.md §9): diffusers' pipeline layout (model_index.json, unet/config.json,
// unet/diffusion_pytorch_model.safetensors, scheduler/scheduler_config.json) or a bare UNet
// directory (config.json + diffusion_pytorch_model.safetensors). Saving is atomic: the directory
// is assembled under a temporary name and renamed into place.
#pragma once
#include <memory>
#include <string>

#include "nn/unet2d.h"

namespace diffuse {

struct ModelDirectory {
  std::string root;
  std::string unet_dir;               // holds config.json + diffusion_pytorch_model.safetensors
  std::string scheduler_config_path;  // empty when the directory has none
};

ModelDirectory locate_model_dir(const std::string& dir);
std::unique_ptr<UNet2D> load_unet(const ModelDirectory& dir);

// Writes a diffusers pipeline directory. scheduler_config_json may be empty (no scheduler/).
void save_model_dir(const std::string& dir, UNet2D& model, const std::string& scheduler_config_json);

// Replaces `dst` by the fully written directory `tmp` (rename; an existing dst is moved aside
// first and removed only after the new one is in place).
void replace_directory(const std::string& tmp, const std::string& dst);

}  // namespace diffuse
