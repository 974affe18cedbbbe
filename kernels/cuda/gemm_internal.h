// What kernels/cuda/gemm.cpp shares with the other cuBLAS user, kernels/cuda/linear.cpp: the
// cuBLAS data and compute types of a storage type (the compute type follows set_allow_tf32) and
// the check that a size fits cuBLAS's 32-bit ints.
#pragma once
#include <cublas_v2.h>

#include <cstdint>

#include "kernels/gemm.h"

namespace diffuse::kernels::cuda {

cudaDataType_t cuda_type(DenseType t);
cublasComputeType_t compute_type(DenseType t);
int cublas_int(int64_t v, const char* what);

}  // namespace diffuse::kernels::cuda
