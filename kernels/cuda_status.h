// The one CUDA-runtime status check, shared by kernel sources (through kernels/compat.cuh) and
// the host runtime (kernels/cuda/*.cpp, nn/cuda/): a failed call becomes one diffuse::Error naming
// the call, the file:line and CUDA's own name and description of the error (docs/design.md §10).
// Host-only; the cuBLAS and cuDNN checks build on it in kernels/cuda/library_status.h.
#pragma once
#include <cuda_runtime.h>

#include <string>

#include "diffuse/error.h"

namespace diffuse::kernels {

// Throws for any status but cudaSuccess. `what` is the call's source text (or a description
// such as "kernel launch"). The last-error slot is cleared so that later calls are not reported
// as failing; a sticky error (a kernel fault) poisons the context anyway and reappears.
inline void cuda_check(cudaError_t status, const char* what, const char* file, int line) {
  if (status == cudaSuccess) return;
  cudaGetLastError();
  throw Error(std::string("CUDA error ") + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ") in " +
              what + " at " + file + ":" + std::to_string(line));
}

}  // namespace diffuse::kernels

#define DIFFUSE_CUDA_CHECK(call) ::diffuse::kernels::cuda_check((call), #call, __FILE__, __LINE__)
