// Dense layer kernels: y[rows, out] = x[rows, in] · w[out, in]ᵀ + bias, and its backward. Also
// the column sum that is the bias gradient of every GEMM-shaped op (linear, conv2d).
// The CPU path is one GEMM per product (kernels/gemm.h; f32 adds the bias as it stores y); rows is
// everything before the last dim. The
// CUDA path (kernels/cuda/linear.cpp) is cuBLAS / cuBLASLt.
#pragma once
#include <cstdint>

#include "kernels/common.h"
#include "kernels/gemm.h"

namespace diffuse::kernels {

struct LinearDesc {
  int64_t rows = 0;  // product of x's leading dims
  int64_t in = 0;
  int64_t out = 0;
};

namespace cpu {
// bias may be null. residual [rows, out] (may be null, may be y itself) is added to y in the same
// pass: y = x·wᵀ + bias + residual.
template <typename T>
void linear_forward(const LinearDesc& d, const T* x, const T* w, const T* bias, T* y, const T* residual = nullptr);
// The residual's start for the GEMM-shaped forwards: copies residual[0, n) into y (unless it is y)
// and returns the GEMM's beta: 1 with a residual (the store adds to it), 0 without.
template <typename T>
T start_from_residual(int64_t n, const T* residual, T* y);
// Any of dx [rows, in], dw [out, in], dbias [out] may be null (not wanted); they are overwritten.
template <typename T>
void linear_backward(const LinearDesc& d, const T* x, const T* w, const T* dy, T* dx, T* dw, T* dbias);
// out[c] = sum over r of m[r, c] for m [rows, cols]; f64 accumulation, deterministic.
template <typename T>
void column_sum(int64_t rows, int64_t cols, const T* m, T* out);
}  // namespace cpu

namespace cuda {
// Device pointers in `type` storage; bias may be null. Forward uses cuBLASLt's bias epilogue when
// it has a kernel for the shape and alignment, else a GEMM followed by add_row_bias. With a
// residual [rows, out] (may be null), y = x·wᵀ + bias + residual: cuBLASLt's C operand (beta 1), or
// on the fallback the GEMM, then one add_bias_residual pass (kernels/elementwise.h) that adds both.
void linear_forward(const LinearDesc& d, DenseType type, const void* x, const void* w, const void* bias, void* y,
                    const DeviceMemory& mem, Stream stream, const void* residual = nullptr);
// dx = dy·w, dw = dyᵀ·x, dbias = column sums of dy; null outputs are not computed.
void linear_backward(const LinearDesc& d, DenseType type, const void* x, const void* w, const void* dy, void* dx,
                     void* dw, void* dbias, const DeviceMemory& mem, Stream stream);
// For tests: false forces the GEMM + add_row_bias path of linear_forward. Default true.
void set_linear_use_lt(bool on);
}  // namespace cuda

}  // namespace diffuse::kernels
