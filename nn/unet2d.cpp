// See unet2d.h. The construction mirrors diffusers' UNet2DModel.__init__ block by block (channel
// bookkeeping included), and forward() mirrors its forward(), skip stack and all.
#include "nn/unet2d.h"

#include "nn/autograd.h"
#include "nn/op_checks.h"

namespace diffuse {

UNet2D::UNet2D(const UNet2DConfig& config, uint64_t seed) : config_(config) {
  validate_unet_config(config_, "UNet2D config");
  InitRng rng{seed, 0};
  const auto& ch = config_.block_out_channels;
  const int levels = static_cast<int>(ch.size());
  const int temb = config_.time_embed_dim();
  const int groups = config_.norm_num_groups;
  const double eps = config_.norm_eps;
  const double p = config_.dropout;

  conv_in_ = Conv2d(config_.in_channels, ch[0], 3, ops::Conv2dOptions::same(3), rng);
  time_embedding_ = TimestepEmbedding(ch[0], temb, rng);
  if (config_.num_class_embeds) {
    has_class_embedding_ = true;
    class_embedding_ = rng.normal({*config_.num_class_embeds, temb});
  }

  int out = ch[0];
  for (int i = 0; i < levels; ++i) {
    int in = out;
    out = ch[i];
    DownBlock2D block;
    bool attn = config_.down_block_types[i] == "AttnDownBlock2D";
    for (int j = 0; j < config_.layers_per_block; ++j) {
      block.resnets.emplace_back(j == 0 ? in : out, out, temb, groups, eps, p, rng);
      if (attn) block.attentions.emplace_back(out, config_.head_dim_for(out), groups, eps, rng);
    }
    if (i != levels - 1) {
      block.has_downsampler = true;
      ops::Conv2dOptions down{2, 1, 1, 1, 1};
      if (config_.downsample_padding == 0) down = {2, 0, 1, 0, 1};  // diffusers pads right/bottom
      block.downsampler = Conv2d(out, out, 3, down, rng);
    }
    down_.push_back(std::move(block));
  }

  const int mid = ch.back();
  mid_res0_ = ResnetBlock2D(mid, mid, temb, groups, eps, p, rng);
  mid_attn_ = AttentionBlock(mid, config_.head_dim_for(mid), groups, eps, rng);
  mid_res1_ = ResnetBlock2D(mid, mid, temb, groups, eps, p, rng);

  out = ch.back();
  for (int i = 0; i < levels; ++i) {
    int prev = out;
    out = ch[levels - 1 - i];
    int in = ch[std::max(levels - 2 - i, 0)];
    UpBlock2D block;
    bool attn = config_.up_block_types[i] == "AttnUpBlock2D";
    for (int j = 0; j <= config_.layers_per_block; ++j) {
      int skip = j == config_.layers_per_block ? in : out;
      int res_in = j == 0 ? prev : out;
      block.resnets.emplace_back(res_in + skip, out, temb, groups, eps, p, rng);
      if (attn) block.attentions.emplace_back(out, config_.head_dim_for(out), groups, eps, rng);
    }
    if (i != levels - 1) {
      block.has_upsampler = true;
      block.upsampler = Conv2d(out, out, 3, ops::Conv2dOptions::same(3), rng);
    }
    up_.push_back(std::move(block));
  }

  conv_norm_out_ = GroupNorm(groups, ch[0], eps);
  conv_out_ = Conv2d(ch[0], config_.out_channels, 3, ops::Conv2dOptions::same(3), rng);
}

Tensor UNet2D::forward(const Tensor& x_in, const Tensor& timesteps, const Tensor& class_labels) {
  const char* op = "UNet2D";
  ops::detail::check_defined(op, x_in, "sample");
  ops::detail::check_rank(op, x_in, 4, "sample");
  const int64_t n = x_in.dim(0);
  if (x_in.dim(3) != config_.in_channels)
    ops::detail::fail(op, "sample " + x_in.describe() + " has " + std::to_string(x_in.dim(3)) +
                              " channels, the config expects " + std::to_string(config_.in_channels));
  ctx_.dropout_start = ctx_.dropout_offset;  // what a dropout_base holds for this forward
  const int64_t down_factor = int64_t(1) << (config_.block_out_channels.size() - 1);
  if (x_in.dim(1) % down_factor != 0 || x_in.dim(2) % down_factor != 0)
    ops::detail::fail(op, "sample " + x_in.describe() + ": height and width must be multiples of " +
                              std::to_string(down_factor));
  ops::detail::check_defined(op, timesteps, "timestep");
  if (timesteps.numel() != 1 && timesteps.numel() != n)
    ops::detail::fail(op, "timestep " + timesteps.describe() + " must have one value or one per sample (" +
                              std::to_string(n) + ")");
  if (has_class_embedding_ && !class_labels.defined())
    ops::detail::fail(op, "class_labels are required: the model has num_class_embeds");
  if (!has_class_embedding_ && class_labels.defined())
    ops::detail::fail(op, "class_labels given, but the model has no class embedding");

  Tensor x = x_in;
  if (config_.center_input_sample) {
    // The constant is uploaded once, outside any CUDA graph capture (a capture may not upload).
    if (!one_.defined() || one_.device() != x.device() || one_.dtype() != x.dtype())
      one_ = Tensor::ones({1}, x.dtype(), x.device());
    x = ops::sub(ops::scale(x, 2.0), one_);
  }

  // Time embedding: sinusoidal features on x's device (a timestep tensor already there is read in
  // place, so a CUDA graph replays with the timestep written into it), one value broadcast over
  // the batch by the kernel; then the MLP. f64 timesteps (the CPU's f64 checks) are embedded in
  // f64 where they are, as the CUDA kernels are f32 only.
  const Tensor t = timesteps.dtype() == DType::f64 ? timesteps : timesteps.to(x.device());
  Tensor t_feat = ops::timestep_embedding(t.view({timesteps.numel()}), config_.block_out_channels[0],
                                          config_.flip_sin_to_cos, config_.freq_shift, n);
  if (t_feat.dtype() != x.dtype()) t_feat = t_feat.to(Device::cpu).to(x.dtype());
  t_feat = t_feat.to(x.device());
  Tensor emb = time_embedding_.forward(t_feat);
  if (has_class_embedding_) emb = ops::add(emb, ops::embedding(class_embedding_, class_labels.to(x.device())));
  Tensor temb_act = ops::silu(emb);

  Tensor h = conv_in_.forward(x);
  TensorList skips{h};  // pooled: a forward allocates nothing once a step has run
  for (auto& block : down_) {
    for (size_t j = 0; j < block.resnets.size(); ++j) {
      h = block.resnets[j].forward(h, temb_act, ctx_);
      if (!block.attentions.empty()) h = block.attentions[j].forward(h);
      skips.push_back(h);
    }
    if (block.has_downsampler) {
      h = block.downsampler.forward(h);
      skips.push_back(h);
    }
  }

  h = mid_res0_.forward(h, temb_act, ctx_);
  h = mid_attn_.forward(h);
  h = mid_res1_.forward(h, temb_act, ctx_);

  for (auto& block : up_) {
    for (size_t j = 0; j < block.resnets.size(); ++j) {
      Tensor skip = skips.back();
      skips.pop_back();
      h = block.resnets[j].forward(ops::concat_channels(h, skip), temb_act, ctx_);
      if (!block.attentions.empty()) h = block.attentions[j].forward(h);
    }
    if (block.has_upsampler) h = block.upsampler.forward(ops::upsample_nearest2x(h));
  }

  h = conv_norm_out_.forward(h, /*silu=*/true);
  // Under bf16 autocast the activations are bf16 from conv_in on; the output comes back in the
  // input's dtype (f32) for the loss and the sampler.
  return ops::cast(conv_out_.forward(h), x_in.dtype());
}

ParamList UNet2D::named_parameters() {
  ParamList out;
  conv_in_.collect("conv_in", out);
  time_embedding_.collect("time_embedding", out);
  if (has_class_embedding_) out.emplace_back("class_embedding.weight", &class_embedding_);
  for (size_t i = 0; i < down_.size(); ++i) {
    std::string p = "down_blocks." + std::to_string(i);
    auto& b = down_[i];
    for (size_t j = 0; j < b.resnets.size(); ++j) b.resnets[j].collect(p + ".resnets." + std::to_string(j), out);
    for (size_t j = 0; j < b.attentions.size(); ++j) b.attentions[j].collect(p + ".attentions." + std::to_string(j), out);
    if (b.has_downsampler) b.downsampler.collect(p + ".downsamplers.0.conv", out);
  }
  mid_res0_.collect("mid_block.resnets.0", out);
  mid_attn_.collect("mid_block.attentions.0", out);
  mid_res1_.collect("mid_block.resnets.1", out);
  for (size_t i = 0; i < up_.size(); ++i) {
    std::string p = "up_blocks." + std::to_string(i);
    auto& b = up_[i];
    for (size_t j = 0; j < b.resnets.size(); ++j) b.resnets[j].collect(p + ".resnets." + std::to_string(j), out);
    for (size_t j = 0; j < b.attentions.size(); ++j) b.attentions[j].collect(p + ".attentions." + std::to_string(j), out);
    if (b.has_upsampler) b.upsampler.collect(p + ".upsamplers.0.conv", out);
  }
  conv_norm_out_.collect("conv_norm_out", out);
  conv_out_.collect("conv_out", out);
  return out;
}

std::vector<Tensor> UNet2D::parameters() {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters()) out.push_back(*t);
  return out;
}

int64_t UNet2D::num_parameters() {
  int64_t n = 0;
  for (auto& [name, t] : named_parameters()) n += t->numel();
  return n;
}

Device UNet2D::device() { return conv_in_.weight.device(); }

void UNet2D::to(Device device) {
  for (auto& [name, t] : named_parameters()) {
    bool rg = t->requires_grad();
    *t = t->to(device).detach();
    if (rg) t->set_requires_grad(true);
  }
}

void UNet2D::set_requires_grad(bool on) {
  for (auto& [name, t] : named_parameters()) t->set_requires_grad(on);
}

}  // namespace diffuse
