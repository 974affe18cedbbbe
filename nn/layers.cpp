// See layers.h. PyTorch's default init for Conv2d/Linear is kaiming_uniform(a=√5), i.e. weights
// and biases uniform in ±1/√fan_in; GroupNorm starts at γ=1, β=0; Embedding at N(0, 1).
#include "nn/layers.h"

#include <cmath>
#include <unordered_map>

#include "kernels/philox.h"
#include "nn/autograd.h"
#include "nn/dispatch.h"

namespace diffuse {

namespace {
thread_local bool t_autocast_bf16 = false;

// Whether a layer on x runs in bf16 now: autocast on, and x on CUDA (refused on the CPU).
bool bf16_layer(const Tensor& x, const char* layer) {
  if (!t_autocast_bf16) return false;
  if (x.device() != Device::cuda)
    throw Error(std::string(layer) + ": bf16 autocast needs CUDA tensors (the CPU has no bf16 kernels), got " +
                x.describe());
  return true;
}

Tensor cast_to(const Tensor& t, DType dtype) { return t.defined() ? ops::cast(t, dtype) : t; }
Tensor to_bf16(const Tensor& t) { return cast_to(t, DType::bf16); }
}  // namespace

// The bf16 copies a KeepBf16Weights keeps, by the f32 tensor's memory.
struct KeepBf16Weights::Copies {
  std::unordered_map<const void*, Tensor> by_source;
};

namespace {
thread_local KeepBf16Weights::Copies* t_kept_weights = nullptr;

// A weight or bias in bf16: the kept copy while a KeepBf16Weights is alive and autograd is off.
Tensor weight_to_bf16(const Tensor& w) {
  if (!t_kept_weights || !w.defined() || w.dtype() != DType::f32 || grad_enabled()) return to_bf16(w);
  auto [it, fresh] = t_kept_weights->by_source.try_emplace(w.raw());
  if (fresh || it->second.numel() != w.numel() || it->second.device() != w.device()) it->second = to_bf16(w);
  return it->second;
}
}  // namespace

KeepBf16Weights::KeepBf16Weights() : copies_(std::make_unique<Copies>()), previous_(t_kept_weights) {
  t_kept_weights = copies_.get();
}
KeepBf16Weights::~KeepBf16Weights() { t_kept_weights = previous_; }

AutocastBf16::AutocastBf16(bool on) : previous_(t_autocast_bf16) { t_autocast_bf16 = on; }
AutocastBf16::~AutocastBf16() { t_autocast_bf16 = previous_; }
bool autocast_bf16() { return t_autocast_bf16; }

Tensor InitRng::uniform(const Shape& shape, double bound) {
  Tensor u = Tensor::rand(shape, seed, philox::kInit, offset);
  offset += philox::blocks_for(static_cast<uint64_t>(u.numel()));
  float* p = u.data<float>();
  for (int64_t i = 0; i < u.numel(); ++i) p[i] = static_cast<float>((2.0 * p[i] - 1.0) * bound);
  return u;
}

Tensor InitRng::normal(const Shape& shape) {
  Tensor n = Tensor::randn(shape, seed, philox::kInit, offset);
  offset += philox::blocks_for(static_cast<uint64_t>(n.numel()));
  return n;
}

Conv2d::Conv2d(int in, int out, int kernel, const ops::Conv2dOptions& opt, InitRng& rng) : options(opt) {
  double bound = 1.0 / std::sqrt(static_cast<double>(in) * kernel * kernel);
  weight = rng.uniform({out, kernel, kernel, in}, bound);
  bias = rng.uniform({out}, bound);
}

Tensor Conv2d::forward(const Tensor& x, const Tensor& residual) const {
  if (!bf16_layer(x, "conv2d")) return ops::conv2d(x, weight, bias, options, cast_to(residual, x.dtype()));
  // bf16 x and residual (the usual case): no cast
  return ops::conv2d(to_bf16(x), weight_to_bf16(weight), weight_to_bf16(bias), options, to_bf16(residual));
}

void Conv2d::collect(const std::string& prefix, ParamList& out) {
  out.emplace_back(prefix + ".weight", &weight);
  out.emplace_back(prefix + ".bias", &bias);
}

Linear::Linear(int in, int out, InitRng& rng) {
  double bound = 1.0 / std::sqrt(static_cast<double>(in));
  weight = rng.uniform({out, in}, bound);
  bias = rng.uniform({out}, bound);
}

Tensor Linear::forward(const Tensor& x, const Tensor& residual) const {
  if (!bf16_layer(x, "linear")) return ops::linear(x, weight, bias, cast_to(residual, x.dtype()));
  return forward_bf16(x, residual);
}

Tensor Linear::forward_bf16(const Tensor& x, const Tensor& residual) const {
  return ops::linear(to_bf16(x), weight_to_bf16(weight), weight_to_bf16(bias), to_bf16(residual));
}

void Linear::collect(const std::string& prefix, ParamList& out) {
  out.emplace_back(prefix + ".weight", &weight);
  out.emplace_back(prefix + ".bias", &bias);
}

GroupNorm::GroupNorm(int g, int channels, double e)
    : weight(Tensor::ones({channels})), bias(Tensor::zeros({channels})), groups(g), eps(e) {}

Tensor GroupNorm::forward(const Tensor& x, bool silu, const Tensor& add_nc) const {
  ops::GroupNormOptions opt;
  opt.groups = groups;
  opt.eps = eps;
  opt.silu = silu;
  return ops::group_norm(x, weight, bias, opt, add_nc);
}

void GroupNorm::collect(const std::string& prefix, ParamList& out) {
  out.emplace_back(prefix + ".weight", &weight);
  out.emplace_back(prefix + ".bias", &bias);
}

ResnetBlock2D::ResnetBlock2D(int in, int out, int temb, int groups, double eps, double p, InitRng& rng)
    : norm1(groups, in, eps),
      norm2(groups, out, eps),
      conv1(in, out, 3, ops::Conv2dOptions::same(3), rng),
      conv2(),
      time_emb_proj(),
      has_shortcut(in != out),
      dropout(p) {
  // Registration order follows diffusers' __init__ (norm1, conv1, time_emb_proj, norm2, conv2,
  // conv_shortcut) so that initial values are drawn in a stable order.
  time_emb_proj = Linear(temb, out, rng);
  conv2 = Conv2d(out, out, 3, ops::Conv2dOptions::same(3), rng);
  if (has_shortcut) conv_shortcut = Conv2d(in, out, 1, ops::Conv2dOptions::same(1), rng);
}

Tensor ResnetBlock2D::forward(const Tensor& x, const Tensor& temb_act, ForwardContext& ctx) const {
  Tensor h = conv1.forward(norm1.forward(x, /*silu=*/true));
  Tensor t;  // [N, out], added per (n, c) inside norm2; part of the timestep embedding: f32
  {
    const AutocastBf16 f32_here(false);
    t = time_emb_proj.forward(temb_act);
  }
  h = norm2.forward(h, /*silu=*/true, t);
  if (ctx.training && dropout > 0) {
    h = ctx.dropout_base.defined()
            ? ops::dropout(h, dropout, ctx.dropout_seed, ctx.dropout_offset - ctx.dropout_start, ctx.dropout_base)
            : ops::dropout(h, dropout, ctx.dropout_seed, ctx.dropout_offset);
    ctx.dropout_offset += (static_cast<uint64_t>(h.numel()) + 3) / 4;
  }
  // The skip is added by conv2 as it stores its output (one pass, no separate add). Under autocast
  // h is bf16 and so is x inside the UNet; a block given f32 x adds it in bf16 (conv2 casts it).
  Tensor shortcut = has_shortcut ? conv_shortcut.forward(x) : x;
  return conv2.forward(h, shortcut);
}

void ResnetBlock2D::collect(const std::string& prefix, ParamList& out) {
  norm1.collect(prefix + ".norm1", out);
  conv1.collect(prefix + ".conv1", out);
  time_emb_proj.collect(prefix + ".time_emb_proj", out);
  norm2.collect(prefix + ".norm2", out);
  conv2.collect(prefix + ".conv2", out);
  if (has_shortcut) conv_shortcut.collect(prefix + ".conv_shortcut", out);
}

AttentionBlock::AttentionBlock(int channels, int head_dim, int groups, double eps, InitRng& rng)
    : group_norm(groups, channels, eps),
      to_q(channels, channels, rng),
      to_k(channels, channels, rng),
      to_v(channels, channels, rng),
      to_out(channels, channels, rng),
      heads(channels / head_dim) {}

namespace {
// The rows of three [C, ...] tensors stacked into one [3C, ...] (their memory back to back): the
// fused projection's weight [3C, C] and bias [3C]. Differentiable: the grad splits back.
Tensor stack_rows(const Tensor& a, const Tensor& b, const Tensor& c) {
  auto flat = [](const Tensor& t) { return ops::reshape(t, {t.numel()}); };
  Shape shape = a.shape();
  shape[0] *= 3;
  return ops::reshape(ops::concat_channels(ops::concat_channels(flat(a), flat(b)), flat(c)), shape);
}
}  // namespace

Tensor AttentionBlock::forward(const Tensor& x) const {
  const int64_t n = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3);
  Tensor tokens = ops::reshape(group_norm.forward(x, /*silu=*/false), {n, h * w, c});
  // q, k and v come from one linear with the three weights (and biases) stacked: one GEMM of n = 3C
  // writes them side by side in each token's row, attention_packed reads them there, and the
  // backward's dx is one GEMM over k = 3C (no sum of three dx), the weight grads one GEMM of
  // m = 3C split back into to_q/to_k/to_v (the parameters stay three tensors: checkpoints and
  // diffusers names unchanged). Stacking costs two small copies of 3·C² floats per direction.
  // Under autocast the projection and the attention core stay in bf16 end to end (the CUDA
  // attention keeps the softmax statistics in f32, at any head dim).
  Tensor qkv;
  if (bf16_layer(x, "attention")) {
    qkv = ops::linear(to_bf16(tokens),  // bf16 already inside the UNet: no cast
                      stack_rows(weight_to_bf16(to_q.weight), weight_to_bf16(to_k.weight), weight_to_bf16(to_v.weight)),
                      stack_rows(weight_to_bf16(to_q.bias), weight_to_bf16(to_k.bias), weight_to_bf16(to_v.bias)));
  } else {
    qkv = ops::linear(tokens, stack_rows(to_q.weight, to_k.weight, to_v.weight),
                      stack_rows(to_q.bias, to_k.bias, to_v.bias));
  }
  const Tensor a = ops::attention_packed(qkv, heads);
  // The skip is added by to_out as it stores its output (cast to to_out's dtype there).
  return ops::reshape(to_out.forward(a, ops::reshape(x, {n, h * w, c})), {n, h, w, c});
}

void AttentionBlock::collect(const std::string& prefix, ParamList& out) {
  group_norm.collect(prefix + ".group_norm", out);
  to_q.collect(prefix + ".to_q", out);
  to_k.collect(prefix + ".to_k", out);
  to_v.collect(prefix + ".to_v", out);
  to_out.collect(prefix + ".to_out.0", out);
}

TimestepEmbedding::TimestepEmbedding(int in, int dim, InitRng& rng) : linear_1(in, dim, rng), linear_2(dim, dim, rng) {}

Tensor TimestepEmbedding::forward(const Tensor& t_emb) const {
  const AutocastBf16 f32_here(false);  // the timestep embedding stays f32 (docs/design.md §4)
  return linear_2.forward(ops::silu(linear_1.forward(t_emb)));
}

void TimestepEmbedding::collect(const std::string& prefix, ParamList& out) {
  linear_1.collect(prefix + ".linear_1", out);
  linear_2.collect(prefix + ".linear_2", out);
}

}  // namespace diffuse
