// UNet2DConfig: the subset of diffusers' UNet2DModel config.json that diffuse implements
// (docs/design.md §7). Parsing is strict: `_`-prefixed metadata is ignored, keys whose value is the one
// behaviour we implement are accepted, anything else is rejected naming the key and the value.
#pragma once
#include <optional>
#include <string>
#include <vector>

namespace diffuse {

struct UNet2DConfig {
  int sample_size = 32;
  int in_channels = 3;
  int out_channels = 3;
  std::vector<int> block_out_channels = {224, 448, 672, 896};
  int layers_per_block = 2;
  std::vector<std::string> down_block_types = {"DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"};
  std::vector<std::string> up_block_types = {"AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"};
  std::optional<int> attention_head_dim = 8;  // nullopt: one head as wide as the block
  int norm_num_groups = 32;
  double norm_eps = 1e-5;
  bool flip_sin_to_cos = true;
  double freq_shift = 0;
  int downsample_padding = 1;
  double dropout = 0.0;
  std::optional<int> num_class_embeds;
  bool center_input_sample = false;
  std::optional<int> num_train_timesteps;  // informational; diffusers records it in some files

  int time_embed_dim() const { return 4 * block_out_channels.at(0); }
  // Head dimension of the attention blocks at a level with `channels` channels.
  int head_dim_for(int channels) const { return attention_head_dim ? *attention_head_dim : channels; }
};

// Ranges every config must fall in (docs/formats.md "Limits"): far beyond any diffusers UNet2DModel,
// small enough that sizes computed from them (1 << (levels - 1), channels · groups, ...) cannot
// overflow and that an absurd value (layers_per_block 1e9) is refused before anything is allocated.
struct UNet2DConfigLimits {
  static constexpr int max_levels = 8;               // entries in block_out_channels
  static constexpr int max_block_channels = 8192;    // each block_out_channels entry
  static constexpr int max_image_channels = 1024;    // in_channels, out_channels
  static constexpr int max_layers_per_block = 16;
  static constexpr int max_sample_size = 16384;
  static constexpr int max_norm_groups = 1024;       // norm_num_groups
  static constexpr int max_class_embeds = 65536;     // num_class_embeds
  static constexpr int max_train_timesteps = 1'000'000;
};

// `source` names the file (or config) in error messages.
UNet2DConfig parse_unet_config(const std::string& json_text, const std::string& source);
UNet2DConfig load_unet_config(const std::string& path);
std::string unet_config_to_json(const UNet2DConfig& config);  // diffusers-compatible config.json
void validate_unet_config(const UNet2DConfig& config, const std::string& source);

// The named configs shipped in configs/ (tiny, fmnist-small, ddpm-cifar10), compiled in.
std::vector<std::string> named_unet_configs();
// A name from named_unet_configs() or a path to a config.json.
UNet2DConfig resolve_unet_config(const std::string& name_or_path);

}  // namespace diffuse
