// Status checks for host-side CUDA, cuBLAS and cuDNN calls: a failure becomes one diffuse::Error
// naming the call, the file:line and the library's own description (docs/design.md §10).
// DIFFUSE_CUDA_CHECK itself is defined once, in kernels/cuda_status.h, for kernels and host alike;
// these two serve the library-backed families (kernels/cuda/gemm.cpp, linear.cpp, conv2d.cpp).
#pragma once
#include <cublas_v2.h>
#include <cudnn.h>

#include <string>

#include "diffuse/error.h"
#include "kernels/cuda_status.h"

namespace diffuse::kernels::cuda_detail {

inline void cublas_check(cublasStatus_t status, const char* what, const char* file, int line) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  throw Error(std::string("cuBLAS error ") + cublasGetStatusName(status) + " (" + cublasGetStatusString(status) +
              ") in " + what + " at " + file + ":" + std::to_string(line));
}

inline void cudnn_check(cudnnStatus_t status, const char* what, const char* file, int line) {
  if (status == CUDNN_STATUS_SUCCESS) return;
  // cuDNN 9 keeps a more specific message for the latest failure in this thread (which may come
  // from an earlier, deliberately ignored probe, hence the label).
  char detail[512] = {0};
  cudnnGetLastErrorString(detail, sizeof(detail));
  std::string msg = std::string("cuDNN error ") + cudnnGetErrorString(status) + " in " + what + " at " + file + ":" +
                    std::to_string(line);
  if (detail[0]) msg += std::string(" (cuDNN's last message: ") + detail + ")";
  throw Error(msg);
}

}  // namespace diffuse::kernels::cuda_detail

// cuBLASLt calls return cublasStatus_t too and use the same check.
#define DIFFUSE_CUBLAS_CHECK(call) ::diffuse::kernels::cuda_detail::cublas_check((call), #call, __FILE__, __LINE__)
#define DIFFUSE_CUDNN_CHECK(call) ::diffuse::kernels::cuda_detail::cudnn_check((call), #call, __FILE__, __LINE__)
