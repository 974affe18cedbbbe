// CPU GroupNorm (see kernels/group_norm.h). f32 runs the vector kernels of
// kernels/cpu/simd/group_norm.h: a call is cut into blocks (one image's run of whole groups), all
// of them in one parallel region, each thread with grow-only scratch. f64 (gradient checks) keeps
// the scalar code below: one image per OpenMP task, walked row by row over [S, C] so every read is
// contiguous; per-channel sums in double are folded into group sums, two-pass statistics (mean,
// then squared deviations). Either way the per-(image, channel) sums of the backward are added
// over images in order, so results do not depend on the thread count.
#include "kernels/group_norm.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd/group_norm.h"
#include "kernels/gemm.h"  // thread_scratch

namespace diffuse::kernels::cpu {

namespace {

// The pre-norm input h = x + add_nc[n, c] for one position's row of C channels.
template <typename T>
inline double pre_norm(const T* xrow, const T* add_row, int64_t c) {
  return add_row ? double(xrow[c]) + double(add_row[c]) : double(xrow[c]);
}

// In T's precision: expf is several times cheaper than exp and f32 results do not need more.
template <typename T>
inline double sigmoid(double v) {
  return double(T(1) / (T(1) + std::exp(T(-v))));
}

// dgamma[c] = Σ_n part_dyx[n, c] and dbeta[c] = Σ_n part_dy[n, c], over images in order.
template <typename T>
void sum_over_images(const double* part_dy, const double* part_dyx, int64_t N, int64_t C, T* dgamma, T* dbeta) {
  for (int64_t c = 0; c < C; ++c) {
    double g = 0, b = 0;
    for (int64_t n = 0; n < N; ++n) {
      g += part_dyx[n * C + c];
      b += part_dy[n * C + c];
    }
    if (dgamma) dgamma[c] = static_cast<T>(g);
    if (dbeta) dbeta[c] = static_cast<T>(b);
  }
}

// The f32 path's blocks: whole groups, at most about 128 channels (a block's rows stay short
// enough to sit in L1/L2 over the three passes), split further down to 32 channels when the batch
// alone would leave threads idle (sampling a single image).
struct Blocks {
  int64_t per_image = 1, groups = 1;  // blocks per image, groups per block
};

Blocks blocks_of(const GroupNormDesc& d) {
  const int64_t C = d.channels, G = d.groups;
  const int64_t wanted_for_threads = (4 * region_threads() + d.n - 1) / std::max<int64_t>(d.n, 1);
  const int64_t most = std::max<int64_t>(1, C / 32);
  const int64_t blocks = std::clamp<int64_t>(std::max<int64_t>((C + 127) / 128, wanted_for_threads), 1, std::min(most, G));
  Blocks b;
  b.groups = (G + blocks - 1) / blocks;
  b.per_image = (G + b.groups - 1) / b.groups;
  return b;
}

// The block `item` (image item / per_image) with every shared field filled in; scratch from the
// calling thread's thread_scratch slots 0 and 1 (backward_f32's sums hold 2 and 3).
simd::GroupNormBlock block_at(const GroupNormDesc& d, const Blocks& blocks, int64_t item, const float* x,
                              const float* add_nc, const float* gamma, const float* beta, int64_t* n_out,
                              int64_t* g0_out) {
  const int64_t C = d.channels, cg = d.group_size();
  const int64_t n = item / blocks.per_image;
  const int64_t g0 = (item % blocks.per_image) * blocks.groups;
  const int64_t g1 = std::min(d.groups, g0 + blocks.groups);
  const int64_t c0 = g0 * cg, width = (g1 - g0) * cg;
  const size_t need_d = static_cast<size_t>(simd::kGroupNormScratchDoubles * width);
  const size_t need_f = static_cast<size_t>(simd::kGroupNormScratchFloats * width);
  simd::GroupNormBlock b;
  b.x = x + n * d.spatial * C + c0;
  b.add = add_nc ? add_nc + n * C + c0 : nullptr;
  b.gamma = gamma + c0;
  b.beta = beta + c0;
  b.spatial = d.spatial;
  b.row_stride = C;
  b.width = width;
  b.group_size = cg;
  b.eps = d.eps;
  b.silu = d.silu;
  b.scratch_d = thread_scratch_of<double>(0, need_d);
  b.scratch_f = thread_scratch_of<float>(1, need_f);
  *n_out = n;
  *g0_out = g0;
  return b;
}

// Roughly the float operations per element of the three passes.
constexpr double kCostPerElement = 12;

void forward_f32(const GroupNormDesc& d, const float* x, const float* add_nc, const float* gamma, const float* beta,
                 float* y, double* mean, double* rstd) {
  const Blocks blocks = blocks_of(d);
  const int64_t C = d.channels, cg = d.group_size();
  parallel_for(d.n * blocks.per_image, kCostPerElement * double(d.spatial * blocks.groups * cg),
               [&](int64_t begin, int64_t end) {
                 for (int64_t item = begin; item < end; ++item) {
                   simd::GroupNormForwardBlock f;
                   int64_t n = 0, g0 = 0;
                   f.b = block_at(d, blocks, item, x, add_nc, gamma, beta, &n, &g0);
                   f.y = y + n * d.spatial * C + g0 * cg;
                   f.mean = mean + n * d.groups + g0;
                   f.rstd = rstd + n * d.groups + g0;
                   simd::group_norm_forward_block(f);
                 }
               });
}

void backward_f32(const GroupNormDesc& d, const float* x, const float* add_nc, const float* gamma, const float* beta,
                  const double* mean, const double* rstd, const float* dy, float* dx, float* dgamma, float* dbeta,
                  float* dadd_nc) {
  const Blocks blocks = blocks_of(d);
  const int64_t N = d.n, C = d.channels, cg = d.group_size();
  // Per-(image, channel) sums of g and g·xhat, added over images in order afterwards.
  // (Taken here, on the calling thread: inside the region each worker's slots are its own.)
  const size_t parts = static_cast<size_t>(N * C);
  double* sums_dy = thread_scratch_of<double>(2, parts);
  double* sums_dyx = thread_scratch_of<double>(3, parts);
  parallel_for(N * blocks.per_image, kCostPerElement * double(d.spatial * blocks.groups * cg),
               [&](int64_t begin, int64_t end) {
                 for (int64_t item = begin; item < end; ++item) {
                   simd::GroupNormBackwardBlock k;
                   int64_t n = 0, g0 = 0;
                   k.b = block_at(d, blocks, item, x, add_nc, gamma, beta, &n, &g0);
                   const int64_t offset = n * d.spatial * C + g0 * cg;
                   k.mean = mean + n * d.groups + g0;
                   k.rstd = rstd + n * d.groups + g0;
                   k.dy = dy + offset;
                   k.dx = dx + offset;
                   k.sum_dy = sums_dy + n * C + g0 * cg;
                   k.sum_dyx = sums_dyx + n * C + g0 * cg;
                   k.dadd = dadd_nc ? dadd_nc + n * C + g0 * cg : nullptr;
                   simd::group_norm_backward_block(k);
                 }
               });
  sum_over_images(sums_dy, sums_dyx, N, C, dgamma, dbeta);
}

}  // namespace

template <typename T>
void group_norm_forward(const GroupNormDesc& d, const T* x, const T* add_nc, const T* gamma, const T* beta, T* y,
                        double* mean, double* rstd) {
  if constexpr (std::is_same_v<T, float>) {
    forward_f32(d, x, add_nc, gamma, beta, y, mean, rstd);
    return;
  }
  const int64_t S = d.spatial, C = d.channels, G = d.groups, cg = d.group_size();
  const double count = double(S * cg);
#pragma omp parallel for schedule(dynamic, 1) if (d.n * S * C > 32768)
  for (int64_t n = 0; n < d.n; ++n) {
    const T* xn = x + n * S * C;
    const T* an = add_nc ? add_nc + n * C : nullptr;
    T* yn = y + n * S * C;
    std::vector<double> chan(static_cast<size_t>(C)), gmean(static_cast<size_t>(G)), grstd(static_cast<size_t>(G));
    for (int64_t s = 0; s < S; ++s)
      for (int64_t c = 0; c < C; ++c) chan[c] += pre_norm(xn + s * C, an, c);
    for (int64_t g = 0; g < G; ++g) {
      double t = 0;
      for (int64_t c = g * cg; c < (g + 1) * cg; ++c) t += chan[c];
      gmean[g] = count > 0 ? t / count : 0.0;
    }
    std::vector<double> cmean(static_cast<size_t>(C));
    for (int64_t c = 0; c < C; ++c) cmean[c] = gmean[c / cg];
    std::fill(chan.begin(), chan.end(), 0.0);
    for (int64_t s = 0; s < S; ++s)
      for (int64_t c = 0; c < C; ++c) {
        double dev = pre_norm(xn + s * C, an, c) - cmean[c];
        chan[c] += dev * dev;
      }
    for (int64_t g = 0; g < G; ++g) {
      double t = 0;
      for (int64_t c = g * cg; c < (g + 1) * cg; ++c) t += chan[c];
      grstd[g] = 1.0 / std::sqrt((count > 0 ? t / count : 0.0) + d.eps);
      mean[n * G + g] = gmean[g];
      rstd[n * G + g] = grstd[g];
    }
    // Per channel the affine normalisation is y = h * scale[c] + shift[c].
    std::vector<double> scale(static_cast<size_t>(C)), shift(static_cast<size_t>(C));
    for (int64_t c = 0; c < C; ++c) {
      scale[c] = double(gamma[c]) * grstd[c / cg];
      shift[c] = double(beta[c]) - cmean[c] * scale[c];
    }
    for (int64_t s = 0; s < S; ++s) {
      const T* xr = xn + s * C;
      T* yr = yn + s * C;
      for (int64_t c = 0; c < C; ++c) {
        double v = pre_norm(xr, an, c) * scale[c] + shift[c];
        yr[c] = static_cast<T>(d.silu ? v * sigmoid<T>(v) : v);
      }
    }
  }
}

// The backward keeps the original double arithmetic where cancellation matters (xhat, dh) and
// does the SiLU grad in T, with per-channel constants made once per image and each row split into
// simple branch-free loops the compiler vectorises: the exp of the fused SiLU gets a loop of its
// own (a library call no loop around it can vectorise). Channel sums stay in double, accumulated
// per image in position order, so results do not depend on the thread count.
template <typename T>
void group_norm_backward(const GroupNormDesc& d, const T* x, const T* add_nc, const T* gamma, const T* beta,
                         const double* mean, const double* rstd, const T* dy, T* dx, T* dgamma, T* dbeta,
                         T* dadd_nc) {
  if constexpr (std::is_same_v<T, float>) {
    backward_f32(d, x, add_nc, gamma, beta, mean, rstd, dy, dx, dgamma, dbeta, dadd_nc);
    return;
  }
  const int64_t N = d.n, S = d.spatial, C = d.channels, G = d.groups, cg = d.group_size();
  const double count = double(S * cg);
  const size_t Cs = static_cast<size_t>(C);
  // Per-image partial sums of dy and dy * xhat per channel, summed over images in order afterwards.
  std::vector<double> part_dy(static_cast<size_t>(N * C)), part_dyx(static_cast<size_t>(N * C));
#pragma omp parallel for schedule(dynamic, 1) if (N * S * C > 32768)
  for (int64_t n = 0; n < N; ++n) {
    const T* xn = x + n * S * C;
    const T* an = add_nc ? add_nc + n * C : nullptr;
    const T* dyn = dy + n * S * C;
    T* dxn = dx + n * S * C;
    const double* mn = mean + n * G;
    const double* rn = rstd + n * G;
    double* sdy = part_dy.data() + n * C;
    double* sdyx = part_dyx.data() + n * C;
    // Per channel: add_nc, mean and rstd in double (xhat is formed in double as the forward's
    // statistics were, so h == mean gives exactly 0), gamma and beta in T; row scratch in T for
    // xhat and the SiLU's exp(-v).
    std::vector<double> ad(Cs), cm(Cs), cr(Cs);
    std::vector<T> gm(Cs), bt(Cs), xh(Cs), ex(Cs);
    for (int64_t c = 0; c < C; ++c) {
      ad[c] = an ? double(an[c]) : 0.0;
      cm[c] = mn[c / cg];
      cr[c] = rn[c / cg];
      gm[c] = gamma[c];
      bt[c] = d.silu ? beta[c] : T(0);
    }
    // Pass 1: the grad of the affine output (through SiLU when fused) goes to dx as scratch,
    // and its per-channel sums (plain and times xhat) accumulate.
    for (int64_t s = 0; s < S; ++s) {
      const T* xr = xn + s * C;
      const T* dyr = dyn + s * C;
      T* dxr = dxn + s * C;
      for (int64_t c = 0; c < C; ++c) xh[c] = static_cast<T>((double(xr[c]) + ad[c] - cm[c]) * cr[c]);
      if (d.silu) {
        for (int64_t c = 0; c < C; ++c) ex[c] = -(xh[c] * gm[c] + bt[c]);
        for (int64_t c = 0; c < C; ++c) ex[c] = std::exp(ex[c]);
        for (int64_t c = 0; c < C; ++c) {
          const T v = xh[c] * gm[c] + bt[c];
          const T sg = T(1) / (T(1) + ex[c]);
          dxr[c] = dyr[c] * (sg * (T(1) + v * (T(1) - sg)));
        }
      } else {
        for (int64_t c = 0; c < C; ++c) dxr[c] = dyr[c];
      }
      for (int64_t c = 0; c < C; ++c) {
        const double gv = double(dxr[c]);
        sdy[c] += gv;
        sdyx[c] += gv * double(xh[c]);
      }
    }
    // Group means of dxhat = gv * gamma and of dxhat * xhat.
    std::vector<double> m1(static_cast<size_t>(G)), m2(static_cast<size_t>(G));
    for (int64_t c = 0; c < C; ++c) {
      m1[c / cg] += double(gamma[c]) * sdy[c];
      m2[c / cg] += double(gamma[c]) * sdyx[c];
    }
    for (int64_t g = 0; g < G; ++g) {
      m1[g] = count > 0 ? m1[g] / count : 0.0;
      m2[g] = count > 0 ? m2[g] / count : 0.0;
    }
    // Pass 2: dh = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), in double and in
    // this order, so a group whose terms cancel (one element per group) gives exactly 0.
    std::vector<double> gd(Cs), c1(Cs), c2(Cs);
    for (int64_t c = 0; c < C; ++c) {
      gd[c] = double(gamma[c]);
      c1[c] = m1[c / cg];
      c2[c] = m2[c / cg];
    }
    std::vector<double> dadd(static_cast<size_t>(dadd_nc ? C : 0));
    for (int64_t s = 0; s < S; ++s) {
      const T* xr = xn + s * C;
      T* dxr = dxn + s * C;
      for (int64_t c = 0; c < C; ++c) {
        const double xhat = (double(xr[c]) + ad[c] - cm[c]) * cr[c];
        dxr[c] = static_cast<T>(cr[c] * (double(dxr[c]) * gd[c] - c1[c] - xhat * c2[c]));
      }
      if (dadd_nc)
        for (int64_t c = 0; c < C; ++c) dadd[c] += double(dxr[c]);
    }
    if (dadd_nc)
      for (int64_t c = 0; c < C; ++c) dadd_nc[n * C + c] = static_cast<T>(dadd[c]);
  }
  sum_over_images(part_dy.data(), part_dyx.data(), N, C, dgamma, dbeta);
}

#define DIFFUSE_INSTANTIATE(T)                                                                                  \
  template void group_norm_forward<T>(const GroupNormDesc&, const T*, const T*, const T*, const T*, T*, double*, \
                                      double*);                                                                 \
  template void group_norm_backward<T>(const GroupNormDesc&, const T*, const T*, const T*, const T*,            \
                                       const double*, const double*, const T*, T*, T*, T*, T*);
DIFFUSE_INSTANTIATE(float)
DIFFUSE_INSTANTIATE(double)
#undef DIFFUSE_INSTANTIATE

}  // namespace diffuse::kernels::cpu
