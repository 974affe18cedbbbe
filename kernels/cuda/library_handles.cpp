// See library_handles.h. cublasSetStream resets cuBLAS's workspace to its internal pool, so the
// stream is set before our workspace; with a user workspace cuBLAS does no allocations of its own
// per call.
#include "kernels/cuda/library_handles.h"

#include "kernels/cuda/library_status.h"

namespace diffuse::kernels::cuda {

namespace {

constexpr size_t kBlasWorkspaceBytes = size_t(32) << 20;

// A static object rather than a leaked one, allocated in its constructor: that creates the
// caller's allocator first (nn's caching allocator), so this destructor runs before the
// allocator's exit teardown and the block is returned at exit (nn/cuda/caching_allocator.cpp).
// Nothing calls cuBLAS during static destruction.
ScratchBuffer& workspace_buffer(const DeviceMemory& mem) {
  static ScratchBuffer buffer(mem, kBlasWorkspaceBytes);
  return buffer;
}

}  // namespace

cublasHandle_t cublas_handle(const DeviceMemory& mem, Stream stream) {
  static cublasHandle_t handle = [&] {
    cublasHandle_t h = nullptr;
    DIFFUSE_CUBLAS_CHECK(cublasCreate(&h));
    DIFFUSE_CUBLAS_CHECK(cublasSetStream(h, static_cast<cudaStream_t>(stream)));
    ScratchBuffer& ws = workspace_buffer(mem);
    DIFFUSE_CUBLAS_CHECK(cublasSetWorkspace(h, ws.data(), ws.size()));
    // No TF32 unless a call asks for it through its compute type (kernels/gemm.h).
    DIFFUSE_CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
    DIFFUSE_CUBLAS_CHECK(cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST));
    return h;
  }();
  return handle;
}

cublasLtHandle_t cublaslt_handle(Stream) {
  static cublasLtHandle_t handle = [] {
    cublasLtHandle_t h = nullptr;
    DIFFUSE_CUBLAS_CHECK(cublasLtCreate(&h));
    return h;
  }();
  return handle;
}

cudnnHandle_t cudnn_handle(Stream stream) {
  static cudnnHandle_t handle = [&] {
    cudnnHandle_t h = nullptr;
    DIFFUSE_CUDNN_CHECK(cudnnCreate(&h));
    DIFFUSE_CUDNN_CHECK(cudnnSetStream(h, static_cast<cudaStream_t>(stream)));
    return h;
  }();
  return handle;
}

void* blas_workspace(const DeviceMemory& mem) { return workspace_buffer(mem).data(); }
size_t blas_workspace_bytes() { return kBlasWorkspaceBytes; }

}  // namespace diffuse::kernels::cuda
