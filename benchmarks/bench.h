// The benchmark library behind `diffuse bench` (docs/design.md §12): kernel tables at the shapes the
// named UNet configs really produce, and end-to-end training-step and sampling times. Every entry
// point prints a readable table on `out` and returns the same numbers as JSON; the CLI writes
// that JSON to --json. Benchmarks are programs, never timed tests: the smoke test only checks
// that the fields are there.
#pragma once
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nn/allocator.h"

namespace diffuse::bench {

struct KernelBenchOptions {
  Device device = Device::cpu;
  std::string filter;  // substring of "family pass" (e.g. "group_norm", "attention bwd"); empty: all
  bool quick = false;  // the tiny config at batch 2, no large shapes, short runs (a smoke run)
  std::vector<std::string> configs = {"tiny", "fmnist-small", "ddpm-cifar10"};
  std::vector<int64_t> batches = {64, 128};
  bool large = true;  // one large shape per family
};

struct TrainBenchOptions {
  Device device = Device::cpu;
  std::string config = "tiny";  // a named config or a config.json path
  int64_t batch = 32;
  std::string precision = "fp32";
  int64_t warmup = 1;  // untimed steps first (allocator and scratch reach their steady state)
  int64_t iters = 3;   // timed steps; the median is reported
  uint64_t seed = 0;
  // On CUDA, replay the step as one CUDA graph after its eager warm-up steps, as `diffuse train`
  // does; the forward/backward/optimizer split is then not measured (a replay cannot be split).
  bool cuda_graphs = true;
  int64_t profile_steps = 0;  // > 0: then this many eager steps under the op profiler (--profile)
};

struct SampleBenchOptions {
  Device device = Device::cpu;
  std::string config = "tiny";
  std::vector<int64_t> batches = {64, 1};
  std::vector<std::string> samplers = {"ddpm", "ddim", "dpmpp-2m"};  // at 1000, 50 and 20 steps
  int64_t timed_steps = 0;  // > 0: time only this many steps of each sampler and extrapolate
  std::string precision = "fp32";
  bool cuda_graphs = true;  // replay the sampler step as one CUDA graph, as `diffuse sample` does
  uint64_t seed = 0;
  int64_t profile_steps = 0;  // > 0: then this many eager steps of each sampler under the op profiler
};

nlohmann::json run_kernel_bench(const KernelBenchOptions& options, std::ostream& out);
nlohmann::json run_train_bench(const TrainBenchOptions& options, std::ostream& out);
nlohmann::json run_sample_bench(const SampleBenchOptions& options, std::ostream& out);

// The nominal step count of each sampler the benchmark knows ("ddpm" 1000, "ddim" 50,
// "dpmpp-2m" 20); anything else is a diffuse::Error naming it.
int64_t nominal_steps(const std::string& sampler);

}  // namespace diffuse::bench
