// CPU attention (see kernels/attention.h) as batched GEMMs over tiles of query rows. A work item
// is one (n, head) pair's block of R query rows: S = q kᵀ/√d for those rows by GEMM into an R×L
// tile, a vectorised row softmax (kernels/cpu/simd/softmax.h) in place, then GEMMs for the output
// rows (the forward's tile left at e^(S − max), its output rows divided by Σ) or the grads. R is
// chosen so the tile (and the backward's second one) stays in L2 however long the sequence: an
// L×L matrix is held only as the short backward's tile below (L ≤ 256). One parallel region per call
// (kernels/cpu/parallel.h) runs the items; the GEMMs inside run serially.
// The backward of a short sequence (L ≤ 256) takes one item per pair on transposed tiles (keys
// down, queries across: attention_backward_whole_pairs says why). A longer one runs the query-row
// tiles, where dk and dv sum over every query row: the blocks of one pair normally run in turn in
// one item and add into dk, dv directly; with fewer than 8 pairs (a batch of one) a pair's blocks
// are split into groups that sum into per-group partials (the calling thread's scratch), added up
// after the region, the same groups at any thread count. f64 (gradient checks) runs the same
// tiles with scalar row and column loops.
#include "kernels/attention.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd/softmax.h"
#include "kernels/gemm.h"

namespace diffuse::kernels::cpu {

namespace {

// Scratch slots (kernels/gemm.h): the tiles of each worker, and the calling thread's partials.
constexpr int kScoreSlot = 0, kGradSlot = 1, kDotSlot = 2, kPartialSlot = 3;

// Query rows per tile: about 32K floats (128 KiB f32), a multiple of 16, at least 16 and at
// most L.
int64_t rows_per_tile(int64_t len) {
  const int64_t r = std::max<int64_t>(16, (int64_t{1} << 15) / std::max<int64_t>(len, 1) / 16 * 16);
  return std::min(r, len);
}

void softmax_rows(float* s, int64_t rows, int64_t len, int64_t ld, float* inv) {
  simd::softmax_rows(s, rows, len, ld, inv);
}
void softmax_rows(double* s, int64_t rows, int64_t len, int64_t ld, double* inv) {
  for (int64_t i = 0; i < rows; ++i) {
    double* row = s + i * ld;
    const double mx = *std::max_element(row, row + len);
    double total = 0;
    for (int64_t j = 0; j < len; ++j) total += row[j] = std::exp(row[j] - mx);
    if (inv) {
      inv[i] = 1 / total;
    } else {
      for (int64_t j = 0; j < len; ++j) row[j] /= total;
    }
  }
}

void row_dots(const float* a, const float* b, int64_t rows, int64_t len, int64_t ld, float* dot) {
  simd::row_dots(a, b, rows, len, ld, dot);
}
void row_dots(const double* a, const double* b, int64_t rows, int64_t len, int64_t ld, double* dot) {
  for (int64_t i = 0; i < rows; ++i) {
    double total = 0;
    for (int64_t c = 0; c < len; ++c) total += a[i * ld + c] * b[i * ld + c];
    dot[i] = total;
  }
}

void softmax_backward_rows(const float* p, float* dp, const float* dot, int64_t rows, int64_t len, int64_t ld) {
  simd::softmax_backward_rows(p, dp, dot, rows, len, ld);
}
void softmax_backward_rows(const double* p, double* dp, const double* dot, int64_t rows, int64_t len, int64_t ld) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < len; ++j) dp[i * ld + j] = p[i * ld + j] * (dp[i * ld + j] - dot[i]);
}

// p[rows, L] = softmax over rows of (q_rows k_hᵀ) · scale; q_rows and k_h with leading dimension ld.
// With inv not null, p is left unnormalised and inv holds each row's 1 / Σ (softmax_rows).
template <typename T>
void probabilities(int64_t rows, int64_t len, int64_t dim, int64_t ld, T scale, const T* q_rows, const T* kh, T* p,
                   T* inv = nullptr) {
  gemm<T>(false, true, rows, len, dim, scale, q_rows, ld, kh, ld, T(0), p, len);
  softmax_rows(p, rows, len, len, inv);
}

void softmax_columns(float* s, int64_t rows, int64_t cols, int64_t ld, float* work) {
  simd::softmax_columns(s, rows, cols, ld, work);
}
void softmax_columns(double* s, int64_t rows, int64_t cols, int64_t ld, double*) {
  for (int64_t j = 0; j < cols; ++j) {
    double mx = s[j], total = 0;
    for (int64_t i = 1; i < rows; ++i) mx = std::max(mx, s[i * ld + j]);
    for (int64_t i = 0; i < rows; ++i) total += s[i * ld + j] = std::exp(s[i * ld + j] - mx);
    for (int64_t i = 0; i < rows; ++i) s[i * ld + j] /= total;
  }
}

