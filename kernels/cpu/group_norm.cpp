// CPU GroupNorm (see kernels/group_norm.h). One image per OpenMP task, walked row by row over
// [S, C] so every read is contiguous; per-channel sums in double are folded into group sums.
// Statistics are two-pass (mean, then squared deviations), accurate for f32 and f64 alike.
#include "kernels/group_norm.h"

#include <algorithm>
#include <cmath>
#include <vector>

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

}  // namespace

template <typename T>
void group_norm_forward(const GroupNormDesc& d, const T* x, const T* add_nc, const T* gamma, const T* beta, T* y,
                        double* mean, double* rstd) {
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

#define DIFFUSE_INSTANTIATE(T)                                                                                  \
  template void group_norm_forward<T>(const GroupNormDesc&, const T*, const T*, const T*, const T*, T*, double*, \
                                      double*);                                                                 \
  template void group_norm_backward<T>(const GroupNormDesc&, const T*, const T*, const T*, const T*,            \
                                       const double*, const double*, const T*, T*, T*, T*, T*);
DIFFUSE_INSTANTIATE(float)
DIFFUSE_INSTANTIATE(double)
#undef DIFFUSE_INSTANTIATE

}  // namespace diffuse::kernels::cpu
