// See naive_reference.h. Moved here from the per-op tests (tests/cpu/test_ops_*.cpp) when the op
// table replaced their forward and gradient checks.
#include "ops/naive_reference.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/philox.h"

namespace diffuse::test::naive {

namespace {

Tensor f64(const std::vector<double>& values, const Shape& shape) { return Tensor::from(values, shape, DType::f64); }

// b's flat index for a's flat index i, with b right-aligned against a and broadcast where 1.
int64_t broadcast_index(const Shape& a, const Shape& b, int64_t i) {
  int64_t bi = 0, bstride = 1;
  const size_t off = a.size() - b.size();
  for (int k = static_cast<int>(a.size()) - 1; k >= 0; --k) {
    const int64_t idx = i % a[k];
    i /= a[k];
    if (k >= static_cast<int>(off)) {
      const int64_t bd = b[k - off];
      if (bd != 1) bi += idx * bstride;
      bstride *= bd;
    }
  }
  return bi;
}

}  // namespace

Tensor binary(Binary op, const Tensor& a, const Tensor& b) {
  const auto va = a.to_vector(), vb = b.to_vector();
  std::vector<double> out(va.size());
  for (size_t i = 0; i < va.size(); ++i) {
    const double x = va[i], y = vb[broadcast_index(a.shape(), b.shape(), static_cast<int64_t>(i))];
    out[i] = op == Binary::add ? x + y : op == Binary::sub ? x - y : x * y;
  }
  return f64(out, a.shape());
}

Tensor scale(const Tensor& x, double s) {
  std::vector<double> v = x.to_vector();
  for (double& e : v) e *= s;
  return f64(v, x.shape());
}

Tensor silu(const Tensor& x) {
  std::vector<double> v = x.to_vector();
  for (double& e : v) e = e / (1.0 + std::exp(-e));
  return f64(v, x.shape());
}

Tensor round_to_bf16(const Tensor& x) {
  std::vector<double> v = x.to_vector();
  for (double& e : v) {
    if (e == 0 || !std::isfinite(e)) continue;
    int exponent = 0;
    std::frexp(e, &exponent);  // |e| = m·2^exponent, m in [0.5, 1): 8 bits keep m·2^8 in [128, 256)
    e = std::ldexp(std::nearbyint(std::ldexp(e, 8 - exponent)), exponent - 8);  // ties to even
  }
  return f64(v, x.shape());
}

Tensor sum(const Tensor& x) {
  double total = 0;
  for (double e : x.to_vector()) total += e;
  return f64({total}, {});
}

Tensor mean(const Tensor& x) { return f64({sum(x).item() / static_cast<double>(x.numel())}, {}); }

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const ops::Conv2dOptions& o) {
  const int64_t N = x.dim(0), H = x.dim(1), W = x.dim(2), Ci = x.dim(3);
  const int64_t Co = w.dim(0), KH = w.dim(1), KW = w.dim(2);
  const int64_t Ho = (H + o.pad_top + o.pad_bottom - KH) / o.stride + 1;
  const int64_t Wo = (W + o.pad_left + o.pad_right - KW) / o.stride + 1;
  const auto xv = x.to_vector(), wv = w.to_vector();
  const std::vector<double> bv = b.defined() ? b.to_vector() : std::vector<double>(size_t(Co), 0.0);
  std::vector<double> y(size_t(N * Ho * Wo * Co));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow)
        for (int64_t co = 0; co < Co; ++co) {
          double acc = bv[co];
          for (int64_t ki = 0; ki < KH; ++ki)
            for (int64_t kj = 0; kj < KW; ++kj) {
              const int64_t ih = oh * o.stride - o.pad_top + ki, iw = ow * o.stride - o.pad_left + kj;
              if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
              for (int64_t ci = 0; ci < Ci; ++ci)
                acc += xv[((n * H + ih) * W + iw) * Ci + ci] * wv[((co * KH + ki) * KW + kj) * Ci + ci];
            }
          y[((n * Ho + oh) * Wo + ow) * Co + co] = acc;
        }
  return f64(y, {N, Ho, Wo, Co});
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  const int64_t in = w.dim(1), out = w.dim(0), rows = x.numel() / in;
  const auto xv = x.to_vector(), wv = w.to_vector();
  const std::vector<double> bv = b.defined() ? b.to_vector() : std::vector<double>(size_t(out), 0.0);
  std::vector<double> y(size_t(rows * out));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double acc = bv[o];
      for (int64_t i = 0; i < in; ++i) acc += xv[r * in + i] * wv[o * in + i];
      y[r * out + o] = acc;
    }
  Shape s = x.shape();
  s.back() = out;
  return f64(y, s);
}

