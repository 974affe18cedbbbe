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
// "key: value" lines: version, compiler, CUDA runtime/driver, cuBLAS, cuDNN, the CPU kernels' path,
// OpenBLAS, the CPU thread count and how it was chosen, the OpenMP wait policy.
std::vector<std::pair<std::string, std::string>> build_info();
// The CPU kernels' instruction-set path in use and where it came from, e.g. "avx512 (the best this
// CPU runs; ...)" (kernels/cpu_isa.h).
std::string cpu_kernel_path();
// Throws diffuse::Error (ErrorKind::usage) naming DIFFUSE_CPU_ISA when it asks for a path that is
// unknown or that this CPU cannot run. The CLI calls it before any work.
void check_cpu_kernel_environment();
// The name of the CPU kernels' path in use, "baseline", "avx2" or "avx512": what a benchmark records.
std::string cpu_isa_in_use();
// The CPU's name, the "model name" line of /proc/cpuinfo ("unknown CPU" where there is none):
// what benchmarks and the run report record about the machine.
std::string cpu_model_name();

// How many threads the CPU kernels run (every command's --threads, TrainRequest::threads and
// GenerateRequest::threads; docs/design.md §13). Set in this one place: the kernels' OpenMP regions
// and the GEMM split all follow omp_get_max_threads() of the calling thread.
// The count `threads = 0` means: OMP_NUM_THREADS when it is a positive integer, else the CPUs this
// process may run on (its affinity mask, which taskset and container cpusets narrow), never the
// machine's core count.
int default_cpu_threads();
// `threads` > 0 runs that many; 0 runs default_cpu_threads(). A negative count is
// diffuse::Error(ErrorKind::usage) and changes nothing.
void set_cpu_threads(int threads);
// The count in use now (default_cpu_threads() until set_cpu_threads is called).
int cpu_threads();
// How that count was chosen, e.g. "the 2 CPUs this process may run on; --threads N overrides".
std::string cpu_threads_choice();

// How cuDNN chooses each convolution's algorithms on CUDA, for this process (every command's
// --conv-search, TrainRequest::conv_search, GenerateRequest::conv_search; kernels/conv2d.h
// ConvSearch): "timed" (the default: the fastest, measured once per shape, which may differ
// between processes and with it the last bits) or "heuristic" (cuDNN's ranking, the same in every
// process on one card and cuDNN version: runs repeat bit for bit). Takes effect for shapes first
// run after the call. Another name is diffuse::Error(ErrorKind::usage). No effect without CUDA.
void set_conv_search(const std::string& mode);
// The mode in force ("timed" until set_conv_search is called; "timed" in a build without CUDA).
std::string conv_search();

// Throws diffuse::Error("no CUDA device ...", ErrorKind::device_unavailable) unless a CUDA device is usable.
void require_cuda_device();

}  // namespace diffuse
