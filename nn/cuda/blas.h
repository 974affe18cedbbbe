// cuBLAS / cuBLASLt on the device: a row-major GEMM, the bias helpers every GEMM-shaped op needs,
// and the linear layer (y = x·wᵀ + b) forward and backward. Storage is f32 or bf16; bf16 always
// accumulates in f32. f32 math is exact-FMA by default (no TF32) so results match the CPU to
// ~1e-6; set_allow_tf32(true) trades that for tensor-core speed in cuBLAS and cuDNN alike.
#pragma once
#include <cstdint>

#include "kernels/linear.h"
#include "nn/tensor.h"

namespace diffuse::cuda {

// TF32 for f32 GEMMs and convolutions (cuBLAS compute type and cuDNN math type). Default off.
void set_allow_tf32(bool on);
bool allow_tf32();

// Row-major GEMM on device pointers: c[m, n] = alpha · op(a)[m, k] · op(b)[k, n] + beta · c,
// where op transposes when trans_* is set; lda/ldb/ldc are the row strides of the stored
// matrices in elements. dtype is f32 or bf16 for all three.
void gemm(DType dtype, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const void* a,
          int64_t lda, const void* b, int64_t ldb, float beta, void* c, int64_t ldc);

// y[r, c] += bias[c] for a contiguous row-major y [rows, cols] (a rank-1 GEMM update).
void add_row_bias(DType dtype, int64_t rows, int64_t cols, const void* bias, void* y);
// out[c] = Σ_r m[r, c] for a contiguous m [rows, cols] (a GEMV with a ones vector, f32 accumulation):
// the bias gradient of linear and conv2d.
void column_sum(DType dtype, int64_t rows, int64_t cols, const void* m, void* out);

// Linear layer on CUDA tensors; the shapes were checked by ops::linear. bias may be undefined.
// Forward uses cuBLASLt's bias epilogue when it has a kernel for the shape and alignment, else a
// GEMM followed by add_row_bias.
void linear_forward(const kernels::LinearDesc& d, const Tensor& x, const Tensor& w, const Tensor& bias,
                    const Tensor& y);
// dx = dy·w, dw = dyᵀ·x, dbias = column sums of dy; undefined outputs are not computed.
void linear_backward(const kernels::LinearDesc& d, const Tensor& x, const Tensor& w, const Tensor& dy,
                     const Tensor& dx, const Tensor& dw, const Tensor& dbias);

// For tests: false forces the GEMM + add_row_bias path of linear_forward. Default true.
void set_linear_use_lt(bool on);

}  // namespace diffuse::cuda
