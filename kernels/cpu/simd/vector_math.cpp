// See kernels/cpu/simd/vector_math.h; compiled once per path (kernels/cpu/simd/isa_begin.h).
#include <cstdint>

#include "kernels/cpu/simd/isa_begin.h"
#include "kernels/cpu/simd/vec.h"
#include "kernels/cpu/simd/vector_math.h"

namespace diffuse::kernels::cpu::simd::DIFFUSE_ISA_NS {

namespace {
template <typename F>
void map(const float* x, float* y, int64_t n, F f) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) store(y + i, f(load(x + i)));
  if (i < n) store_n(y + i, f(load_n(x + i, int(n - i))), int(n - i));
}
}  // namespace

void exp_array(const float* x, float* y, int64_t n) {
  map(x, y, n, [](Vec v) { return exp(v); });
}

void exp_nonpositive_array(const float* x, float* y, int64_t n) {
  map(x, y, n, [](Vec v) { return exp_nonpositive(v); });
}

void silu_array(const float* x, float* y, int64_t n) {
  map(x, y, n, [](Vec v) { return silu(v); });
}

}  // namespace diffuse::kernels::cpu::simd::DIFFUSE_ISA_NS