Tensor group_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, const ops::GroupNormOptions& o,
                  const Tensor& add_nc) {
  const int64_t N = x.dim(0), C = x.dim(-1), S = x.numel() / (N * C), G = o.groups, cg = C / G;
  const auto xv = x.to_vector(), gv = gamma.to_vector(), bv = beta.to_vector();
  const std::vector<double> av = add_nc.defined() ? add_nc.to_vector() : std::vector<double>(size_t(N * C), 0.0);
  auto h = [&](int64_t n, int64_t s, int64_t c) { return xv[(n * S + s) * C + c] + av[n * C + c]; };
  std::vector<double> y(xv.size());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < G; ++g) {
      double total = 0, sq = 0;
      for (int64_t s = 0; s < S; ++s)
        for (int64_t c = g * cg; c < (g + 1) * cg; ++c) total += h(n, s, c);
      const double mu = total / double(S * cg);
      for (int64_t s = 0; s < S; ++s)
        for (int64_t c = g * cg; c < (g + 1) * cg; ++c) sq += (h(n, s, c) - mu) * (h(n, s, c) - mu);
      const double var = sq / double(S * cg);
      for (int64_t s = 0; s < S; ++s)
        for (int64_t c = g * cg; c < (g + 1) * cg; ++c) {
          const double v = (h(n, s, c) - mu) / std::sqrt(var + o.eps) * gv[c] + bv[c];
          y[(n * S + s) * C + c] = o.silu ? v / (1 + std::exp(-v)) : v;
        }
    }
  return f64(y, x.shape());
}

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads) {
  const int64_t N = q.dim(0), L = q.dim(1), W = q.dim(2), d = W / heads;
  const auto qv = q.to_vector(), kv = k.to_vector(), vv = v.to_vector();
  std::vector<double> out(qv.size());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < L; ++i) {
        std::vector<double> s(static_cast<size_t>(L));
        double mx = -INFINITY, total = 0;
        for (int64_t j = 0; j < L; ++j) {
          double dot = 0;
          for (int64_t c = 0; c < d; ++c) dot += qv[(n * L + i) * W + h * d + c] * kv[(n * L + j) * W + h * d + c];
          s[j] = dot / std::sqrt(double(d));
          mx = std::max(mx, s[j]);
        }
        for (int64_t j = 0; j < L; ++j) total += (s[j] = std::exp(s[j] - mx));
        for (int64_t c = 0; c < d; ++c) {
          double acc = 0;
          for (int64_t j = 0; j < L; ++j) acc += s[j] / total * vv[(n * L + j) * W + h * d + c];
          out[(n * L + i) * W + h * d + c] = acc;
        }
      }
  return f64(out, q.shape());
}

Tensor attention_packed(const Tensor& qkv, int heads) {
  const int64_t rows = qkv.dim(0) * qkv.dim(1), W = qkv.dim(2) / 3;
  const auto all = qkv.to_vector();
  std::vector<double> part[3];
  for (int which = 0; which < 3; ++which)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < W; ++c) part[which].push_back(all[size_t(r * 3 * W + which * W + c)]);
  const Shape s{qkv.dim(0), qkv.dim(1), W};
  return attention(f64(part[0], s), f64(part[1], s), f64(part[2], s), heads);
}

Tensor concat_channels(const Tensor& a, const Tensor& b) {
  const int64_t ca = a.dim(-1), cb = b.dim(-1), rows = a.numel() / ca;
  const auto va = a.to_vector(), vb = b.to_vector();
  std::vector<double> y;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < ca; ++c) y.push_back(va[r * ca + c]);
    for (int64_t c = 0; c < cb; ++c) y.push_back(vb[r * cb + c]);
  }
  Shape s = a.shape();
  s.back() = ca + cb;
  return f64(y, s);
}

Tensor upsample_nearest2x(const Tensor& x) {
  const int64_t N = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
  const auto vx = x.to_vector();
  std::vector<double> y;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < 2 * H; ++i)
      for (int64_t j = 0; j < 2 * W; ++j)
        for (int64_t c = 0; c < C; ++c) y.push_back(vx[((n * H + i / 2) * W + j / 2) * C + c]);
  return f64(y, {N, 2 * H, 2 * W, C});
}

