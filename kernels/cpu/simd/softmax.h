// Row kernels of the CPU attention (kernels/cpu/attention.cpp), one version per instruction-set
// path (kernels/cpu/simd/dispatch.h): the softmax of a tile of score rows, the softmax backward's
// row dots rowsum(dO ∘ O), and dS = P ∘ (dP − rowsum). Each works on one row at a time, so a
// row of the tile (L floats) stays in L1 across its passes. The column forms serve the backward's
// transposed tiles: there the statistics of every column are a row of vectors, updated row by row.
#pragma once
#include <cstdint>

#include "kernels/cpu/simd/dispatch.h"

namespace diffuse::kernels::cpu::simd {
// Each of `rows` rows of s (row stride ld, `len` used) becomes softmax(row): e^(x − max) / Σ. With
// inv not null the rows stay e^(x − max) and inv[r] = 1 / Σ: the forward scales its output rows
// (d values each) instead of the probabilities (L each).
DIFFUSE_SIMD_FUNCTION(void, softmax_rows, (float* s, int64_t rows, int64_t len, int64_t ld, float* inv),
                      (s, rows, len, ld, inv))
// dot[i] = Σ_c a[i·ld + c] · b[i·ld + c] for i < rows, c < len.
DIFFUSE_SIMD_FUNCTION(void, row_dots, (const float* a, const float* b, int64_t rows, int64_t len, int64_t ld, float* dot),
                      (a, b, rows, len, ld, dot))
// dp[i, j] = p[i, j] · (dp[i, j] − dot[i]) for i < rows, j < len; p and dp with row stride ld.
DIFFUSE_SIMD_FUNCTION(void, softmax_backward_rows,
                      (const float* p, float* dp, const float* dot, int64_t rows, int64_t len, int64_t ld),
                      (p, dp, dot, rows, len, ld))
// The column forms, for the backward's transposed tiles (Sᵀ: keys down, queries across). Each of
// the `cols` columns of s (`rows` rows, row stride ld) becomes softmax(column); work: room for
// 2·cols floats.
DIFFUSE_SIMD_FUNCTION(void, softmax_columns, (float* s, int64_t rows, int64_t cols, int64_t ld, float* work),
                      (s, rows, cols, ld, work))
// dp[i, j] = p[i, j] · (dp[i, j] − dot[j]) for i < rows, j < cols; p and dp with row stride ld.
DIFFUSE_SIMD_FUNCTION(void, softmax_backward_columns,
                      (const float* p, float* dp, const float* dot, int64_t rows, int64_t cols, int64_t ld),
                      (p, dp, dot, rows, cols, ld))
}  // namespace diffuse::kernels::cpu::simd
