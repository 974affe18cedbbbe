// The tile transforms of the CPU's Winograd convolutions (kernels/cpu/winograd.h), F(2×2, 3×3) and
// F(4×4, 3×3), one version per instruction-set path (kernels/cpu/simd/dispatch.h), vectorised over
// channels. For an output tile of m×m pixels (`tile` = m = 2 or 4) each transform works on an α×α
// window, α = m + 2, and 16 or 36 transformed positions xi = α·row + column. The weight
// gradient's tile 4 is F(3×3, 4×4): the same 6×6 windows of x, 4×4 tiles of dy. Tiles are
// numbered over the whole batch: tile t is image
// t / (th·tw), tile row (t / tw) % th, tile column t % tw, with th = ⌈h/m⌉, tw = ⌈w/m⌉; tile (ty, tx)
// covers output pixels m·ty.. × m·tx.. and reads the α×α input window from (m·ty − 1, m·tx − 1):
// pad 1 on every side, zeros outside the image (so sizes that are not a multiple of m end in
// partial tiles).
#pragma once
#include <cstdint>

#include "kernels/cpu/simd/dispatch.h"

namespace diffuse::kernels::cpu::simd {
// For tiles [t0, t0 + count) of x [N, h, w, channels]: V = Bᵀ·d·B of each α×α window d, channel by
// channel, written as v[xi · v_stride + (c / panel) · panel_stride + (t − t0) · panel + c % panel]
// for the α² transformed positions xi. panel = channels (panel_stride unused)
// makes each xi's block a row-major [count, channels] GEMM operand; panel = the GEMM's NR and
// panel_stride = count · NR make it the micro-kernel's B panels (columns past `channels` in the
// last panel are not written).
DIFFUSE_SIMD_FUNCTION(void, winograd_input_tiles,
                      (int tile, const float* x, int64_t h, int64_t w, int64_t channels, int64_t t0, int64_t count,
                       float* v, int64_t v_stride, int64_t panel, int64_t panel_stride),
                      (tile, x, h, w, channels, t0, count, v, v_stride, panel, panel_stride))
// The inverse: for tiles [t0, t0 + count), Y = Aᵀ·M·A of each tile's α² products
// m[xi · m_stride + (t − t0) · channels + c], plus bias[c] and residual at the same pixel (each
// may be null; residual has y's layout and may be y), stored into the tile's pixels of
// y [N, h, w, channels] that lie inside the image.
DIFFUSE_SIMD_FUNCTION(void, winograd_output_tiles,
                      (int tile, const float* m, int64_t m_stride, int64_t channels, const float* bias,
                       const float* residual, int64_t h, int64_t w, int64_t t0, int64_t count, float* y),
                      (tile, m, m_stride, channels, bias, residual, h, w, t0, count, y))
// The weight transform U = G·g·Gᵀ (G is α×3, kernels/cpu/simd/winograd.cpp) for one reduction
// channel and n output channels: g[tap] is the row of n floats of the 3×3 kernel at tap = 3·row +
// column. The α² results for output channel j go to out[xi · xi_stride + (j / nr) · panel_stride + j % nr]
// (the GEMM's B panels of width nr, a multiple of the vector width), zero up to the last panel's end.
DIFFUSE_SIMD_FUNCTION(void, winograd_weight_row,
                      (int tile, const float* const* g, int64_t n, int64_t nr, int64_t panel_stride, float* out,
                       int64_t xi_stride),
                      (tile, g, n, nr, panel_stride, out, xi_stride))
// The weight gradient's transform of dy: for tiles [t0, t0 + count) of dy [N, h, w, channels],
// Z = A·dY·Aᵀ (F(2×2): A = Aᵀ's transpose, 4×2) or G·dY·Gᵀ (tile 4: F(3×3, 4×4), whose G is 6×4;
// kernels/cpu/simd/winograd.cpp) of each tile's m×m output gradient dY (zero for pixels outside the
// image), written as z[xi · z_stride + (t − t0) · channels + c] for the α² positions xi.
DIFFUSE_SIMD_FUNCTION(void, winograd_output_grad_tiles,
                      (int tile, const float* dy, int64_t h, int64_t w, int64_t channels, int64_t t0, int64_t count,
                       float* z, int64_t z_stride),
                      (tile, dy, h, w, channels, t0, count, z, z_stride))
// The weight gradient from its α² transformed planes for one output channel: dU[xi][ci] is the sum
// over s < slices of du[s · slice_stride + xi · plane_stride + ci] (in order), and
// dw_row[(3·a + b) · cin + ci] = (Gᵀ·dU·G)[a][b] (F(2×2)) or (Aᵀ·dU·A)[a][b] (tile 4: F(3×3, 4×4),
// Aᵀ 3×6) for ci < cin (dw_row = dw + co · 9 · cin).
DIFFUSE_SIMD_FUNCTION(void, winograd_weight_grad_row,
                      (int tile, const float* du, int64_t slices, int64_t slice_stride, int64_t plane_stride,
                       int64_t cin, float* dw_row),
                      (tile, du, slices, slice_stride, plane_stride, cin, dw_row))
}  // namespace diffuse::kernels::cpu::simd
