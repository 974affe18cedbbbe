// See kernels/cpu/simd/group_norm.h; compiled once per path (kernels/cpu/simd/isa_begin.h).
#include <cmath>
#include <cstdint>

#include "kernels/cpu/simd/isa_begin.h"
#include "kernels/cpu/simd/vec.h"
#include "kernels/cpu/simd/elementwise_lanes.h"
#include "kernels/cpu/simd/group_norm.h"

namespace diffuse::kernels::cpu::simd::DIFFUSE_ISA_NS {

namespace {

// Rows summed in f32 lanes before the sums move to f64: 16 roundings at most per partial sum.
constexpr int64_t kFlushRows = 16;

// row(s) for every position s, and flush() after each run of kFlushRows rows and after the last.
template <typename Row, typename Flush>
void walk_rows(int64_t spatial, Row&& row, Flush&& flush) {
  for (int64_t s0 = 0; s0 < spatial; s0 += kFlushRows) {
    const int64_t s1 = s0 + kFlushRows < spatial ? s0 + kFlushRows : spatial;
    for (int64_t s = s0; s < s1; ++s) row(s);
    flush();
  }
}

// The pre-norm input h = x + add at position s, channels [j, j + n) of the block.
template <bool kAdd>
inline Vec pre_norm(const GroupNormBlock& b, int64_t s, int64_t j, int n) {
  Vec h = load_part(b.x + s * b.row_stride + j, n);
  if constexpr (kAdd) h = h + load_part(b.add + j, n);
  return h;
}

// h − shift formed as (x − shift) + add: x − shift is exact when x lies near the mean, so nothing
// is rounded at the mean's magnitude (x + add first would be, for a mean of 1000 by 3·10⁻⁵).
template <bool kAdd>
inline Vec deviation(const GroupNormBlock& b, int64_t s, int64_t j, int n, const float* shift) {
  Vec d = load_part(b.x + s * b.row_stride + j, n) - load_part(shift + j, n);
  if constexpr (kAdd) d = d + load_part(b.add + j, n);
  return d;
}

// Σ over each group's channels of per-channel sums.
inline double group_total(const double* per_channel, int64_t g, int64_t group_size) {
  double t = 0;
  for (int64_t c = g * group_size; c < (g + 1) * group_size; ++c) t += per_channel[c];
  return t;
}

template <bool kAdd>
void forward(const GroupNormForwardBlock& f) {
  const GroupNormBlock& b = f.b;
  const int64_t W = b.width, S = b.spatial, cg = b.group_size, G = W / cg;
  const double count = double(S * cg);
  float* acc1 = b.scratch_f;
  float* acc2 = acc1 + W;
  float* shift = acc2 + W;  // m0 of the channel's group
  float* scale = shift + W;
  float* bias = scale + W;
  double* sum1 = b.scratch_d;
  double* sum2 = sum1 + W;

  // Pass 1: the first mean m0.
  fill_floats(acc1, W, 0.0f);
  fill_doubles(sum1, W, 0.0);
  walk_rows(
      S,
      [&](int64_t s) {
        over_lanes(W, [&](int64_t j, int n) { store_part(acc1 + j, load_part(acc1 + j, n) + pre_norm<kAdd>(b, s, j, n), n); });
      },
      [&] { flush_to_doubles(acc1, sum1, W); });
  for (int64_t g = 0; g < G; ++g) {
    const float m0 = count > 0 ? float(group_total(sum1, g, cg) / count) : 0.0f;
    for (int64_t c = g * cg; c < (g + 1) * cg; ++c) shift[c] = m0;
  }

  // Pass 2: Σd and Σd² with d = h − m0.
  fill_doubles(sum1, W, 0.0);
  fill_doubles(sum2, W, 0.0);
  fill_floats(acc2, W, 0.0f);
  walk_rows(
      S,
      [&](int64_t s) {
        over_lanes(W, [&](int64_t j, int n) {
          const Vec d = deviation<kAdd>(b, s, j, n, shift);
          store_part(acc1 + j, load_part(acc1 + j, n) + d, n);
          store_part(acc2 + j, fma(d, d, load_part(acc2 + j, n)), n);
        });
      },
      [&] {
        flush_to_doubles(acc1, sum1, W);
        flush_to_doubles(acc2, sum2, W);
      });
  for (int64_t g = 0; g < G; ++g) {
    const double delta = count > 0 ? group_total(sum1, g, cg) / count : 0.0;
    const double mean_sq = count > 0 ? group_total(sum2, g, cg) / count : 0.0;
    const double var = mean_sq > delta * delta ? mean_sq - delta * delta : 0.0;
    const double r = 1.0 / std::sqrt(var + b.eps);
    f.mean[g] = double(shift[g * cg]) + delta;
    f.rstd[g] = r;
    for (int64_t c = g * cg; c < (g + 1) * cg; ++c) {
      const double sc = double(b.gamma[c]) * r;
      scale[c] = float(sc);
      bias[c] = float(double(b.beta[c]) - delta * sc);
    }
  }

  // Pass 3: y = (h − m0)·scale + bias, then SiLU when fused.
  for (int64_t s = 0; s < S; ++s) {
    float* yr = f.y + s * b.row_stride;
    over_lanes(W, [&](int64_t j, int n) {
      const Vec d = deviation<kAdd>(b, s, j, n, shift);
      Vec v = fma(d, load_part(scale + j, n), load_part(bias + j, n));
      if (b.silu) v = silu(v);
      store_part(yr + j, v, n);
    });
  }
}

template <bool kAdd>
void backward(const GroupNormBackwardBlock& k) {
  const GroupNormBlock& b = k.b;
  const int64_t W = b.width, S = b.spatial, cg = b.group_size, G = W / cg;
  const double count = double(S * cg);
  float* acc1 = b.scratch_f;
  float* acc2 = acc1 + W;
  float* shift = acc2 + W;  // the forward's mean as f32 m0 + f32 remainder delta
  float* delta = shift + W;
  float* rs = delta + W;
  float* acc3 = rs + W;
  double* dadd_sum = b.scratch_d;
  for (int64_t g = 0; g < G; ++g) {
    const float m0 = float(k.mean[g]);
    const float dl = float(k.mean[g] - double(m0));
    const float r = float(k.rstd[g]);
    for (int64_t c = g * cg; c < (g + 1) * cg; ++c) {
      shift[c] = m0;
      delta[c] = dl;
      rs[c] = r;
    }
  }
  auto xhat = [&](int64_t s, int64_t j, int n) {
    return (deviation<kAdd>(b, s, j, n, shift) - load_part(delta + j, n)) * load_part(rs + j, n);
  };

  // Pass 1: g, the grad of the affine output (through SiLU when fused), into dx as scratch, and
  // its per-channel sums Σg and Σg·xhat.
  fill_floats(acc1, W, 0.0f);
  fill_floats(acc2, W, 0.0f);
  fill_doubles(k.sum_dy, W, 0.0);
  fill_doubles(k.sum_dyx, W, 0.0);
  walk_rows(
      S,
      [&](int64_t s) {
        const float* dyr = k.dy + s * b.row_stride;
        float* dxr = k.dx + s * b.row_stride;
        over_lanes(W, [&](int64_t j, int n) {
          const Vec xh = xhat(s, j, n);
          Vec g = load_part(dyr + j, n);
          if (b.silu) {
            const Vec v = fma(xh, load_part(b.gamma + j, n), load_part(b.beta + j, n));
            const Vec sg = sigmoid(v);
            g = g * (sg * (set1(1.0f) + v * (set1(1.0f) - sg)));
          }
          store_part(dxr + j, g, n);
          store_part(acc1 + j, load_part(acc1 + j, n) + g, n);
          store_part(acc2 + j, fma(g, xh, load_part(acc2 + j, n)), n);
        });
      },
      [&] {
        flush_to_doubles(acc1, k.sum_dy, W);
        flush_to_doubles(acc2, k.sum_dyx, W);
      });

  // Group means of dxhat = g·gamma and of dxhat·xhat, per channel in acc1 (m1) and acc2 (m2).
  for (int64_t g = 0; g < G; ++g) {
    double t1 = 0, t2 = 0;
    for (int64_t c = g * cg; c < (g + 1) * cg; ++c) {
      t1 += double(b.gamma[c]) * k.sum_dy[c];
      t2 += double(b.gamma[c]) * k.sum_dyx[c];
    }
    const float m1 = count > 0 ? float(t1 / count) : 0.0f, m2 = count > 0 ? float(t2 / count) : 0.0f;
    for (int64_t c = g * cg; c < (g + 1) * cg; ++c) {
      acc1[c] = m1;
      acc2[c] = m2;
    }
  }

  // Pass 2: dh = rstd·((g·gamma − m1) − xhat·m2), in this order and with g·gamma rounded on its
  // own: a group of one element (xhat 0, m1 the same product rounded alike) gives exactly 0.
  fill_floats(acc3, W, 0.0f);
  fill_doubles(dadd_sum, W, 0.0);
  walk_rows(
      S,
      [&](int64_t s) {
        float* dxr = k.dx + s * b.row_stride;
        over_lanes(W, [&](int64_t j, int n) {
          const Vec xh = xhat(s, j, n);
          const Vec g = load_part(dxr + j, n);
          const Vec dxhat = product_rounded(g, load_part(b.gamma + j, n));
          const Vec dh = load_part(rs + j, n) * ((dxhat - load_part(acc1 + j, n)) - xh * load_part(acc2 + j, n));
          store_part(dxr + j, dh, n);
          if (k.dadd) store_part(acc3 + j, load_part(acc3 + j, n) + dh, n);
        });
      },
      [&] {
        if (k.dadd) flush_to_doubles(acc3, dadd_sum, W);
      });
  if (k.dadd)
    for (int64_t c = 0; c < W; ++c) k.dadd[c] = float(dadd_sum[c]);
}

}  // namespace

void group_norm_forward_block(const GroupNormForwardBlock& f) {
  if (f.b.add)
    forward<true>(f);
  else
    forward<false>(f);
}

void group_norm_backward_block(const GroupNormBackwardBlock& k) {
  if (k.b.add)
    backward<true>(k);
  else
    backward<false>(k);
}

}  // namespace diffuse::kernels::cpu::simd::DIFFUSE_ISA_NS
