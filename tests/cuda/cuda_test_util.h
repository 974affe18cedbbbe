// Shared by the `cuda` tests: they run only where a CUDA device exists. On a machine without one
// each test prints "no CUDA device" as a Catch2 warning and returns, so the binary still passes
// (DESIGN.md §5: the tests are reported as not run, not silently as checks that passed).
#pragma once
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>

#include "nn/runtime.h"
#include "nn/tensor.h"

#define DIFFUSE_REQUIRE_CUDA_OR_SKIP()                                    \
  do {                                                                    \
    if (::diffuse::cuda_device_count() == 0) {                            \
      WARN("no CUDA device: test not run");                               \
      return;                                                             \
    }                                                                     \
  } while (0)

namespace diffuse::test {

// A device tensor filled with NaN, so an element the code under test never writes fails the
// comparison.
inline Tensor nan_cuda(const Shape& shape, DType dtype) { return Tensor::full(shape, NAN, dtype, Device::cuda); }

// max |a - b| over max(1, max |b|): the error relative to the tensor's scale, for bf16 results
// whose rounding error follows the largest intermediate rather than each element. NaN -> inf.
inline double max_scaled_error(const Tensor& a, const Tensor& b) {
  auto va = a.to_vector(), vb = b.to_vector();
  REQUIRE(va.size() == vb.size());
  double peak = 1.0, worst = 0.0;
  for (double v : vb) peak = std::max(peak, std::fabs(v));
  for (size_t i = 0; i < va.size(); ++i) {
    double d = std::fabs(va[i] - vb[i]);
    if (std::isnan(d)) return INFINITY;
    worst = std::max(worst, d);
  }
  return worst / peak;
}

}  // namespace diffuse::test
