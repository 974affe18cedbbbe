// The GEMM family. CPU: a typed row-major GEMM for the CPU kernels of conv2d, linear and
// attention — f32 on the project's own packed GEMM (kernels/cpu/gemm_blocked.h, per-path
// micro-kernels in kernels/cpu/simd/gemm_micro.h), f64 (gradient checks) on OpenBLAS's dgemm —
// plus the per-thread scratch those kernels keep their score matrices in. Leading dimensions are
// explicit, so a head of a [N, L, heads*d] tensor is an operand in place (ld = heads*d). f64
// dimensions must fit OpenBLAS's 32-bit ints; anything larger is an Error. CUDA (kernels/cuda/gemm.cpp): the same row-major GEMM over cuBLAS
// in f32 or bf16 storage (f32 accumulation), the bias helpers of every GEMM-shaped op, the TF32
// switch, and the device-memory provider that the library-backed launchers (GEMM, linear,
// conv2d) take their scratch from.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/common.h"

namespace diffuse::kernels {

// Storage type of a library-backed device operand (cuBLAS, cuDNN); compute is f32 for both.
enum class DenseType { f32, bf16 };
inline size_t dense_type_size(DenseType t) { return t == DenseType::f32 ? 4 : 2; }
inline const char* dense_type_name(DenseType t) { return t == DenseType::f32 ? "f32" : "bf16"; }

}  // namespace diffuse::kernels

namespace diffuse::kernels::cpu {

// c[m, n] = alpha * op(a) · op(b) + beta * c, all row-major; op(a) is [m, k], op(b) is [k, n].
// trans_a: a is stored [k, m]; trans_b: b is stored [n, k]. Empty dims are fine (k == 0 scales c
// by beta; beta == 0 overwrites c, NaN included). Threads: a large GEMM called outside a parallel
// region (OpenMP's or the pool's, kernels/cpu/parallel.h) runs as one region over blocks of c, one
// inside runs serially; the result does not depend
// on the thread count. The first f64 call pins OpenBLAS to one thread for the whole process.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
          const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

// The f32 GEMM with a bias row added in the same pass: c = alpha · op(a) · op(b) + beta · c + bias[j]
// (bias [n], may be null).
void gemm_bias(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
               int64_t lda, const float* b, int64_t ldb, float beta, const float* bias, float* c, int64_t ldc);

// A grow-only buffer of at least `bytes`, private to the calling thread and to `slot`, 64-byte
// aligned, uninitialised. Valid until the same thread asks for the same slot again. Kept for the
// thread's life so repeated calls do not fault fresh pages in every step. Slots 0..3 are the
// kernels' own (attention's tiles; GroupNorm's block scratch and per-channel sums; the partial
// sums of sum and sum_of_squares; the f64 conv's columns); the GEMM packs its operands in the
// slots below, so a caller's slot 0..3 buffer may be a GEMM operand.
void* thread_scratch(int slot, size_t bytes);
constexpr int kGemmPackASlot = 4;
constexpr int kGemmPackBSlot = 5;
constexpr int kGemmSliceSlot = 6;  // partial products of a GEMM whose reduction is sliced
constexpr int kColumnSumSlot = 7;  // the partial sums of column_sum (kernels/linear.h)
constexpr int kScratchSlots = 8;

template <typename T>
T* thread_scratch_of(int slot, size_t count) {
  return static_cast<T*>(thread_scratch(slot, count * sizeof(T)));
}

}  // namespace diffuse::kernels::cpu

namespace diffuse::kernels::cuda {

// Where the library-backed launchers get device memory: the caller's allocator (nn passes its
// caching allocator, nn/cuda/caching_allocator.h), so kernels/ never calls cudaMalloc for a
// workspace. allocate throws on failure and returns null for 0 bytes; trim hands cached blocks
// back to the driver before a large one-off cudaMalloc (cuDNN's algorithm search).
struct DeviceMemory {
  void* (*allocate)(size_t bytes) = nullptr;
  void (*release)(void* ptr, size_t bytes) = nullptr;
  void (*trim)() = nullptr;
};

// TF32 for f32 GEMMs and convolutions (cuBLAS compute type and cuDNN math type). Default off:
// f32 math is exact FMA so results match the CPU to ~1e-6.
void set_allow_tf32(bool on);
bool allow_tf32();

// Row-major GEMM on device pointers: c[m, n] = alpha · op(a)[m, k] · op(b)[k, n] + beta · c,
// where op transposes when trans_* is set; lda/ldb/ldc are the row strides of the stored
// matrices in elements. All three in `type` storage.
void gemm(DenseType type, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const void* a,
          int64_t lda, const void* b, int64_t ldb, float beta, void* c, int64_t ldc, const DeviceMemory& mem,
          Stream stream);
// y[r, c] += bias[c] for a contiguous row-major y [rows, cols] (a rank-1 GEMM update).
void add_row_bias(DenseType type, int64_t rows, int64_t cols, const void* bias, void* y, const DeviceMemory& mem,
                  Stream stream);
// The output epilogue of the GEMM-shaped ops (conv2d, linear): y += bias (add_row_bias) or, with a
// residual [rows, cols], y += bias + residual in one pass (add_bias_residual, kernels/elementwise.h).
// Either may be null.
void add_bias_and_residual(DenseType type, int64_t rows, int64_t cols, const void* bias, const void* residual,
                           void* y, const DeviceMemory& mem, Stream stream);
// out[c] = Σ_r m[r, c] for a contiguous m [rows, cols] (a GEMV with a ones vector, f32
// accumulation): the bias gradient of linear and conv2d.
void column_sum(DenseType type, int64_t rows, int64_t cols, const void* m, void* out, const DeviceMemory& mem,
                Stream stream);

}  // namespace diffuse::kernels::cuda
