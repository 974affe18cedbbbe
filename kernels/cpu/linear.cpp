// CPU dense layer (see kernels/linear.h): the products are single GEMMs (kernels/gemm.h); in f32
// the bias is added by the GEMM as it stores its tiles, so y is written once; a residual is copied
// into y first and the GEMM adds to it (beta 1), so no add pass reads y back. The bias gradient is
// a column sum split over row blocks (fixed blocks, so results do not depend on the thread
// count; f32 sums runs of 8 rows in vector lanes, kernels/cpu/simd/elementwise.h), its partial
// sums in per-thread scratch (no allocation per call).
#include "kernels/linear.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd/elementwise.h"
#include "kernels/gemm.h"

namespace diffuse::kernels::cpu {

template <typename T>
void linear_forward(const LinearDesc& d, const T* x, const T* w, const T* bias, T* y, const T* residual) {
  const T beta = start_from_residual(d.rows * d.out, residual, y);
  if constexpr (sizeof(T) == sizeof(float)) {
    gemm_bias(false, true, d.rows, d.out, d.in, 1.0f, x, d.in, w, d.in, beta, bias, y, d.out);
  } else {
    if (bias) {
      for (int64_t r = 0; r < d.rows; ++r)
        for (int64_t o = 0; o < d.out; ++o) y[r * d.out + o] = (residual ? y[r * d.out + o] : T(0)) + bias[o];
    }
    gemm<T>(false, true, d.rows, d.out, d.in, T(1), x, d.in, w, d.in, bias || residual ? T(1) : T(0), y, d.out);
  }
}

template <typename T>
T start_from_residual(int64_t n, const T* residual, T* y) {
  if (!residual) return T(0);
  if (residual != y) std::memcpy(y, residual, size_t(n) * sizeof(T));
  return T(1);
}

template <typename T>
void linear_backward(const LinearDesc& d, const T* x, const T* w, const T* dy, T* dx, T* dw, T* dbias) {
  if (dx) gemm<T>(false, false, d.rows, d.in, d.out, T(1), dy, d.out, w, d.in, T(0), dx, d.in);
  if (dw) gemm<T>(true, false, d.out, d.in, d.rows, T(1), dy, d.out, x, d.in, T(0), dw, d.in);
  if (dbias) column_sum(d.rows, d.out, dy, dbias);
}

template <typename T>
void column_sum(int64_t rows, int64_t cols, const T* m, T* out) {
  // Row blocks of a fixed size; each block's partial sums go to its own slot, summed in order.
  constexpr int64_t kBlock = 1024;
  const int64_t blocks = std::max<int64_t>((rows + kBlock - 1) / kBlock, 1);
  double* partial = thread_scratch_of<double>(kColumnSumSlot, size_t(blocks * cols));
  parallel_for(blocks, double(kBlock * cols), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      double* acc = partial + b * cols;
      std::fill(acc, acc + cols, 0.0);
      const int64_t stop = std::min(rows, (b + 1) * kBlock);
      if constexpr (sizeof(T) == sizeof(float)) {
        simd::column_sum_rows(m + b * kBlock * cols, stop - b * kBlock, cols, acc);
      } else {
        for (int64_t r = b * kBlock; r < stop; ++r) {
          const T* row = m + r * cols;
          for (int64_t c = 0; c < cols; ++c) acc[c] += double(row[c]);  // vectorized by the compiler
        }
      }
    }
  });
  for (int64_t c = 0; c < cols; ++c) {
    double s = 0;
    for (int64_t b = 0; b < blocks; ++b) s += partial[b * cols + c];
    out[c] = static_cast<T>(s);
  }
}

#define DIFFUSE_INSTANTIATE(T)                                                                          \
  template void linear_forward<T>(const LinearDesc&, const T*, const T*, const T*, T*, const T*);      \
  template T start_from_residual<T>(int64_t, const T*, T*);                                            \
  template void linear_backward<T>(const LinearDesc&, const T*, const T*, const T*, T*, T*, T*);       \
  template void column_sum<T>(int64_t, int64_t, const T*, T*);
DIFFUSE_INSTANTIATE(float)
DIFFUSE_INSTANTIATE(double)
#undef DIFFUSE_INSTANTIATE

}  // namespace diffuse::kernels::cpu
