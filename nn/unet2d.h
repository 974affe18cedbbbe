// UNet2D: diffusers' UNet2DModel rebuilt from its config, with the same arithmetic and parameter
// names (docs/design.md §7), so weights move both ways. Input and output are NHWC; the model directory
// code converts from/to PyTorch's NCHW/OIHW at the file boundary.
#pragma once
#include <cstdint>
#include <optional>
#include <vector>

#include "nn/layers.h"
#include "nn/unet_config.h"

namespace diffuse {

struct DownBlock2D {
  std::vector<ResnetBlock2D> resnets;
  std::vector<AttentionBlock> attentions;  // empty for DownBlock2D
  bool has_downsampler = false;
  Conv2d downsampler;  // downsamplers.0.conv, 3x3 stride 2
};

struct UpBlock2D {
  std::vector<ResnetBlock2D> resnets;
  std::vector<AttentionBlock> attentions;  // empty for UpBlock2D
  bool has_upsampler = false;
  Conv2d upsampler;  // upsamplers.0.conv, 3x3 after nearest 2x
};

class UNet2D {
 public:
  // Builds the model with PyTorch-default initial weights drawn from Philox stream kInit(seed).
  explicit UNet2D(const UNet2DConfig& config, uint64_t seed = 0);

  // x [N, H, W, in_channels]; timesteps [N] or one element (f32/f64/i32/i64); class_labels [N]
  // integer, required iff the config has num_class_embeds. Returns [N, H, W, out_channels].
  Tensor forward(const Tensor& x, const Tensor& timesteps, const Tensor& class_labels = Tensor());

  const UNet2DConfig& config() const { return config_; }
  ParamList named_parameters();  // diffusers names, in diffusers' registration order
  std::vector<Tensor> parameters();
  int64_t num_parameters();
  Device device();
  void to(Device device);  // moves every parameter (grads are dropped)
  void set_requires_grad(bool on);

  // Training mode turns dropout on; its mask stream is (seed, position), saved in checkpoints.
  void set_training(bool on) { ctx_.training = on; }
  bool training() const { return ctx_.training; }
  void set_dropout_state(uint64_t seed, uint64_t offset) {
    ctx_.dropout_seed = seed;
    ctx_.dropout_offset = offset;
  }
  uint64_t dropout_offset() const { return ctx_.dropout_offset; }
  // base (i64 [1] on the model's device, or undefined to stop): each forward's dropout masks then
  // start at the position base holds when the kernels run, which the caller writes before each
  // forward (or graph replay) — the host position, dropout_offset(), as the eager path would use it.
  void set_dropout_base(const Tensor& base) { ctx_.dropout_base = base; }

 private:
  UNet2DConfig config_;
  ForwardContext ctx_;
  Tensor one_;  // center_input_sample's constant 1 on the last forward's device and dtype
  Conv2d conv_in_;
  TimestepEmbedding time_embedding_;
  bool has_class_embedding_ = false;
  Tensor class_embedding_;  // [num_class_embeds, time_embed_dim]
  std::vector<DownBlock2D> down_;
  ResnetBlock2D mid_res0_, mid_res1_;
  AttentionBlock mid_attn_;
  std::vector<UpBlock2D> up_;
  GroupNorm conv_norm_out_;
  Conv2d conv_out_;
};

}  // namespace diffuse
