// See kernels/cpu/simd/group_norm.h; compiled once per path (kernels/cpu/simd/isa_begin.h).
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>

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

// A block's channels are walked in chunks of at most kChunkVecs vectors, each chunk over every
// row, so a chunk's running sums and per-channel constants stay in registers (K of each) rather
// than going through memory once per row. A channel's arithmetic, and the order of its sums, is
// the same whichever chunk it falls in.
constexpr int kChunkVecs = 4;

// f(k, j, n) for the K vectors of the chunk at channel j0: j = j0 + k·kLanes, n lanes (kLanes, but
// `last` for the last vector); k is a constant once inlined.
template <int K, typename F>
inline void each_vec(int64_t j0, int last, F&& f) {
  [&]<int... k>(std::integer_sequence<int, k...>) {
    (f(k, j0 + int64_t(k) * kLanes, k == K - 1 ? last : kLanes), ...);
  }(std::make_integer_sequence<int, K>{});
}

// body(std::integral_constant<int, K>{}, j0, last) for each chunk: the K vectors of channels from
// j0 on, the last of them `last` lanes wide.
template <typename Body>
void over_chunks(int64_t W, Body&& body) {
  constexpr int64_t kChunk = int64_t(kChunkVecs) * kLanes;
  static_assert(kChunkVecs == 4, "the switch below dispatches 1 to 4 vectors");
  for (int64_t j0 = 0; j0 < W; j0 += kChunk) {
    const int64_t w = W - j0 < kChunk ? W - j0 : kChunk;
    const int vecs = int((w + kLanes - 1) / kLanes);
    const int last = int(w - int64_t(vecs - 1) * kLanes);
    switch (vecs) {
      case 1: body(std::integral_constant<int, 1>{}, j0, last); break;
      case 2: body(std::integral_constant<int, 2>{}, j0, last); break;
      case 3: body(std::integral_constant<int, 3>{}, j0, last); break;
      default: body(std::integral_constant<int, 4>{}, j0, last); break;
    }
  }
}

