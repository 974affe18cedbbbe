// What this build and this machine offer: build options, CUDA devices and library versions.
// cuda_device_count() is 0 in a build without CUDA and on a machine without a driver or GPU.
#pragma once
#include <string>
#include <vector>

namespace diffuse {

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  int sm_major = 0, sm_minor = 0;
  size_t memory_bytes = 0;
  int sm_count = 0;
};

bool built_with_cuda();
int cuda_device_count();
std::vector<CudaDeviceInfo> cuda_devices();
// "key: value" lines: version, compiler, CUDA runtime/driver, cuBLAS, cuDNN, OpenBLAS, threads.
std::vector<std::pair<std::string, std::string>> build_info();
// The CPU kernels' instruction-set path in use and where it came from, e.g. "avx512 (the best this
// CPU runs; ...)" (kernels/cpu_isa.h).
std::string cpu_kernel_path();
// Throws diffuse::Error (ErrorKind::usage) naming DIFFUSE_CPU_ISA when it asks for a path that is
// unknown or that this CPU cannot run. The CLI calls it before any work.
void check_cpu_kernel_environment();
// Throws diffuse::Error("no CUDA device ...", ErrorKind::device_unavailable) unless a CUDA device is usable.
void require_cuda_device();

}  // namespace diffuse