void softmax_backward_columns(const float* p, float* dp, const float* dot, int64_t rows, int64_t cols, int64_t ld) {
  simd::softmax_backward_columns(p, dp, dot, rows, cols, ld);
}
void softmax_backward_columns(const double* p, double* dp, const double* dot, int64_t rows, int64_t cols,
                              int64_t ld) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) dp[i * ld + j] = p[i * ld + j] * (dp[i * ld + j] - dot[j]);
}

// Where (image, head) pair `pair` starts in q, k, v and their grads (row stride qkv_ld), and in out
// and dout (row stride W).
int64_t input_offset(const AttentionDesc& d, int64_t pair) {
  return (pair / d.heads) * d.len * d.qkv_ld() + (pair % d.heads) * d.head_dim;
}
int64_t output_offset(const AttentionDesc& d, int64_t pair) {
  return (pair / d.heads) * d.len * d.width() + (pair % d.heads) * d.head_dim;
}

// Roughly the simple operations of one item of `rows` query rows (parallel_for's cost unit).
double tile_cost(const AttentionDesc& d, int64_t rows) { return 4.0 * double(rows) * double(d.len) * double(d.head_dim); }

}  // namespace

template <typename T>
void attention_forward(const AttentionDesc& d, const T* q, const T* k, const T* v, T* out) {
  const int64_t L = d.len, dh = d.head_dim, W = d.width(), I = d.qkv_ld();
  if (L == 0 || dh == 0) return;
  const T scale = static_cast<T>(1.0 / std::sqrt(double(dh)));
  const int64_t rows = rows_per_tile(L), blocks = (L + rows - 1) / rows;
  parallel_for(d.n * d.heads * blocks, tile_cost(d, rows), [&](int64_t begin, int64_t end) {
    T* p = thread_scratch_of<T>(kScoreSlot, size_t(rows * L));
    T* inv = thread_scratch_of<T>(kDotSlot, size_t(rows));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t pair = item / blocks, row0 = (item % blocks) * rows, r = std::min(rows, L - row0);
      const int64_t in = input_offset(d, pair), off = output_offset(d, pair);
      // O = (e^(S − max) v) / Σ: the division scales d values per row instead of L.
      probabilities(r, L, dh, I, scale, q + in + row0 * I, k + in, p, inv);
      T* o = out + off + row0 * W;
      gemm<T>(false, false, r, dh, L, T(1), p, L, v + in, I, T(0), o, W);
      for (int64_t i = 0; i < r; ++i)
        for (int64_t c = 0; c < dh; ++c) o[i * W + c] *= inv[i];
    }
  });
}

// The backward of a short sequence (L² ≤ kWholePairTile): one item per (image, head) pair on its
// transposed tiles, keys down and queries across. Pᵀ = softmax over the columns of Sᵀ = k qᵀ/√d,
// dPᵀ = v dOᵀ, dSᵀ = Pᵀ ∘ (dPᵀ − rowsum(dO ∘ O) per column); then dv = Pᵀ dO and dk = dSᵀ q/√d
// read their L×L operand as stored rows (the GEMM's fastest A, no packing), and only dq = dS k/√d
// packs its transpose, where the query-row tiles pack two (Pᵀ for dv, dSᵀ for dk). Every grad is
// summed within its item: no partials, nothing depends on the thread count.
constexpr int64_t kGroupThreads = 8;
constexpr int64_t kWholePairTile = int64_t{1} << 16;  // L ≤ 256: two tiles of 256 KiB f32 stay in L2

template <typename T>
void attention_backward_whole_pairs(const AttentionDesc& d, const T* q, const T* k, const T* v, const T* out,
                                    const T* dout, T* dq, T* dk, T* dv) {
  const int64_t L = d.len, dh = d.head_dim, W = d.width(), I = d.qkv_ld();
  const T scale = static_cast<T>(1.0 / std::sqrt(double(dh)));
  parallel_for(d.n * d.heads, tile_cost(d, L) * 2.5, [&](int64_t begin, int64_t end) {
    T* pt = thread_scratch_of<T>(kScoreSlot, size_t(L * L));
    T* dst = thread_scratch_of<T>(kGradSlot, size_t(L * L));
    T* dot = thread_scratch_of<T>(kDotSlot, size_t(3 * L));  // and the column softmax's 2·L
    for (int64_t pair = begin; pair < end; ++pair) {
      const int64_t in = input_offset(d, pair), off = output_offset(d, pair);
      gemm<T>(false, true, L, L, dh, scale, k + in, I, q + in, I, T(0), pt, L);  // Sᵀ = k qᵀ/√d
      softmax_columns(pt, L, L, L, dot + L);
      if (dv) gemm<T>(false, false, L, dh, L, T(1), pt, L, dout + off, W, T(0), dv + in, I);  // Pᵀ dO
      if (!dq && !dk) continue;
      gemm<T>(false, true, L, L, dh, T(1), v + in, I, dout + off, W, T(0), dst, L);  // dPᵀ = v dOᵀ
      row_dots(out + off, dout + off, L, dh, W, dot);
      softmax_backward_columns(pt, dst, dot, L, L, L);
      if (dk) gemm<T>(false, false, L, dh, L, scale, dst, L, q + in, I, T(0), dk + in, I);  // dSᵀ q/√d
      if (dq) gemm<T>(true, false, L, dh, L, scale, dst, L, k + in, I, T(0), dq + in, I);   // dS k/√d
    }
  });
}

