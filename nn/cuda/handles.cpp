// See handles.h. cublasSetStream resets cuBLAS's workspace to its internal pool, so the stream is
// set before our workspace; with a user workspace cuBLAS does no allocations of its own per call.
#include "nn/cuda/handles.h"

#include "nn/cuda/caching_allocator.h"
#include "nn/cuda/check.h"
#include "nn/device_context.h"

namespace diffuse::cuda {

namespace {

constexpr size_t kBlasWorkspaceBytes = size_t(32) << 20;

// A static object rather than a leaked one: its construction creates the caching allocator first,
// so its destructor runs before the allocator's exit teardown and the block is returned at exit
// (caching_allocator.cpp). Nothing calls cuBLAS during static destruction.
DeviceBuffer& workspace_buffer() {
  static DeviceBuffer buffer(kBlasWorkspaceBytes);
  return buffer;
}

}  // namespace

cudaStream_t stream() { return static_cast<cudaStream_t>(current_stream()); }

cublasHandle_t cublas_handle() {
  static cublasHandle_t handle = [] {
    cudaStream_t s = stream();  // also checks that a device exists
    cublasHandle_t h = nullptr;
    DIFFUSE_CUBLAS_CHECK(cublasCreate(&h));
    DIFFUSE_CUBLAS_CHECK(cublasSetStream(h, s));
    DIFFUSE_CUBLAS_CHECK(cublasSetWorkspace(h, workspace_buffer().data(), workspace_buffer().size()));
    // No TF32 unless a call asks for it through its compute type (nn/cuda/blas.h).
    DIFFUSE_CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
    DIFFUSE_CUBLAS_CHECK(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST));
    return h;
  }();
  return handle;
}

cublasLtHandle_t cublaslt_handle() {
  static cublasLtHandle_t handle = [] {
    stream();
    cublasLtHandle_t h = nullptr;
    DIFFUSE_CUBLAS_CHECK(cublasLtCreate(&h));
    return h;
  }();
  return handle;
}

cudnnHandle_t cudnn_handle() {
  static cudnnHandle_t handle = [] {
    cudaStream_t s = stream();
    cudnnHandle_t h = nullptr;
    DIFFUSE_CUDNN_CHECK(cudnnCreate(&h));
    DIFFUSE_CUDNN_CHECK(cudnnSetStream(h, s));
    return h;
  }();
  return handle;
}

void* blas_workspace() { return workspace_buffer().data(); }
size_t blas_workspace_bytes() { return workspace_buffer().size(); }

}  // namespace diffuse::cuda
