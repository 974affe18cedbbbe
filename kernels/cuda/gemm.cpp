// The CUDA GEMM family behind kernels/gemm.h: cuBLAS on device pointers. Row-major matrices reach
// column-major cuBLAS as their transposes: row-major c = op(a)·op(b) is column-major
// cᵀ = op(b)ᵀ·op(a)ᵀ, i.e. the same call with a and b (and m and n) swapped and the transpose
// flags unchanged. The bias helpers are GEMMs against a ones vector kept for the process; with a
// residual the output epilogue is elementwise.cu's add_bias_residual instead (one pass).
#include <algorithm>
#include <atomic>
#include <climits>
#include <string>
#include <vector>

#include "kernels/bf16.h"
#include "kernels/cuda/gemm_internal.h"
#include "kernels/cuda/library_handles.h"
#include "kernels/cuda/library_status.h"
#include "kernels/elementwise.h"

namespace diffuse::kernels::cuda {

namespace {

std::atomic<bool> g_allow_tf32{false};

// A device vector of at least n ones in `type`, grown by doubling and kept for the process.
// Replacing it is safe while queued work still reads the old one: the old block is only reused by
// work queued after it. Each vector is a static object allocated in its constructor, after the
// caller's allocator exists, so its destructor returns the block before that allocator's exit
// teardown frees its cache (nn/cuda/caching_allocator.cpp).
class Ones {
 public:
  Ones(DenseType type, int64_t n, const DeviceMemory& mem, Stream stream) : type_(type) { grow(n, mem, stream); }
  const void* at_least(int64_t n, const DeviceMemory& mem, Stream stream) {
    if (count_ < n) grow(n, mem, stream);
    return buffer_.data();
  }

 private:
  void grow(int64_t n, const DeviceMemory& mem, Stream stream) {
    const int64_t count = std::max<int64_t>({n, 2 * count_, 4096});
    const size_t bytes = static_cast<size_t>(count) * dense_type_size(type_);
    std::vector<float> host_f32;
    std::vector<uint16_t> host_bf16;
    const void* host = nullptr;
    if (type_ == DenseType::f32) {
      host_f32.assign(static_cast<size_t>(count), 1.0f);
      host = host_f32.data();
    } else {
      host_bf16.assign(static_cast<size_t>(count), float_to_bf16(1.0f));
      host = host_bf16.data();
    }
    ScratchBuffer buffer(mem, bytes);
    const cudaStream_t s = static_cast<cudaStream_t>(stream);
    DIFFUSE_CUDA_CHECK(cudaMemcpyAsync(buffer.data(), host, bytes, cudaMemcpyHostToDevice, s));
    DIFFUSE_CUDA_CHECK(cudaStreamSynchronize(s));  // the host vector goes out of scope next
    buffer_ = std::move(buffer);
    count_ = count;
  }
  DenseType type_;
  ScratchBuffer buffer_;
  int64_t count_ = 0;
};

const void* ones(DenseType type, int64_t n, const DeviceMemory& mem, Stream stream) {
  if (type == DenseType::f32) {
    static Ones f32(DenseType::f32, n, mem, stream);
    return f32.at_least(n, mem, stream);
  }
  static Ones bf16(DenseType::bf16, n, mem, stream);
  return bf16.at_least(n, mem, stream);
}

}  // namespace

cudaDataType_t cuda_type(DenseType t) { return t == DenseType::f32 ? CUDA_R_32F : CUDA_R_16BF; }

cublasComputeType_t compute_type(DenseType t) {
  return t == DenseType::f32 && g_allow_tf32.load() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
}

int cublas_int(int64_t v, const char* what) {
  if (v < 0 || v > INT_MAX)
    throw Error(std::string("cuBLAS: ") + what + " = " + std::to_string(v) + " does not fit cuBLAS's 32-bit sizes");
  return static_cast<int>(v);
}

void set_allow_tf32(bool on) { g_allow_tf32.store(on); }
bool allow_tf32() { return g_allow_tf32.load(); }

void gemm(DenseType type, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const void* a,
          int64_t lda, const void* b, int64_t ldb, float beta, void* c, int64_t ldc, const DeviceMemory& mem,
          Stream stream) {
  const cudaDataType_t t = cuda_type(type);
  if (m == 0 || n == 0) return;
  if (k == 0) {
    // An empty sum: only the overwrite the ops need (beta = 0, contiguous c) is supported.
    if (beta != 0.0f || ldc != n) throw Error("cuBLAS gemm: k = 0 needs beta = 0 and a contiguous c");
    DIFFUSE_CUDA_CHECK(cudaMemsetAsync(c, 0, static_cast<size_t>(m * n) * dense_type_size(type),
                                       static_cast<cudaStream_t>(stream)));
    return;
  }
  DIFFUSE_CUBLAS_CHECK(cublasGemmEx(cublas_handle(mem, stream), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                    trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, cublas_int(n, "n"), cublas_int(m, "m"),
                                    cublas_int(k, "k"), &alpha, b, t, cublas_int(ldb, "ldb"), a, t,
                                    cublas_int(lda, "lda"), &beta, c, t, cublas_int(ldc, "ldc"), compute_type(type),
                                    CUBLAS_GEMM_DEFAULT));
}

void add_row_bias(DenseType type, int64_t rows, int64_t cols, const void* bias, void* y, const DeviceMemory& mem,
                  Stream stream) {
  if (rows == 0 || cols == 0) return;
  // y[rows, cols] += ones[rows, 1] · bias[1, cols]
  gemm(type, false, false, rows, cols, 1, 1.0f, ones(type, rows, mem, stream), 1, bias, cols, 1.0f, y, cols, mem,
       stream);
}

void add_bias_and_residual(DenseType type, int64_t rows, int64_t cols, const void* bias, const void* residual,
                           void* y, const DeviceMemory& mem, Stream stream) {
  if (!residual) {
    if (bias) add_row_bias(type, rows, cols, bias, y, mem, stream);
  } else if (type == DenseType::f32) {
    add_bias_residual(rows, cols, static_cast<const float*>(bias), static_cast<const float*>(residual),
                      static_cast<float*>(y), stream);
  } else {
    add_bias_residual(rows, cols, static_cast<const uint16_t*>(bias), static_cast<const uint16_t*>(residual),
                      static_cast<uint16_t*>(y), stream);
  }
}

void column_sum(DenseType type, int64_t rows, int64_t cols, const void* m, void* out, const DeviceMemory& mem,
                Stream stream) {
  if (cols == 0) return;
  // out[1, cols] = ones[1, rows] · m[rows, cols]  (rows = 0 gives zeros)
  gemm(type, false, false, 1, cols, rows, 1.0f, ones(type, std::max<int64_t>(rows, 1), mem, stream), rows, m, cols,
       0.0f, out, cols, mem, stream);
}

}  // namespace diffuse::kernels::cuda
