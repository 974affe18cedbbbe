// The instruction-set paths of the CPU kernels (kernels/cpu_isa.h): detection and forcing, and the
// vector math every path's kernels share (kernels/cpu/simd/vec.h), held to std::exp on each path
// this machine can run.
#include <catch2/catch.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "diffuse/error.h"
#include "support/cpu_isa_guard.h"
#include "kernels/cpu/simd/vector_math.h"
#include "kernels/cpu_isa.h"

namespace diffuse {
namespace {

using kernels::cpu::CpuIsa;

// Distance in representable floats between a and b (same sign assumed by the caller's inputs).
int64_t ulps(float a, float b) {
  return std::abs(int64_t(std::bit_cast<int32_t>(a)) - int64_t(std::bit_cast<int32_t>(b)));
}

}  // namespace

TEST_CASE("CPU kernel paths: names round-trip and the machine's own path is available", "[simd]") {
  for (CpuIsa isa : {CpuIsa::baseline, CpuIsa::avx2, CpuIsa::avx512})
    CHECK(kernels::cpu::parse_cpu_isa(kernels::cpu::cpu_isa_name(isa)) == isa);
  CHECK_FALSE(kernels::cpu::parse_cpu_isa("sse9").has_value());
  const std::vector<CpuIsa> paths = kernels::cpu::available_cpu_isas();
  REQUIRE(!paths.empty());
  CHECK(paths.front() == CpuIsa::baseline);
  CHECK(paths.back() == kernels::cpu::detected_cpu_isa());
  test::CpuIsaGuard guard;
  if (kernels::cpu::detected_cpu_isa() != CpuIsa::avx512) {
    CHECK_THROWS_WITH(kernels::cpu::set_cpu_isa(CpuIsa::avx512),
                      Catch::Contains("cannot run the avx512 path"));
  }
  kernels::cpu::set_cpu_isa(CpuIsa::baseline);
  CHECK(kernels::cpu::active_cpu_isa() == CpuIsa::baseline);
}

TEST_CASE("vector exp and SiLU agree with std::exp on every path this CPU runs", "[simd]") {
  // Every float from -90 to 90 in small steps, the boundaries, and lengths that leave loop tails.
  std::vector<float> x;
  for (double v = -90.0; v <= 90.0; v += 0.00731) x.push_back(float(v));
  for (float v : {0.0f, -0.0f, 1e-30f, -1e-30f, -87.3365f, -87.33f, 88.72f, 88.7228f, 1e-7f, 0.5f})
    x.push_back(v);
  x.push_back(1.0f);  // odd total length: the masked tail runs too
  test::CpuIsaGuard guard;
  for (CpuIsa isa : kernels::cpu::available_cpu_isas()) {
    INFO("path " << kernels::cpu::cpu_isa_name(isa));
    kernels::cpu::set_cpu_isa(isa);
    std::vector<float> y(x.size()), s(x.size());
    kernels::cpu::simd::exp_array(x.data(), y.data(), int64_t(x.size()));
    kernels::cpu::simd::silu_array(x.data(), s.data(), int64_t(x.size()));
    int64_t worst = 0;
    double worst_silu = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const float ref = std::exp(x[i]);
      if (x[i] < -87.33654475f) {
        CHECK(y[i] == 0.0f);
      } else if (std::isinf(ref)) {
        CHECK(std::isinf(y[i]));
      } else {
        worst = std::max(worst, ulps(y[i], ref));
      }
      const double silu_ref = double(x[i]) / (1.0 + std::exp(-double(x[i])));
      worst_silu = std::max(worst_silu, std::abs(double(s[i]) - silu_ref) / std::max(1e-30, std::abs(silu_ref)));
    }
    CHECK(worst <= 2);
    CHECK(worst_silu < 4e-7);
    // Exact and special values.
    const float special[] = {0.0f, -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::infinity(),
                             std::numeric_limits<float>::quiet_NaN(), -100.0f, 100.0f};
    float out[6];
    kernels::cpu::simd::exp_array(special, out, 6);
    CHECK(out[0] == 1.0f);
    CHECK(out[1] == 0.0f);
    CHECK(std::isinf(out[2]));
    CHECK(std::isnan(out[3]));
    CHECK(out[4] == 0.0f);
    CHECK(std::isinf(out[5]));
    // The softmax's exp for x ≤ 0 gives exp's bits there; −∞ gives 0 and NaN stays NaN.
    std::vector<float> nonpositive;
    for (float v : x)
      if (!(v > 0.0f)) nonpositive.push_back(v);
    nonpositive.push_back(-std::numeric_limits<float>::infinity());
    nonpositive.push_back(std::numeric_limits<float>::quiet_NaN());
    const size_t count = nonpositive.size();
    std::vector<float> want(count), got(count);
    kernels::cpu::simd::exp_array(nonpositive.data(), want.data(), int64_t(count));
    kernels::cpu::simd::exp_nonpositive_array(nonpositive.data(), got.data(), int64_t(count));
    int64_t differing = 0;
    for (size_t i = 0; i + 1 < count; ++i) differing += std::memcmp(&got[i], &want[i], sizeof(float)) != 0;
    CHECK(differing == 0);
    CHECK(got[count - 2] == 0.0f);
    CHECK(std::isnan(got[count - 1]));
  }
}

}  // namespace diffuse
