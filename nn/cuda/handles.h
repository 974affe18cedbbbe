// The library handles every cuBLAS, cuBLASLt and cuDNN call uses: one of each per process, bound
// to current_stream() (so library work and our kernels run in program order), created on first
// use and never destroyed (tensors and handles may outlive the CUDA runtime at exit).
// cuBLAS and cuBLASLt share one workspace block from the caching allocator; that is safe because
// everything on the one stream runs one call after another.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstddef>

namespace diffuse::cuda {

cudaStream_t stream();
cublasHandle_t cublas_handle();
cublasLtHandle_t cublaslt_handle();
cudnnHandle_t cudnn_handle();

// The shared cuBLAS / cuBLASLt workspace (32 MiB, NVIDIA's recommendation for Hopper).
void* blas_workspace();
size_t blas_workspace_bytes();

}  // namespace diffuse::cuda
