// The GEMM that the emulated cuBLAS (cublas.cpp) and cuBLASLt (cublaslt.cpp) run when queued work
// executes, and the small helpers both libraries' argument checks share. One implementation, so
// the two APIs cannot disagree on rounding: operands are read in their stored type (f32 or bf16),
// optionally rounded to TF32, multiplied with f32 accumulation through OpenBLAS (column-major, as
// cuBLAS), and the result is combined with beta·C and the bias in f32 and rounded once to the
// output type (bf16: round-to-nearest-even). C is not read when beta == 0, so NaN-poisoned output
// buffers stay harmless exactly as cuBLAS documents.
// Built only with -DDIFFUSE_CUDA=EMULATED; nothing outside kernels/emulated_device/ includes it.
#pragma once
#include <cublas_api.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace diffuse::emulated_device::blas {

// One column-major operand as stored: `rows` × `cols` elements, column stride `ld` (elements).
struct Matrix {
  const void* data = nullptr;
  cudaDataType_t type = CUDA_R_32F;
  int64_t rows = 0, cols = 0, ld = 0;
};

// D[m×n] = alpha · op(A)[m×k] · op(B)[k×n] + beta · C[m×n] (+ bias[m] added to every column).
// A and B share a type; C, D and the bias share the output type. `c.data` is not read when
// beta == 0. `scratch`, when not null, is device memory for at least m·n floats through which the
// f32 sums pass (cuBLASLt's workspace). Runs on the host thread inside queued work, where device
// memory is accessible; OpenBLAS only ever sees host copies.
struct GemmCall {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  bool tf32 = false;  // round A and B to TF32 (10 mantissa bits) before multiplying
  float alpha = 1.0f, beta = 0.0f;
  Matrix a, b, c, d;
  const void* bias = nullptr;
  float* scratch = nullptr;
};
void run_gemm(const GemmCall& call);

// Byte offsets between consecutive entries of a strided batch, per operand.
struct BatchStrides {
  int64_t a = 0, b = 0, c = 0, d = 0, bias = 0;
};
// Queues `batch` GEMMs on `stream` (named `what` in reports): entry i is `call` with each operand
// (C and the bias only when set) moved by i strides. With scalars in device memory (pointer mode
// DEVICE: alpha_device and beta_device set), alpha and beta are read when the work runs.
cudaError_t enqueue_batched_gemm(cudaStream_t stream, const char* what, const GemmCall& call, int batch,
                                 const BatchStrides& strides, const float* alpha_device, const float* beta_device);

// Bytes of a column-major rows × cols matrix with column stride ld, from its first element to
// one past its last (0 when it has no elements).
size_t extent_bytes(int64_t rows, int64_t cols, int64_t ld, size_t element_size);
// True when [p, p + p_bytes) and [q, q + q_bytes) share a byte. An output whose span overlaps an
// input's is refused: on a GPU other blocks would read elements already overwritten, and the
// result would depend on scheduling (the emulation, computing into scratch first, would hide it).
bool spans_overlap(const void* p, size_t p_bytes, const void* q, size_t q_bytes);
// 4 for CUDA_R_32F, 2 for CUDA_R_16BF, 0 for types the emulation does not compute in.
size_t element_size(cudaDataType_t t);
const char* type_name(cudaDataType_t t);
// Largest power of two (capped at 256) dividing the address; 256 for null.
uint32_t alignment_of(const void* p);
// x rounded to TF32 (sign, 8-bit exponent, 10-bit mantissa; round to nearest, ties away from
// zero, as the cvt.rna.tf32.f32 instruction does). Inf and NaN pass through.
float round_to_tf32(float x);

// Prints why a call fails ("diffuse emulated cuBLAS: cublasGemmEx returns
// CUBLAS_STATUS_INVALID_VALUE: lda = 2 < max(1, m = 3)") on stderr and returns `status`. A real
// library says nothing; the emulation names the broken rule so the misuse is found at once.
cublasStatus_t fail(const char* function, cublasStatus_t status, const std::string& why);

const char* status_name(cublasStatus_t status);
const char* status_string(cublasStatus_t status);

}  // namespace diffuse::emulated_device::blas
