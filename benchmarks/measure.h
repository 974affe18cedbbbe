// How the benchmarks time things and describe the run: the repeat policy (warm-up, then timed
// repetitions until both a minimum count and a minimum total time are reached; the median is the
// number reported), fast input fills, and the run's context (machine, libraries, commit, date)
// that every JSON report carries so numbers can be compared only with numbers from the same setup.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nn/allocator.h"

namespace diffuse::bench {

struct RepeatPolicy {
  int warmup = 1;
  int min_reps = 3;
  int max_reps = 30;
  double target_seconds = 0.25;  // keep repeating (up to max_reps) until this much was timed
};

struct Timing {
  double median_ms = 0, min_ms = 0;
  int reps = 0;
};

// printf into a std::string (the tables are printf-formatted).
std::string strf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

double median_of(std::vector<double> values);
Timing summarize(const std::vector<double>& ms);

// Runs fn(rep) warmup + reps times on the host clock; fn must finish its work before returning.
// `rep` counts every call, so callers can rotate through buffer sets with rep % sets.
Timing time_host(const std::function<void(int)>& fn, const RepeatPolicy& policy);

// Deterministic pseudo-random fill in [lo, hi): a hash of (seed, index), parallel, far cheaper
// than Philox normals for hundreds of MB of benchmark inputs.
void fill_uniform(float* p, int64_t n, uint64_t seed, float lo = -1.f, float hi = 1.f);

// "cpu: 2 threads (how they were chosen), avx512 path\n": what a CPU benchmark ran with.
std::string cpu_setup_line();
double current_rss_mib();  // this process's resident set now (/proc/self/statm)
double peak_rss_mib();     // its largest resident set so far (getrusage ru_maxrss)
int cpu_cores();          // online logical CPUs
size_t cpu_last_level_cache_bytes();  // L3 (or L2) size; 32 MiB when the system does not say

// {"device": {...}, "build": {build_info()}, "cpu_threads", "cpu_threads_choice", "cpu_isa",
// "load_average", "git_commit", "date"} for `device`.
nlohmann::json run_context(Device device);
// $DIFFUSE_GIT_COMMIT, else the commit this binary was built from (+ "-dirty" when tracked files
// had uncommitted changes; "unknown" when built outside git): cmake/built_commit.cmake.
std::string git_commit();
std::string utc_date();    // "2025-01-31T12:00:00Z"

}  // namespace diffuse::bench
