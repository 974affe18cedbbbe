// Whole-array forms of kernels/cpu/simd/vec.h's exp and SiLU, one version per instruction-set path
// (kernels/cpu/simd/dispatch.h): for kernels that want e^x of a row at a time, and for the tests that
// hold every path's vector math to std::exp.
#pragma once
#include <cstdint>

#include "kernels/cpu/simd/dispatch.h"

namespace diffuse::kernels::cpu::simd {
// y[i] = e^x[i] for i < n (y may be x).
DIFFUSE_SIMD_FUNCTION(void, exp_array, (const float* x, float* y, int64_t n), (x, y, n))
// y[i] = e^x[i] for x[i] ≤ 0 or NaN by the softmax's exp_nonpositive: exp_array's bits there.
DIFFUSE_SIMD_FUNCTION(void, exp_nonpositive_array, (const float* x, float* y, int64_t n), (x, y, n))
// y[i] = x[i] · sigmoid(x[i]) for i < n (y may be x).
DIFFUSE_SIMD_FUNCTION(void, silu_array, (const float* x, float* y, int64_t n), (x, y, n))
}  // namespace diffuse::kernels::cpu::simd
