// See runtime.h. CUDA queries are compiled only with DIFFUSE_WITH_CUDA; cudaGetDeviceCount on a
// machine without a driver returns an error and leaves its argument untouched, so it starts at 0.
// DIFFUSE_CUDA_EMULATED (the -DDIFFUSE_CUDA=EMULATED build) is tested here and nowhere else in
// nn/, engine/ or tools/: `diffuse info` must say that its CUDA device is not a GPU.
#include "nn/runtime.h"

#include <cblas.h>
#include <omp.h>

#include "diffuse/error.h"

#if DIFFUSE_WITH_CUDA
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#endif

namespace diffuse {

namespace {

// cuDNN and cuBLAS encode versions as major·10000 + minor·100 + patch (cuDNN 9, cuBLAS 12+).
[[maybe_unused]] std::string dotted_version(int v) {
  return std::to_string(v / 10000) + "." + std::to_string(v % 10000 / 100) + "." + std::to_string(v % 100);
}

}  // namespace

bool built_with_cuda() {
#if DIFFUSE_WITH_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count() {
#if DIFFUSE_WITH_CUDA
  static int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return n;
  }();
  return count;
#else
  return 0;
#endif
}

std::vector<CudaDeviceInfo> cuda_devices() {
  std::vector<CudaDeviceInfo> out;
#if DIFFUSE_WITH_CUDA
  for (int i = 0; i < cuda_device_count(); ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    out.push_back({i, p.name, p.major, p.minor, p.totalGlobalMem, p.multiProcessorCount});
  }
#endif
  return out;
}

std::vector<std::pair<std::string, std::string>> build_info() {
  std::vector<std::pair<std::string, std::string>> info;
  info.emplace_back("version", DIFFUSE_VERSION);
  info.emplace_back("compiler", std::string("g++ ") + __VERSION__);
  info.emplace_back("cuda backend", built_with_cuda() ? "compiled" : "not compiled");
#if DIFFUSE_CUDA_EMULATED
  info.emplace_back("cuda device", "emulated (SIMT emulator + CPU cuBLAS/cuDNN), not a GPU");
#endif
#if DIFFUSE_WITH_CUDA
  int rt = 0, drv = 0;
  if (cudaRuntimeGetVersion(&rt) != cudaSuccess) rt = 0;
  if (cudaDriverGetVersion(&drv) != cudaSuccess) drv = 0;
  info.emplace_back("cuda runtime", rt ? std::to_string(rt / 1000) + "." + std::to_string(rt % 1000 / 10) : "unknown");
  info.emplace_back("cuda driver", drv ? std::to_string(drv / 1000) + "." + std::to_string(drv % 1000 / 10) : "none");
  info.emplace_back("cudnn", dotted_version(static_cast<int>(cudnnGetVersion())));
  info.emplace_back("cublas (headers)", dotted_version(CUBLAS_VERSION));
#endif
  info.emplace_back("openblas", openblas_get_config());
  info.emplace_back("openmp threads", std::to_string(omp_get_max_threads()));
  return info;
}

void require_cuda_device() {
  if (!built_with_cuda()) throw Error("no CUDA device: this build of diffuse has no CUDA backend");
  if (cuda_device_count() == 0) throw Error("no CUDA device: none was found (is the driver installed?)");
}

}  // namespace diffuse
