// See layers.h. PyTorch's default init for Conv2d/Linear is kaiming_uniform(a=√5), i.e. weights
// and biases uniform in ±1/√fan_in; GroupNorm starts at γ=1, β=0; Embedding at N(0, 1).
#include "nn/layers.h"

#include <cmath>

#include "kernels/philox.h"

namespace diffuse {

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

void Conv2d::collect(const std::string& prefix, ParamList& out) {
  out.emplace_back(prefix + ".weight", &weight);
  out.emplace_back(prefix + ".bias", &bias);
}

Linear::Linear(int in, int out, InitRng& rng) {
  double bound = 1.0 / std::sqrt(static_cast<double>(in));
  weight = rng.uniform({out, in}, bound);
  bias = rng.uniform({out}, bound);
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
  Tensor t = time_emb_proj.forward(temb_act);  // [N, out], added per (n, c) inside norm2
  h = norm2.forward(h, /*silu=*/true, t);
  if (ctx.training && dropout > 0) {
    h = ops::dropout(h, dropout, ctx.dropout_seed, ctx.dropout_offset);
    ctx.dropout_offset += (static_cast<uint64_t>(h.numel()) + 3) / 4;
  }
  h = conv2.forward(h);
  Tensor shortcut = has_shortcut ? conv_shortcut.forward(x) : x;
  return ops::add(shortcut, h);
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

Tensor AttentionBlock::forward(const Tensor& x) const {
  const int64_t n = x.dim(0), h = x.dim(1), w = x.dim(2), c = x.dim(3);
  Tensor tokens = ops::reshape(group_norm.forward(x, /*silu=*/false), {n, h * w, c});
  Tensor a = ops::attention(to_q.forward(tokens), to_k.forward(tokens), to_v.forward(tokens), heads);
  Tensor out = ops::reshape(to_out.forward(a), {n, h, w, c});
  return ops::add(out, x);
}

void AttentionBlock::collect(const std::string& prefix, ParamList& out) {
  group_norm.collect(prefix + ".group_norm", out);
  to_q.collect(prefix + ".to_q", out);
  to_k.collect(prefix + ".to_k", out);
  to_v.collect(prefix + ".to_v", out);
  to_out.collect(prefix + ".to_out.0", out);
}

TimestepEmbedding::TimestepEmbedding(int in, int dim, InitRng& rng) : linear_1(in, dim, rng), linear_2(dim, dim, rng) {}

void TimestepEmbedding::collect(const std::string& prefix, ParamList& out) {
  linear_1.collect(prefix + ".linear_1", out);
  linear_2.collect(prefix + ".linear_2", out);
}

}  // namespace diffuse
