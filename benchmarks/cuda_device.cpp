// The GPU's side of the run context and peaks (docs/design.md §12): its name and clocks, a large
// device-to-device copy and large cuBLAS GEMMs (f32, the floor for our f32 kernels; TF32 and bf16
// tensor-core rates for context), all timed with device events; plus the event timer and buffers
// the GPU cases use. A build without CUDA gets the same functions, each saying there is no device.
#include "benchmarks/cases.h"
#include "diffuse/error.h"

#if DIFFUSE_WITH_CUDA
#include <algorithm>
#include <cmath>

#include "benchmarks/cuda_util.h"
#include "nn/runtime.h"

namespace diffuse::bench {

Timing time_device(const std::function<void(int)>& fn, const RepeatPolicy& policy,
                   const std::function<void(int)>& prepare) {
  cudaStream_t s = bench_stream();
  int call = 0;
  for (int i = 0; i < policy.warmup; ++i, ++call) {
    if (prepare) prepare(call);
    fn(call);
  }
  DIFFUSE_CUDA_CHECK(cudaStreamSynchronize(s));
  std::vector<double> ms;
  double total_ms = 0;
  int batch = std::max(1, policy.min_reps);
  std::vector<cudaEvent_t> ev;
  while (true) {
    while (ev.size() < size_t(2 * batch)) {
      cudaEvent_t e;
      DIFFUSE_CUDA_CHECK(cudaEventCreate(&e));
      ev.push_back(e);
    }
    for (int i = 0; i < batch; ++i, ++call) {
      if (prepare) prepare(call);
      DIFFUSE_CUDA_CHECK(cudaEventRecord(ev[2 * i], s));
      fn(call);
      DIFFUSE_CUDA_CHECK(cudaEventRecord(ev[2 * i + 1], s));
    }
    DIFFUSE_CUDA_CHECK(cudaEventSynchronize(ev[2 * batch - 1]));
    for (int i = 0; i < batch; ++i) {
      float t = 0;
      DIFFUSE_CUDA_CHECK(cudaEventElapsedTime(&t, ev[2 * i], ev[2 * i + 1]));
      ms.push_back(t);
      total_ms += t;
    }
    const int done = static_cast<int>(ms.size());
    if (done >= policy.max_reps || total_ms >= policy.target_seconds * 1e3) break;
    const double per = total_ms / done;
    batch = static_cast<int>(std::clamp((policy.target_seconds * 1e3 - total_ms) / std::max(per, 1e-3) + 1, 1.0,
                                        double(policy.max_reps - done)));
  }
  for (cudaEvent_t e : ev) cudaEventDestroy(e);
  return summarize(ms);
}

Tensor DeviceArena::random(const Shape& shape, uint64_t seed, float lo, float hi) {
  Tensor host = Tensor::empty(shape);
  fill_uniform(host.data<float>(), host.numel(), seed, lo, hi);
  bytes_ += host.nbytes();
  return host.to(Device::cuda);
}

Tensor DeviceArena::zeros(const Shape& shape) {
  Tensor t = Tensor::zeros(shape, DType::f32, Device::cuda);
  bytes_ += t.nbytes();
  return t;
}

cublasHandle_t bench_cublas() {
  static cublasHandle_t h = [] {
    cublasHandle_t c = nullptr;
    DIFFUSE_CUBLAS_CHECK(cublasCreate(&c));
    DIFFUSE_CUBLAS_CHECK(cublasSetStream(c, bench_stream()));
    return c;
  }();
  return h;
}

cudnnHandle_t bench_cudnn() {
  static cudnnHandle_t h = [] {
    cudnnHandle_t c = nullptr;
    DIFFUSE_CUDNN_CHECK(cudnnCreate(&c));
    DIFFUSE_CUDNN_CHECK(cudnnSetStream(c, bench_stream()));
    return c;
  }();
  return h;
}

namespace {

int attribute(cudaDeviceAttr a) {
  int v = 0, dev = 0;
  cudaGetDevice(&dev);
  if (cudaDeviceGetAttribute(&v, a, dev) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return v;
}

// Raw device memory for the peaks, so they do not depend on the engine's allocator.
struct DeviceBlock {
  void* p = nullptr;
  explicit DeviceBlock(size_t bytes) { DIFFUSE_CUDA_CHECK(cudaMalloc(&p, bytes)); DIFFUSE_CUDA_CHECK(cudaMemset(p, 0, bytes)); }
  ~DeviceBlock() { cudaFree(p); }
  DeviceBlock(const DeviceBlock&) = delete;
  DeviceBlock& operator=(const DeviceBlock&) = delete;
};

// GFLOP/s of an n³ GEMM with the given operand type and compute type.
double gemm_rate(int n, cudaDataType_t type, cublasComputeType_t compute, const RepeatPolicy& pol, double* ms_out) {
  const size_t elem = type == CUDA_R_32F ? 4 : 2;
  DeviceBlock a(size_t(n) * n * elem), b(size_t(n) * n * elem), c(size_t(n) * n * elem);
  const float one = 1.f, zero = 0.f;
  Timing t = time_device([&](int) {
    DIFFUSE_CUBLAS_CHECK(cublasGemmEx(bench_cublas(), CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a.p, type, n, b.p, type, n, &zero,
                              c.p, type, n, compute, CUBLAS_GEMM_DEFAULT));
  }, pol);
  *ms_out = t.min_ms;  // a peak is the best rate seen
  return 2.0 * double(n) * n * n / (t.min_ms * 1e-3) * 1e-9;
}

}  // namespace

size_t cuda_l2_bytes() { return static_cast<size_t>(std::max(attribute(cudaDevAttrL2CacheSize), 1 << 20)); }

nlohmann::json cuda_device_description() {
  require_cuda_device();
  int dev = 0;
  DIFFUSE_CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp p{};
  DIFFUSE_CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
  const double mem_khz = attribute(cudaDevAttrMemoryClockRate), bus = attribute(cudaDevAttrGlobalMemoryBusWidth);
  return {{"index", dev},
          {"name", p.name},
          {"sm", std::to_string(p.major) + "." + std::to_string(p.minor)},
          {"sm_count", p.multiProcessorCount},
          {"memory_bytes", p.totalGlobalMem},
          {"l2_bytes", attribute(cudaDevAttrL2CacheSize)},
          {"sm_clock_mhz", attribute(cudaDevAttrClockRate) / 1000},
          {"memory_clock_mhz", mem_khz / 1000},
          {"memory_bus_bits", bus},
          {"theoretical_dram_gbps", 2.0 * mem_khz * 1e3 * bus / 8 * 1e-9}};
}

Peaks cuda_peaks(bool quick) {
  Peaks peaks;
  RepeatPolicy pol{2, quick ? 3 : 10, 50, quick ? 0.02 : 0.2};
  const size_t bytes = (quick ? size_t(64) : size_t(1024)) << 20;
  DeviceBlock src(bytes), dst(bytes);
  Timing copy = time_device([&](int) {
    DIFFUSE_CUDA_CHECK(cudaMemcpyAsync(dst.p, src.p, bytes, cudaMemcpyDeviceToDevice, bench_stream()));
  }, pol);
  peaks.copy_gbps = 2.0 * double(bytes) / (copy.min_ms * 1e-3) * 1e-9;
  const int n = quick ? 2048 : 8192;
  double f32_ms = 0, tf32_ms = 0, bf16_ms = 0;
  peaks.gemm_gflops = gemm_rate(n, CUDA_R_32F, CUBLAS_COMPUTE_32F, pol, &f32_ms);
  const double tf32 = gemm_rate(n, CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32, pol, &tf32_ms);
  const double bf16 = gemm_rate(n, CUDA_R_16BF, CUBLAS_COMPUTE_32F, pol, &bf16_ms);
  peaks.detail = {
      {"copy", {{"what", "cudaMemcpyAsync device to device, bytes read + written"}, {"bytes", bytes},
                {"best_ms", copy.min_ms}, {"gbps", peaks.copy_gbps}}},
      {"gemm", {{"what", "cublasGemmEx f32 " + std::to_string(n) + "^3 (no TF32)"}, {"best_ms", f32_ms},
                {"gflops", peaks.gemm_gflops}}},
      {"gemm_tf32", {{"what", "cublasGemmEx f32 in/out, TF32 compute"}, {"best_ms", tf32_ms}, {"gflops", tf32}}},
      {"gemm_bf16", {{"what", "cublasGemmEx bf16 in/out, f32 compute"}, {"best_ms", bf16_ms}, {"gflops", bf16}}}};
  return peaks;
}

}  // namespace diffuse::bench

#else  // no CUDA backend in this build

namespace diffuse::bench {

namespace {
[[noreturn]] void no_cuda() { throw Error("no CUDA device: this build of diffuse has no CUDA backend"); }
}  // namespace

nlohmann::json cuda_device_description() { no_cuda(); }
Peaks cuda_peaks(bool) { no_cuda(); }
KernelResult run_cuda_case(const Workload&, const RepeatPolicy&, size_t) { no_cuda(); }
size_t cuda_l2_bytes() { no_cuda(); }

}  // namespace diffuse::bench

#endif
