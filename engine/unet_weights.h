// Moving UNet2D weights to and from safetensors files with diffusers' names and layouts: conv
// weights are OIHW on disk and OHWI in memory; older diffusers files name the attention
// projections query/key/value/proj_attn, mapped here to to_q/to_k/to_v/to_out.0. Weights come
// from strangers (issue 13), so loading refuses what would otherwise be accepted silently: a
// NaN or infinity, integer data where floats go, a legacy and a modern name for one tensor.
#pragma once
#include <map>
#include <string>

#include "nn/unet2d.h"

namespace diffuse {

// `path` is one safetensors file, or a sharded model's index (diffusers'
// `diffusion_pytorch_model.safetensors.index[.VARIANT].json`: {"weight_map": {tensor: shard}}
// naming shard files in the index's own directory). Every parameter must be present with the
// config's shape, a floating-point dtype and finite values; an unknown tensor is an error too
// (the file and the config disagree). Nothing in `model` changes unless all checks pass.
void load_unet_weights(UNet2D& model, const std::string& path);
// The precisions weights are saved in: f32 (what training resumes from), or the f16 and bf16 of
// diffusers' fp16/bf16 variants.
enum class WeightsDType { f32, f16, bf16 };
void save_unet_weights(UNet2D& model, const std::string& safetensors_path,
                       const std::map<std::string, std::string>& metadata = {},
                       WeightsDType dtype = WeightsDType::f32);

// True when `path` names a sharded model's index rather than a safetensors file.
bool is_weights_index(const std::string& path);

}  // namespace diffuse
