// The CUDA build's half of nn/runtime.h and of the device-runtime hooks in nn/dispatch.h: device
// queries, library versions for `diffuse info`, cuDNN's algorithm choice (set_conv_search), and the
// caching allocator as the device allocator. cudaGetDeviceCount on a machine without a driver
// returns an error and leaves its argument untouched, so the count starts at 0. DIFFUSE_CUDA_EMULATED (the -DDIFFUSE_CUDA=EMULATED
// build) is tested here so that `diffuse info` says its CUDA device is not a GPU (outside kernels/
// and tests/ only nn/collective_nccl.cpp, which waits on the emulated device differently, and
// tools/cmd_info.cpp, which says who serves NCCL, test it too).
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include "kernels/conv2d.h"
#include "nn/cuda/caching_allocator.h"
#include "nn/dispatch.h"
#include "nn/runtime.h"

namespace diffuse {

namespace {

// cuDNN and cuBLAS encode versions as major·10000 + minor·100 + patch (cuDNN 9, cuBLAS 12+).
std::string dotted_version(int v) {
  return std::to_string(v / 10000) + "." + std::to_string(v % 10000 / 100) + "." + std::to_string(v % 100);
}

}  // namespace

bool built_with_cuda() { return true; }

int cuda_device_count() {
  static int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return n;
  }();
  return count;
}

std::vector<CudaDeviceInfo> cuda_devices() {
  std::vector<CudaDeviceInfo> out;
  for (int i = 0; i < cuda_device_count(); ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    out.push_back({i, p.name, p.major, p.minor, p.totalGlobalMem, p.multiProcessorCount});
  }
  return out;
}

namespace dispatch {

Allocator* cuda_device_allocator_if_available() {
  return cuda_device_count() > 0 ? &cuda::caching_allocator() : nullptr;
}

void set_cuda_conv_search(bool heuristic) {
  kernels::cuda::set_conv_search(heuristic ? kernels::cuda::ConvSearch::heuristic : kernels::cuda::ConvSearch::timed);
}
bool cuda_conv_search_heuristic() { return kernels::cuda::conv_search() == kernels::cuda::ConvSearch::heuristic; }

void append_cuda_build_info(std::vector<std::pair<std::string, std::string>>& info) {
#if DIFFUSE_CUDA_EMULATED
  info.emplace_back("cuda device", "emulated (SIMT emulator + CPU cuBLAS/cuDNN), not a GPU");
#endif
  int rt = 0, drv = 0;
  if (cudaRuntimeGetVersion(&rt) != cudaSuccess) rt = 0;
  if (cudaDriverGetVersion(&drv) != cudaSuccess) drv = 0;
  info.emplace_back("cuda runtime", rt ? std::to_string(rt / 1000) + "." + std::to_string(rt % 1000 / 10) : "unknown");
  info.emplace_back("cuda driver", drv ? std::to_string(drv / 1000) + "." + std::to_string(drv % 1000 / 10) : "none");
  info.emplace_back("cudnn", dotted_version(static_cast<int>(cudnnGetVersion())));
  info.emplace_back("cublas (headers)", dotted_version(CUBLAS_VERSION));
}

}  // namespace dispatch

}  // namespace diffuse
