// CUDA build of device_context.h (the device seam's stream, nn/dispatch.h): one non-blocking stream, created on first use and kept for the
// life of the process (kernels, cuBLAS and cuDNN all queue on it, so their order is the program
// order without extra synchronisation).
#include <cuda_runtime.h>

#include "kernels/cuda_status.h"
#include "nn/device_context.h"
#include "nn/runtime.h"

namespace diffuse {

kernels::Stream current_stream() {
  static cudaStream_t stream = [] {
    require_cuda_device();
    cudaStream_t s = nullptr;
    DIFFUSE_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return s;
  }();
  return stream;
}

void synchronize_device() { DIFFUSE_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(current_stream()))); }

}  // namespace diffuse
