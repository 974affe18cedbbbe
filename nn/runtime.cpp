// See runtime.h. The CUDA queries (built_with_cuda, cuda_device_count, cuda_devices) and the CUDA
// lines of build_info come from the device seam (nn/dispatch.h): nn/cuda/runtime.cpp in a CUDA
// build, nn/no_cuda/backend.cpp otherwise.
#include "nn/runtime.h"

#include <cblas.h>
#include <omp.h>

#include <cstdlib>

#include "diffuse/error.h"
#include "kernels/cpu_isa.h"
#include "nn/dispatch.h"

namespace diffuse {

std::vector<std::pair<std::string, std::string>> build_info() {
  std::vector<std::pair<std::string, std::string>> info;
  info.emplace_back("version", DIFFUSE_VERSION);
  info.emplace_back("compiler", std::string("g++ ") + __VERSION__);
  info.emplace_back("cuda backend", built_with_cuda() ? "compiled" : "not compiled");
  dispatch::append_cuda_build_info(info);
  info.emplace_back("cpu kernels", cpu_kernel_path());
  info.emplace_back("openblas", openblas_get_config());
  info.emplace_back("openmp threads", std::to_string(omp_get_max_threads()));
  const char* wait_policy = std::getenv("OMP_WAIT_POLICY");
  info.emplace_back("openmp wait policy", wait_policy ? wait_policy : "unset (idle threads spin before they sleep)");
  return info;
}

std::string cpu_kernel_path() {
  using namespace kernels::cpu;
  std::string path = cpu_isa_name(active_cpu_isa());
  const std::string origin = cpu_isa_origin();
  path += origin == "detected" ? " (the best this CPU runs; DIFFUSE_CPU_ISA=baseline|avx2|avx512 forces one)"
                               : " (from " + origin + "; this CPU runs up to " + cpu_isa_name(detected_cpu_isa()) + ")";
  return path;
}

void check_cpu_kernel_environment() { kernels::cpu::check_cpu_isa_environment(); }

void require_cuda_device() {
  if (!built_with_cuda())
    throw Error("no CUDA device: this build of diffuse has no CUDA backend", ErrorKind::device_unavailable);
  if (cuda_device_count() == 0)
    throw Error("no CUDA device: none was found (is the driver installed?)", ErrorKind::device_unavailable);
}

}  // namespace diffuse
