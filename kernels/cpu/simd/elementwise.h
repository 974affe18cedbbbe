// The f32 loops of kernels/cpu/elementwise.cpp, one version per instruction-set path
// (kernels/cpu/simd/dispatch.h): each works on one contiguous run; the driver splits a call into
// runs and chunks and runs them in at most one parallel region.
#pragma once
#include <cstdint>

#include "kernels/cpu/simd/dispatch.h"

namespace diffuse::kernels::cpu::simd {

// out[i] = a[i] op b[i · b_stride] for i < n, b_stride 1 (a stream) or 0 (one value); op is
// kernels::BinaryOp as an int (0 add, 1 sub, 2 mul). out may be a.
DIFFUSE_SIMD_FUNCTION(void, binary_run, (int op, const float* a, const float* b, int64_t b_stride, float* out, int64_t n),
                      (op, a, b, b_stride, out, n))
// out[i] += g[i] (· w[i] when w is not null) for i < n.
DIFFUSE_SIMD_FUNCTION(void, accumulate_run, (const float* g, const float* w, float* out, int64_t n), (g, w, out, n))
// Σ g[i] (· w[i] when w is not null) for i < n, accumulated in f64 (f32 lane sums over at most 4
// vectors each), in a fixed order.
DIFFUSE_SIMD_FUNCTION(double, sum_run, (const float* g, const float* w, int64_t n), (g, w, n))
// acc[c] += Σ_{r < rows} m[r · cols + c] for c < cols (a bias gradient's column sums): f32 lane
// sums over at most 8 rows at a time, each added into the f64 acc, rows in order.
DIFFUSE_SIMD_FUNCTION(void, column_sum_rows, (const float* m, int64_t rows, int64_t cols, double* acc),
                      (m, rows, cols, acc))
// out[i] = s · x[i].
DIFFUSE_SIMD_FUNCTION(void, scale_run, (float s, const float* x, float* out, int64_t n), (s, x, out, n))
// gx[i] = gy[i] · σ(x[i]) · (1 + x[i] · (1 − σ(x[i]))), the grad of SiLU.
DIFFUSE_SIMD_FUNCTION(void, silu_backward_run, (const float* x, const float* gy, float* gx, int64_t n), (x, gy, gx, n))

}  // namespace diffuse::kernels::cpu::simd
