// Moving UNet2D weights to and from safetensors files with diffusers' names and layouts: conv
// weights are OIHW on disk and OHWI in memory; older diffusers files name the attention
// projections query/key/value/proj_attn, mapped here to to_q/to_k/to_v/to_out.0.
#pragma once
#include <map>
#include <string>

#include "nn/unet2d.h"

namespace diffuse {

// Every parameter must be present with the config's shape; an unknown tensor is an error too
// (it means the file and the config disagree). Nothing in `model` changes unless all checks pass.
void load_unet_weights(UNet2D& model, const std::string& safetensors_path);
void save_unet_weights(UNet2D& model, const std::string& safetensors_path,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace diffuse
