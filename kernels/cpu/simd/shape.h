// The f32 loops of kernels/cpu/shape.cpp, one version per instruction-set path
// (kernels/cpu/simd/dispatch.h): row copies a vector at a time, inline, where a memcpy call per
// 32-channel row would cost more than the copy. Each function does rows [0, rows) of the pointers
// it is given; the driver offsets them and splits the rows over threads.
#pragma once
#include <cstdint>

#include "kernels/cpu/simd/dispatch.h"

namespace diffuse::kernels::cpu::simd {

// out[r, :ca] = a[r], out[r, ca:] = b[r] (rows of ca + cb).
DIFFUSE_SIMD_FUNCTION(void, concat_rows, (const float* a, const float* b, float* out, int64_t ca, int64_t cb, int64_t rows),
                      (a, b, out, ca, cb, rows))
// ga[r] = g[r, :ca], gb[r] = g[r, ca:]; a null destination is skipped.
DIFFUSE_SIMD_FUNCTION(void, split_rows, (const float* g, float* ga, float* gb, int64_t ca, int64_t cb, int64_t rows),
                      (g, ga, gb, ca, cb, rows))
// Input rows of w pixels × c channels: each becomes two output rows of 2w pixels (y advances
// 4·w·c floats per input row).
DIFFUSE_SIMD_FUNCTION(void, upsample2x_rows, (const float* x, float* y, int64_t w, int64_t c, int64_t rows),
                      (x, y, w, c, rows))
// The backward: gx[i, j] = (top[2j] + top[2j+1]) + (bottom[2j] + bottom[2j+1]) per input row.
DIFFUSE_SIMD_FUNCTION(void, upsample2x_backward_rows, (const float* gy, float* gx, int64_t w, int64_t c, int64_t rows),
                      (gy, gx, w, c, rows))

}  // namespace diffuse::kernels::cpu::simd
