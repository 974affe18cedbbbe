// A kernel benchmark row and how it is reported: the floor time from the measured peaks (the
// larger of bytes / copy bandwidth and FLOPs / GEMM rate, docs/design.md §12), the fraction of that
// floor achieved, and the speed-up over the reference composition measured in the same run —
// as one line of the stdout table and as one JSON object.
#pragma once
#include <iosfwd>
#include <string>

#include <nlohmann/json.hpp>

#include "benchmarks/measure.h"
#include "benchmarks/workloads.h"

namespace diffuse::bench {

// The machine's measured peaks, taken in the same run as the kernels.
struct Peaks {
  double copy_gbps = 0;    // bytes read + written per second by a large copy
  double gemm_gflops = 0;  // a large f32 GEMM
  nlohmann::json detail;   // what was measured, and any further peaks (e.g. a bf16 GEMM)
};

struct KernelResult {
  Timing ours;
  std::string reference;  // what the reference is; empty when the family has none
  Timing ref;
  std::string error;      // non-empty: the case could not run (the message says why)
};

// Speed-up over the reference: reference time / our time (> 1: ours is faster).
nlohmann::json row_json(const Workload& w, const KernelResult& r, const Peaks& p);
void print_table_header(std::ostream& out);
void print_table_row(std::ostream& out, const Workload& w, const KernelResult& r, const Peaks& p);

}  // namespace diffuse::bench