Tensor embedding(const Tensor& table, const Tensor& index) {
  const int64_t D = table.dim(1);
  const auto vt = table.to_vector();
  std::vector<double> y;
  for (double row : index.to_vector())
    for (int64_t j = 0; j < D; ++j) y.push_back(vt[static_cast<int64_t>(row) * D + j]);
  return f64(y, {index.numel(), D});
}

Tensor timestep_embedding(const Tensor& t, int dim, bool flip_sin_to_cos, double freq_shift) {
  const int half = dim / 2;
  std::vector<double> y;
  for (double tn : t.to_vector()) {
    std::vector<double> s, c;
    for (int i = 0; i < half; ++i) {
      const double arg = tn * std::exp(-std::log(10000.0) * i / (half - freq_shift));
      s.push_back(std::sin(arg));
      c.push_back(std::cos(arg));
    }
    const auto& first = flip_sin_to_cos ? c : s;
    const auto& second = flip_sin_to_cos ? s : c;
    y.insert(y.end(), first.begin(), first.end());
    y.insert(y.end(), second.begin(), second.end());
    if (dim % 2) y.push_back(0.0);
  }
  return f64(y, {t.numel(), dim});
}

Tensor dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset) {
  std::vector<double> v = x.to_vector();
  for (size_t i = 0; i < v.size(); ++i)
    v[i] = philox::uniform_at(seed, philox::kDropout, offset, i) < static_cast<float>(p) ? 0.0 : v[i] / (1.0 - p);
  return f64(v, x.shape());
}

Tensor mse_loss(const Tensor& pred, const Tensor& target, const Tensor& weight) {
  const auto p = pred.to_vector(), t = target.to_vector();
  const std::vector<double> w = weight.defined() ? weight.to_vector() : std::vector<double>();
  const size_t per = p.size() / static_cast<size_t>(pred.dim(0));
  double total = 0;
  for (size_t i = 0; i < p.size(); ++i) total += (w.empty() ? 1.0 : w[i / per]) * (p[i] - t[i]) * (p[i] - t[i]);
  return f64({total / static_cast<double>(p.size())}, {});
}

std::pair<Tensor, Tensor> q_sample(const kernels::QSampleDesc& d, const Tensor& x0, const Tensor& sqrt_ab,
                                   const Tensor& sqrt_1mab) {
  const auto x = x0.to_vector(), a = sqrt_ab.to_vector(), s = sqrt_1mab.to_vector();
  std::vector<double> x_t(x.size()), target(x.size());
  for (size_t k = 0; k < x.size(); ++k) {
    const size_t n = k / static_cast<size_t>(d.per_sample);
    const double eps = philox::normal_at(d.seed, philox::kNoise, d.offset, k);
    x_t[k] = a[n] * x[k] + s[n] * eps;
    target[k] = d.target == kernels::NoiseTarget::epsilon        ? eps
                : d.target == kernels::NoiseTarget::v_prediction ? a[n] * eps - s[n] * x[k]
                                                                 : x[k];
  }
  return {f64(x_t, x0.shape()), f64(target, x0.shape())};
}

std::pair<Tensor, Tensor> denoise_step(const kernels::DenoiseStepDesc& d, const Tensor& model_output,
                                       const Tensor& x, const Tensor& x0_prev) {
  using kernels::DenoiseUpdate;
  const auto xv = x.to_vector(), mv = model_output.to_vector(), pv = x0_prev.to_vector();
  std::vector<double> x_prev(xv.size()), x0(xv.size());
  for (size_t i = 0; i < xv.size(); ++i) {
    const double m = d.guided ? mv[i] + d.guidance * (mv[xv.size() + i] - mv[i]) : mv[i];
    double pred = d.x0_from_x * xv[i] + d.x0_from_m * m;
    if (d.clip) pred = std::clamp(pred, -d.clip_range, d.clip_range);
    double out = d.c_x * xv[i] + d.c_x0 * pred;
    if (d.update == static_cast<int32_t>(DenoiseUpdate::ddim)) out += d.c_eps * (d.eps_from_x * xv[i] + d.eps_from_m * m);
    if (d.update == static_cast<int32_t>(DenoiseUpdate::dpm_second)) out += d.c_d1 * (pred - pv[i]);
    if (d.noise_std != 0) out += d.noise_std * philox::normal_at(d.seed, d.stream, d.noise_offset, i);
    x_prev[i] = out;
    x0[i] = pred;
  }
  return {f64(x_prev, x.shape()), f64(x0, x.shape())};
}

}  // namespace diffuse::test::naive
