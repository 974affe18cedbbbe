// Dense layer kernels: y[rows, out] = x[rows, in] · w[out, in]ᵀ + bias, and its backward. Also
// the column sum that is the bias gradient of every GEMM-shaped op (linear, conv2d).
// The CPU path is one OpenBLAS GEMM per product; rows is everything before the last dim.
#pragma once
#include <cstdint>

#include "kernels/common.h"

namespace diffuse::kernels {

struct LinearDesc {
  int64_t rows = 0;  // product of x's leading dims
  int64_t in = 0;
  int64_t out = 0;
};

namespace cpu {
// bias may be null.
template <typename T>
void linear_forward(const LinearDesc& d, const T* x, const T* w, const T* bias, T* y);
// Any of dx [rows, in], dw [out, in], dbias [out] may be null (not wanted); they are overwritten.
template <typename T>
void linear_backward(const LinearDesc& d, const T* x, const T* w, const T* dy, T* dx, T* dw, T* dbias);
// out[c] = sum over r of m[r, c] for m [rows, cols]; f64 accumulation, deterministic.
template <typename T>
void column_sum(int64_t rows, int64_t cols, const T* m, T* out);
}  // namespace cpu

}  // namespace diffuse::kernels