template <typename T>
void attention_backward(const AttentionDesc& d, const T* q, const T* k, const T* v, const T* out, const T* dout,
                        T* dq, T* dk, T* dv) {
  const int64_t L = d.len, dh = d.head_dim, W = d.width(), I = d.qkv_ld();
  if (L == 0 || dh == 0 || (!dq && !dk && !dv)) return;
  if (L * L <= kWholePairTile) return attention_backward_whole_pairs(d, q, k, v, out, dout, dq, dk, dv);
  const T scale = static_cast<T>(1.0 / std::sqrt(double(dh)));
  const int64_t rows = rows_per_tile(L), blocks = (L + rows - 1) / rows, pairs = d.n * d.heads;
  // Groups of row blocks per pair: one unless the pairs alone could not keep kGroupThreads threads
  // busy. A count of the shape's, not of this run's threads: the partials' order of addition, and
  // so the bits of dk and dv, must not depend on the thread count.
  const int64_t wanted = std::min<int64_t>(blocks, std::max<int64_t>(1, (kGroupThreads + pairs - 1) / pairs));
  const int64_t blocks_per_group = (blocks + wanted - 1) / wanted;
  const int64_t groups = (blocks + blocks_per_group - 1) / blocks_per_group;  // none of them empty
  // Partials [pair, group, {dk, dv}, L, dh] when groups > 1.
  const int64_t partial_size = 2 * L * dh;
  T* partials = groups > 1 ? thread_scratch_of<T>(kPartialSlot, size_t(pairs * groups * partial_size)) : nullptr;
  parallel_for(pairs * groups, tile_cost(d, rows * blocks_per_group) * 2.5, [&](int64_t begin, int64_t end) {
    T* p = thread_scratch_of<T>(kScoreSlot, size_t(rows * L));
    T* ds = thread_scratch_of<T>(kGradSlot, size_t(rows * L));
    T* dot = thread_scratch_of<T>(kDotSlot, size_t(rows));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t pair = item / groups, group = item % groups;
      const int64_t in = input_offset(d, pair), off = output_offset(d, pair);
      // Where this item sums dk and dv over its query rows: the outputs, or its partials.
      T* dk_sum = dk ? dk + in : nullptr;
      T* dv_sum = dv ? dv + in : nullptr;
      int64_t sum_ld = I;
      if (groups > 1) {
        T* part = partials + item * partial_size;
        dk_sum = dk ? part : nullptr;
        dv_sum = dv ? part + L * dh : nullptr;
        sum_ld = dh;
      }
      const int64_t first = group * blocks_per_group, last = std::min(blocks, first + blocks_per_group);
      for (int64_t b = first; b < last; ++b) {
        const int64_t row0 = b * rows, r = std::min(rows, L - row0);
        const T beta = b == first ? T(0) : T(1);  // the first block overwrites the sums
        const T* q_rows = q + in + row0 * I;
        const T* dout_rows = dout + off + row0 * W;
        probabilities(r, L, dh, I, scale, q_rows, k + in, p);
        if (dv_sum) gemm<T>(true, false, L, dh, r, T(1), p, L, dout_rows, W, beta, dv_sum, sum_ld);  // Pᵀ dO
        if (!dq && !dk) continue;
        gemm<T>(false, true, r, L, dh, T(1), dout_rows, W, v + in, I, T(0), ds, L);  // dP = dO Vᵀ
        // dS = P ∘ (dP − rowsum(dO ∘ O)): the softmax backward, row by row.
        row_dots(out + off + row0 * W, dout_rows, r, dh, W, dot);
        softmax_backward_rows(p, ds, dot, r, L, L);
        if (dq) gemm<T>(false, false, r, dh, L, scale, ds, L, k + in, I, T(0), dq + in + row0 * I, I);  // dS K/√d
        if (dk_sum) gemm<T>(true, false, L, dh, r, scale, ds, L, q_rows, I, beta, dk_sum, sum_ld);     // dSᵀ Q/√d
      }
    }
  });
  if (groups == 1) return;
  for (int64_t pair = 0; pair < pairs; ++pair) {
    const int64_t in = input_offset(d, pair);
    for (int which = 0; which < 2; ++which) {
      T* target = which == 0 ? dk : dv;
      if (!target) continue;
      for (int64_t i = 0; i < L; ++i) {
        T* row = target + in + i * I;
        const T* part = partials + pair * groups * partial_size + which * L * dh + i * dh;
        for (int64_t c = 0; c < dh; ++c) row[c] = part[c];
        for (int64_t g = 1; g < groups; ++g)
          for (int64_t c = 0; c < dh; ++c) row[c] += part[g * partial_size + c];
      }
    }
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
