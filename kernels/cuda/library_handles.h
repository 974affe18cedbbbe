// The library handles every cuBLAS, cuBLASLt and cuDNN call of the GEMM, linear and conv2d
// families uses: one of each per process, bound to the stream of the first call (nn has one
// stream, so library work and our kernels run in program order), created on first use and never
// destroyed (tensors and handles may outlive the CUDA runtime at exit). cuBLAS and cuBLASLt share
// one workspace block from the caller's DeviceMemory; that is safe because everything on the one
// stream runs one call after another. Also the RAII scratch buffer these families borrow.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstddef>

#include "kernels/gemm.h"

namespace diffuse::kernels::cuda {

cublasHandle_t cublas_handle(const DeviceMemory& mem, Stream stream);
cublasLtHandle_t cublaslt_handle(Stream stream);
cudnnHandle_t cudnn_handle(Stream stream);

// The shared cuBLAS / cuBLASLt workspace (32 MiB, NVIDIA's recommendation for Hopper).
void* blas_workspace(const DeviceMemory& mem);
size_t blas_workspace_bytes();

// Device scratch from a DeviceMemory, returned to it when the buffer goes out of scope. Work
// queued on the stream that uses it stays safe: the block is only reused by later work on the
// same stream.
class ScratchBuffer {
 public:
  ScratchBuffer() = default;
  ScratchBuffer(const DeviceMemory& mem, size_t bytes) : mem_(&mem), ptr_(mem.allocate(bytes)), bytes_(bytes) {}
  ~ScratchBuffer() { release(); }
  ScratchBuffer(ScratchBuffer&& o) noexcept : mem_(o.mem_), ptr_(o.ptr_), bytes_(o.bytes_) {
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  ScratchBuffer& operator=(ScratchBuffer&& o) noexcept {
    if (this != &o) {
      release();
      mem_ = o.mem_;
      ptr_ = o.ptr_;
      bytes_ = o.bytes_;
      o.ptr_ = nullptr;
      o.bytes_ = 0;
    }
    return *this;
  }
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;

  void* data() const { return ptr_; }
  size_t size() const { return bytes_; }

 private:
  void release() {
    if (ptr_) mem_->release(ptr_, bytes_);
    ptr_ = nullptr;
    bytes_ = 0;
  }
  const DeviceMemory* mem_ = nullptr;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace diffuse::kernels::cuda