// Adds a chunk's K f32 running sums into its slice of the f64 sums and zeroes them.
template <int K>
inline void flush_chunk(Vec* acc, int64_t j0, int last, double* sum) {
  each_vec<K>(j0, last, [&](int k, int64_t j, int n) {
    add_to_doubles(acc[k], sum + j, n);
    acc[k] = zero();
  });
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
inline Vec deviation(const GroupNormBlock& b, int64_t s, int64_t j, int n, Vec shift) {
  Vec d = load_part(b.x + s * b.row_stride + j, n) - shift;
  if constexpr (kAdd) d = d + load_part(b.add + j, n);
  return d;
}

// Σ over each group's channels of per-channel sums.
inline double group_total(const double* per_channel, int64_t g, int64_t group_size) {
  double t = 0;
  for (int64_t c = g * group_size; c < (g + 1) * group_size; ++c) t += per_channel[c];
  return t;
}

// flatten: every helper, lambda and vector function below is inlined into the pass loops. Left to
// itself GCC called sigmoid, deviation and the chunk lambdas out of line, and every call spilled
// the chunk's registers (all vector registers are caller-saved).
template <bool kAdd>
[[gnu::flatten]] void forward(const GroupNormForwardBlock& f) {
  const GroupNormBlock& b = f.b;
  const int64_t W = b.width, S = b.spatial, cg = b.group_size, G = W / cg;
  const double count = double(S * cg);
  float* shift = b.scratch_f;  // m0 of the channel's group
  float* scale = shift + W;
  float* bias = scale + W;
  double* sum1 = b.scratch_d;
  double* sum2 = sum1 + W;

  // Pass 1: the first mean m0.
  fill_doubles(sum1, W, 0.0);
  over_chunks(W, [&](auto kv, int64_t j0, int last) {
    constexpr int K = decltype(kv)::value;
    Vec acc[K];
    for (Vec& a : acc) a = zero();
    walk_rows(
        S,
        [&](int64_t s) {
          each_vec<K>(j0, last, [&](int i, int64_t j, int n) { acc[i] = acc[i] + pre_norm<kAdd>(b, s, j, n); });
        },
        [&] { flush_chunk<K>(acc, j0, last, sum1); });
  });
  for (int64_t g = 0; g < G; ++g) {
    const float m0 = count > 0 ? float(group_total(sum1, g, cg) / count) : 0.0f;
    for (int64_t c = g * cg; c < (g + 1) * cg; ++c) shift[c] = m0;
  }

  // Pass 2: Σd and Σd² with d = h − m0.
  fill_doubles(sum1, W, 0.0);
  fill_doubles(sum2, W, 0.0);
  over_chunks(W, [&](auto kv, int64_t j0, int last) {
    constexpr int K = decltype(kv)::value;
    Vec acc1[K], acc2[K], sh[K];
    each_vec<K>(j0, last, [&](int i, int64_t j, int n) {
      acc1[i] = zero();
      acc2[i] = zero();
      sh[i] = load_part(shift + j, n);
    });
    walk_rows(
        S,
        [&](int64_t s) {
          each_vec<K>(j0, last, [&](int i, int64_t j, int n) {
            const Vec d = deviation<kAdd>(b, s, j, n, sh[i]);
            acc1[i] = acc1[i] + d;
            acc2[i] = fma(d, d, acc2[i]);
          });
        },
        [&] {
          flush_chunk<K>(acc1, j0, last, sum1);
          flush_chunk<K>(acc2, j0, last, sum2);
        });
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
  over_chunks(W, [&](auto kv, int64_t j0, int last) {
    constexpr int K = decltype(kv)::value;
    Vec sh[K], sc[K], bi[K];
    each_vec<K>(j0, last, [&](int i, int64_t j, int n) {
      sh[i] = load_part(shift + j, n);
      sc[i] = load_part(scale + j, n);
      bi[i] = load_part(bias + j, n);
    });
    for (int64_t s = 0; s < S; ++s) {
      float* yr = f.y + s * b.row_stride;
      each_vec<K>(j0, last, [&](int i, int64_t j, int n) {
        Vec v = fma(deviation<kAdd>(b, s, j, n, sh[i]), sc[i], bi[i]);
        if (b.silu) v = silu(v);
        store_part(yr + j, v, n);
      });
    }
  });
}

template <bool kAdd>
[[gnu::flatten]] void backward(const GroupNormBackwardBlock& k) {
  const GroupNormBlock& b = k.b;
  const int64_t W = b.width, S = b.spatial, cg = b.group_size, G = W / cg;
  const double count = double(S * cg);
  float* m1 = b.scratch_f;  // per channel, the group means of pass 2
  float* m2 = m1 + W;
  float* shift = m2 + W;  // the forward's mean as f32 m0 + f32 remainder delta
  float* delta = shift + W;
  float* rs = delta + W;
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
  // A chunk's constants of xhat = ((x − m0) + add − delta)·rstd, per vector.
  struct Xhat {
    Vec m0, delta, rstd;
  };
  auto xhat_constants = [&](int64_t j, int n) {
    return Xhat{load_part(shift + j, n), load_part(delta + j, n), load_part(rs + j, n)};
  };
  auto xhat = [&](const Xhat& c, int64_t s, int64_t j, int n) {
    return (deviation<kAdd>(b, s, j, n, c.m0) - c.delta) * c.rstd;
  };

  // Pass 1: g, the grad of the affine output (through SiLU when fused), into dx as scratch, and
  // its per-channel sums Σg and Σg·xhat.
  fill_doubles(k.sum_dy, W, 0.0);
  fill_doubles(k.sum_dyx, W, 0.0);
  over_chunks(W, [&](auto kv, int64_t j0, int last) {
    constexpr int K = decltype(kv)::value;
    Vec acc1[K], acc2[K], gm[K], bt[K];
    Xhat xc[K];
    each_vec<K>(j0, last, [&](int i, int64_t j, int n) {
      acc1[i] = zero();
      acc2[i] = zero();
      gm[i] = load_part(b.gamma + j, n);
      bt[i] = load_part(b.beta + j, n);
      xc[i] = xhat_constants(j, n);
    });
    walk_rows(
        S,
        [&](int64_t s) {
          const float* dyr = k.dy + s * b.row_stride;
          float* dxr = k.dx + s * b.row_stride;
          each_vec<K>(j0, last, [&](int i, int64_t j, int n) {
            const Vec xh = xhat(xc[i], s, j, n);
            Vec g = load_part(dyr + j, n);
            if (b.silu) {
              const Vec v = fma(xh, gm[i], bt[i]);
              const Vec sg = sigmoid(v);
              g = g * (sg * (set1(1.0f) + v * (set1(1.0f) - sg)));
            }
            store_part(dxr + j, g, n);
            acc1[i] = acc1[i] + g;
            acc2[i] = fma(g, xh, acc2[i]);
          });
        },
        [&] {
          flush_chunk<K>(acc1, j0, last, k.sum_dy);
          flush_chunk<K>(acc2, j0, last, k.sum_dyx);
        });
  });

  // Group means of dxhat = g·gamma and of dxhat·xhat, per channel in m1 and m2.
  for (int64_t g = 0; g < G; ++g) {
    double t1 = 0, t2 = 0;
    for (int64_t c = g * cg; c < (g + 1) * cg; ++c) {
      t1 += double(b.gamma[c]) * k.sum_dy[c];
      t2 += double(b.gamma[c]) * k.sum_dyx[c];
    }
    const float g1 = count > 0 ? float(t1 / count) : 0.0f, g2 = count > 0 ? float(t2 / count) : 0.0f;
    for (int64_t c = g * cg; c < (g + 1) * cg; ++c) {
      m1[c] = g1;
      m2[c] = g2;
    }
  }

  // Pass 2: dh = rstd·((g·gamma − m1) − xhat·m2), in this order and with g·gamma rounded on its
  // own: a group of one element (xhat 0, m1 the same product rounded alike) gives exactly 0.
  if (k.dadd) fill_doubles(dadd_sum, W, 0.0);
  over_chunks(W, [&](auto kv, int64_t j0, int last) {
    constexpr int K = decltype(kv)::value;
    Vec acc[K], gm[K], c1[K], c2[K];
    Xhat xc[K];
    each_vec<K>(j0, last, [&](int i, int64_t j, int n) {
      acc[i] = zero();
      gm[i] = load_part(b.gamma + j, n);
      c1[i] = load_part(m1 + j, n);
      c2[i] = load_part(m2 + j, n);
      xc[i] = xhat_constants(j, n);
    });
    walk_rows(
        S,
        [&](int64_t s) {
          float* dxr = k.dx + s * b.row_stride;
          each_vec<K>(j0, last, [&](int i, int64_t j, int n) {
            const Vec xh = xhat(xc[i], s, j, n);
            const Vec dxhat = product_rounded(load_part(dxr + j, n), gm[i]);
            const Vec dh = xc[i].rstd * ((dxhat - c1[i]) - xh * c2[i]);
            store_part(dxr + j, dh, n);
            if (k.dadd) acc[i] = acc[i] + dh;
          });
        },
        [&] {
          if (k.dadd) flush_chunk<K>(acc, j0, last, dadd_sum);
        });
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
