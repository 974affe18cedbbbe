// See runtime.h. The CUDA queries (built_with_cuda, cuda_device_count, cuda_devices) and the CUDA
// lines of build_info come from the device seam (nn/dispatch.h): nn/cuda/runtime.cpp in a CUDA
// build, nn/no_cuda/backend.cpp otherwise.
#include "nn/runtime.h"

#include <cblas.h>
#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>

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
  info.emplace_back("cpu threads", std::to_string(cpu_threads()) + " (" + cpu_threads_choice() + ")");
  const char* wait_policy = std::getenv("OMP_WAIT_POLICY");
  info.emplace_back("openmp wait policy", wait_policy ? wait_policy : "unset (idle threads spin before they sleep)");
  return info;
}

std::string cpu_model_name() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) != 0) continue;
    const size_t colon = line.find(':');
    const size_t start = colon == std::string::npos ? std::string::npos : line.find_first_not_of(" \t", colon + 1);
    if (start != std::string::npos) return line.substr(start);
  }
  return "unknown CPU";
}

std::string cpu_kernel_path() {
  using namespace kernels::cpu;
  std::string path = cpu_isa_in_use();
  const std::string origin = cpu_isa_origin();
  path += origin == "detected" ? " (the best this CPU runs; DIFFUSE_CPU_ISA=baseline|avx2|avx512 forces one)"
                               : " (from " + origin + "; this CPU runs up to " + cpu_isa_name(detected_cpu_isa()) + ")";
  return path;
}

void check_cpu_kernel_environment() { kernels::cpu::check_cpu_isa_environment(); }

std::string cpu_isa_in_use() { return kernels::cpu::cpu_isa_name(kernels::cpu::active_cpu_isa()); }

namespace {

// The count set_cpu_threads asked for; 0 until then (the default).
int g_requested_threads = 0;

// OMP_NUM_THREADS as a positive integer; 0 when unset or anything else (a list such as "4,2" is
// libgomp's nested form, which diffuse does not use).
int omp_num_threads_env() {
  const char* text = std::getenv("OMP_NUM_THREADS");
  if (text == nullptr || *text == '\0') return 0;
  char* end = nullptr;
  const long n = std::strtol(text, &end, 10);
  return *end == '\0' && n > 0 && n <= 4096 ? static_cast<int>(n) : 0;
}

int affinity_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return std::max(1, omp_get_num_procs());
  return std::max(1, CPU_COUNT(&set));
}

}  // namespace

int default_cpu_threads() {
  const int from_env = omp_num_threads_env();
  return from_env > 0 ? from_env : affinity_cpus();
}

void set_cpu_threads(int threads) {
  if (threads < 0) throw Error("threads must be >= 0, got " + std::to_string(threads), ErrorKind::usage);
  g_requested_threads = threads;
  omp_set_num_threads(cpu_threads());
}

void set_conv_search(const std::string& mode) {
  if (mode != "timed" && mode != "heuristic")
    throw Error("conv search must be timed or heuristic, got '" + mode + "'", ErrorKind::usage);
  dispatch::set_cuda_conv_search(mode == "heuristic");
}

std::string conv_search() { return dispatch::cuda_conv_search_heuristic() ? "heuristic" : "timed"; }

int cpu_threads() { return g_requested_threads > 0 ? g_requested_threads : default_cpu_threads(); }

std::string cpu_threads_choice() {
  if (g_requested_threads > 0) return "asked for with --threads or a request's threads field";
  if (omp_num_threads_env() > 0)
    return "OMP_NUM_THREADS=" + std::to_string(omp_num_threads_env()) + "; --threads N overrides";
  const int n = affinity_cpus();
  return "the " + std::to_string(n) + (n == 1 ? " CPU" : " CPUs") + " this process may run on; --threads N overrides";
}

void require_cuda_device() {
  if (!built_with_cuda())
    throw Error("no CUDA device: this build of diffuse has no CUDA backend", ErrorKind::device_unavailable);
  if (cuda_device_count() == 0)
    throw Error("no CUDA device: none was found (is the driver installed?)", ErrorKind::device_unavailable);
}

}  // namespace diffuse
