// The register-blocked inner kernel of the CPU's own f32 GEMM (kernels/cpu/gemm_blocked.h), one
// version per instruction-set path (kernels/cpu/simd/dispatch.h). A tile of MR rows × NR columns
// of c lives in registers (NR = two vectors: 32 on AVX-512, 16 on AVX2, 8 on SSE2; MR = 8 on
// AVX-512, 6 on AVX2, 4 on SSE2) while the kernel runs down the reduction: one broadcast of an a value
// and two vector loads of b per MR·2 fused multiply-adds.
#pragma once
#include <cstdint>

#include "kernels/cpu/simd/dispatch.h"

namespace diffuse::kernels::cpu::simd {
// NR: the width of the b panels gemm_block reads.
DIFFUSE_SIMD_FUNCTION(int, gemm_panel_width, (), ())
// c[i, j] = alpha · Σ_{p<kc} a[i·lda + p] · B[p, j] + beta · c[i, j] + bias[j] for i < m, j < n.
// b_panels holds B as ceil(n / NR) panels, panel q = columns [q·NR, q·NR + NR) stored as kc rows of
// NR floats, zero past n. beta == 0 never reads c (so NaN there is overwritten); bias may be null.
// kc == 0 is allowed (then a and b_panels are not read).
DIFFUSE_SIMD_FUNCTION(void, gemm_block,
                      (int64_t m, int64_t n, int64_t kc, const float* a, int64_t lda, const float* b_panels,
                       float alpha, float beta, const float* bias, float* c, int64_t ldc),
                      (m, n, kc, a, lda, b_panels, alpha, beta, bias, c, ldc))
// c[i, j] = Σ over reduction blocks [p0, p0 + kblock) of Σ_{p in block} a[i·lda + p] · B[p, j]
// for i < m, j < n: each block summed from zero, the block sums added in order, c written once
// (never read). The same bits as gemm_block per block (beta 0 for the first, then 1, alpha 1, no
// bias), which Winograd F(4×4) ran before: its 32-channel blocks bound the f32 rounding
// (kernels/cpu/winograd.cpp), and per block c went out to memory and back. B's block at p0 is
// b + p0 · n_pad, gemm_block's panels of kc × NR floats for kc = min(kblock, k − p0).
DIFFUSE_SIMD_FUNCTION(void, gemm_block_ksum,
                      (int64_t m, int64_t n, int64_t k, int64_t kblock, const float* a, int64_t lda, const float* b,
                       int64_t n_pad, float* c, int64_t ldc),
                      (m, n, k, kblock, a, lda, b, n_pad, c, ldc))
// MR: the rows of the a panels gemm_block_panels reads.
DIFFUSE_SIMD_FUNCTION(int, gemm_panel_height, (), ())
// dst = rows [0, m) of A, columns [0, kc), where A's (i, p) is a[p · lda + i] (A stored transposed,
// [kc, lda]), as ceil(m / MR) panels of kc × MR floats (panel q holds rows q·MR ..), zero past m:
// the transposed operand of a weight gradient packed with whole MR-float runs per step instead of
// one float per row.
DIFFUSE_SIMD_FUNCTION(void, gemm_pack_a_transposed,
                      (const float* a, int64_t lda, int64_t m, int64_t kc, float* dst), (a, lda, m, kc, dst))
// dst = B's rows [0, kc), columns [0, n) as ceil(n / NR) panels of kc × NR floats (gemm_block's
// b_panels), zero past n, where B's (p, j) is b[p · ldb + j] (B stored row-major): vector copies.
DIFFUSE_SIMD_FUNCTION(void, gemm_pack_b, (const float* b, int64_t ldb, int64_t n, int64_t kc, float* dst),
                      (b, ldb, n, kc, dst))
// The same panels where B's (p, j) is b[j · ldb + p] (B stored transposed, [n, ldb]): 4 × 4
// blocks transposed in registers instead of one strided store per element.
DIFFUSE_SIMD_FUNCTION(void, gemm_pack_b_transposed,
                      (const float* b, int64_t ldb, int64_t n, int64_t kc, float* dst), (b, ldb, n, kc, dst))
// gemm_block with a packed by gemm_pack_a_transposed (panels of kc × MR floats) instead of
// row-major.
DIFFUSE_SIMD_FUNCTION(void, gemm_block_panels,
                      (int64_t m, int64_t n, int64_t kc, const float* a_panels, const float* b_panels, float alpha,
                       float beta, const float* bias, float* c, int64_t ldc),
                      (m, n, kc, a_panels, b_panels, alpha, beta, bias, c, ldc))
// gemm_block with a read through an indirection table instead of a packed block: row i of a is
// `segments` runs of `seg_len` floats, run s at table[i · segments + s] (kc = segments · seg_len).
// A convolution points its runs into its NHWC input (one run per tap) or at zeros for padding,
// so its im2col rows are never copied.
DIFFUSE_SIMD_FUNCTION(void, gemm_block_rows,
                      (int64_t m, int64_t n, int64_t segments, int64_t seg_len, const float* const* table,
                       const float* b_panels, float alpha, float beta, const float* bias, float* c, int64_t ldc),
                      (m, n, segments, seg_len, table, b_panels, alpha, beta, bias, c, ldc))
}  // namespace diffuse::kernels::cpu::simd
