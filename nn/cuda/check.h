// Status checks for host-side CUDA, cuBLAS and cuDNN calls: a failure becomes one diffuse::Error
// naming the call, the file:line and the library's own description (DESIGN.md §10).
#pragma once
#include <cuda_runtime.h>

#include <string>

#include "diffuse/error.h"

namespace diffuse::cuda_detail {

[[noreturn]] inline void throw_cuda(cudaError_t e, const char* call, const char* file, int line) {
  cudaGetLastError();  // clear the sticky-free error state so later calls are not poisoned
  throw Error(std::string("CUDA error ") + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ") in " + call +
              " at " + file + ":" + std::to_string(line));
}

}  // namespace diffuse::cuda_detail

#define DIFFUSE_CUDA_CHECK(call)                                                                 \
  do {                                                                                           \
    cudaError_t diffuse_status_ = (call);                                                        \
    if (diffuse_status_ != cudaSuccess)                                                          \
      ::diffuse::cuda_detail::throw_cuda(diffuse_status_, #call, __FILE__, __LINE__);            \
  } while (0)
