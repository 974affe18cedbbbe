// CPU attention (see kernels/attention.h): per (n, head), scores = q kᵀ/√d by GEMM into an L×L
// buffer, a max-subtracted softmax per row, then GEMMs for the output or the grads. OpenMP runs
// the (n, head) pairs in parallel, each thread with its own L×L buffers (grow-only scratch);
// with fewer pairs than threads (sampling one image) the pairs run in turn and each GEMM splits.
#include "kernels/attention.h"

#include <algorithm>
#include <cmath>

#include <omp.h>

#include "kernels/gemm.h"

namespace diffuse::kernels::cpu {

namespace {

// p[L, L] = softmax over rows of (q_h k_hᵀ) * scale, q_h and k_h with leading dimension ld.
template <typename T>
void probabilities(int64_t len, int64_t dim, int64_t ld, T scale, const T* qh, const T* kh, T* p) {
  gemm<T>(false, true, len, len, dim, scale, qh, ld, kh, ld, T(0), p, len);
  for (int64_t i = 0; i < len; ++i) {
    T* row = p + i * len;
    T mx = *std::max_element(row, row + len);
    double total = 0;
    for (int64_t j = 0; j < len; ++j) {
      row[j] = std::exp(row[j] - mx);
      total += double(row[j]);
    }
    const T inv = static_cast<T>(1.0 / total);
    for (int64_t j = 0; j < len; ++j) row[j] *= inv;
  }
}

bool parallel_over_pairs(const AttentionDesc& d) {
  return d.n * d.heads >= omp_get_max_threads() && d.n * d.heads * d.len * d.len * d.head_dim > 65536;
}

}  // namespace

template <typename T>
void attention_forward(const AttentionDesc& d, const T* q, const T* k, const T* v, T* out) {
  const int64_t L = d.len, dh = d.head_dim, W = d.width();
  const T scale = static_cast<T>(1.0 / std::sqrt(double(dh)));
  if (L == 0 || dh == 0) return;
#pragma omp parallel for schedule(dynamic, 1) if (parallel_over_pairs(d))
  for (int64_t t = 0; t < d.n * d.heads; ++t) {
    const int64_t off = (t / d.heads) * L * W + (t % d.heads) * dh;
    T* p = thread_scratch_of<T>(0, size_t(L * L));
    probabilities(L, dh, W, scale, q + off, k + off, p);
    gemm<T>(false, false, L, dh, L, T(1), p, L, v + off, W, T(0), out + off, W);
  }
}

template <typename T>
void attention_backward(const AttentionDesc& d, const T* q, const T* k, const T* v, const T* out, const T* dout,
                        T* dq, T* dk, T* dv) {
  const int64_t L = d.len, dh = d.head_dim, W = d.width();
  const T scale = static_cast<T>(1.0 / std::sqrt(double(dh)));
  if (L == 0 || dh == 0) return;
#pragma omp parallel for schedule(dynamic, 1) if (parallel_over_pairs(d))
  for (int64_t t = 0; t < d.n * d.heads; ++t) {
    const int64_t off = (t / d.heads) * L * W + (t % d.heads) * dh;
    T* p = thread_scratch_of<T>(0, size_t(L * L));
    probabilities(L, dh, W, scale, q + off, k + off, p);
    if (dv) gemm<T>(true, false, L, dh, L, T(1), p, L, dout + off, W, T(0), dv + off, W);  // Pᵀ dO
    if (!dq && !dk) continue;
    T* ds = thread_scratch_of<T>(1, size_t(L * L));
    gemm<T>(false, true, L, L, dh, T(1), dout + off, W, v + off, W, T(0), ds, L);  // dP = dO Vᵀ
    // dS = P ∘ (dP − rowsum(dO ∘ O)): the softmax backward, row by row.
    for (int64_t i = 0; i < L; ++i) {
      const T* o_row = out + off + i * W;
      const T* g_row = dout + off + i * W;
      double dot = 0;
      for (int64_t c = 0; c < dh; ++c) dot += double(o_row[c]) * double(g_row[c]);
      const T row_dot = static_cast<T>(dot);
      T* ds_row = ds + i * L;
      const T* p_row = p + i * L;
      for (int64_t j = 0; j < L; ++j) ds_row[j] = p_row[j] * (ds_row[j] - row_dot);
    }
    if (dq) gemm<T>(false, false, L, dh, L, scale, ds, L, k + off, W, T(0), dq + off, W);  // dS K / √d
    if (dk) gemm<T>(true, false, L, dh, L, scale, ds, L, q + off, W, T(0), dk + off, W);   // dSᵀ Q / √d
  }
}

#define DIFFUSE_INSTANTIATE(T)                                                                         \
  template void attention_forward<T>(const AttentionDesc&, const T*, const T*, const T*, T*);         \
  template void attention_backward<T>(const AttentionDesc&, const T*, const T*, const T*, const T*,   \
                                      const T*, T*, T*, T*);
DIFFUSE_INSTANTIATE(float)
DIFFUSE_INSTANTIATE(double)
#undef DIFFUSE_INSTANTIATE

}  // namespace diffuse::kernels::cpu
