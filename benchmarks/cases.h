// One kernel benchmark case per workload, per device: buffers set up once (several sets, rotated
// between repetitions so the inputs are not sitting in the last-level cache / L2), our kernel and
// the reference composition timed in the same run, and the device's measured peaks.
// The CUDA side exists in every build; without CUDA its functions throw "no CUDA device".
#pragma once
#include <cstddef>

#include <nlohmann/json.hpp>

#include "benchmarks/measure.h"
#include "benchmarks/report.h"
#include "benchmarks/workloads.h"

namespace diffuse::bench {

// How many copies of a case's buffers (set_bytes each) keep rotate_bytes in flight: 1 to 8.
int rotation_sets(double set_bytes, size_t rotate_bytes);

Peaks cpu_peaks(bool quick);
KernelResult run_cpu_case(const Workload& w, const RepeatPolicy& policy, size_t rotate_bytes);

nlohmann::json cuda_device_description();  // name, SMs, clocks, memory, L2
Peaks cuda_peaks(bool quick);
KernelResult run_cuda_case(const Workload& w, const RepeatPolicy& policy, size_t rotate_bytes);
size_t cuda_l2_bytes();

}  // namespace diffuse::bench
