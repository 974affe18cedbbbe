// Helpers for tests that run an f32 CPU kernel against its f64 twin on the same inputs
// (tests/cpu/test_cpu_paths_*.cpp, tests/cpu/test_winograd.cpp): normal values that f32 holds
// exactly, and the op table's error measure.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace diffuse::test {

// n draws of N(mean, sd²), each rounded to f32, so both precisions see the same input.
inline std::vector<double> normal_values(size_t n, uint64_t seed, double mean = 0.0, double sd = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> dist(mean, sd);
  std::vector<double> v(n);
  for (double& x : v) x = float(dist(rng));
  return v;
}

inline std::vector<float> to_f32(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

// max |got − want| / max(max |want|, tiny): the op table's measure for results that may cancel.
inline double rel_to_peak(const std::vector<float>& got, const std::vector<double>& want) {
  double peak = 0, worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    peak = std::max(peak, std::fabs(want[i]));
    worst = std::max(worst, std::fabs(double(got[i]) - want[i]));
  }
  return peak > 0 ? worst / peak : worst;
}

}  // namespace diffuse::test
