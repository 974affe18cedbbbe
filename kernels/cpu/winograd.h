// Winograd convolutions for the CPU's f32 3×3, stride-1, pad-1 convolutions (kernels/cpu/conv2d.cpp
// calls them). F(m×m, 3×3) computes each m×m output tile from an (m + 2)×(m + 2) input window with
// (m + 2)² multiplications per (input, output) channel pair instead of 9·m²: F(2×2) 16 for 4
// outputs (2.25× fewer than the implicit GEMM), F(4×4) 36 for 16 (4× fewer). Forward and dx run
// either, and dw either adjoint: F(2×2)'s, or F(3×3, 4×4) (the 3×3 dw from 6×6 windows of x and
// 4×4 tiles of dy, 36 products per tile); winograd_tile_for says which.
//
// Accuracy, as max |error| / max |exact| against an f64 convolution on UNet-like data (N(0,1) or
// SiLU inputs, 1/√(9·Cin) weights, 32 to 256 channels, 8×8 to 32×32; docs/performance.md, the
// F(2×2) and F(4×4) entries): direct f32 2.6–3.6e-7, F(2×2) 2.0–6.4e-7, F(4×4) 1.1–2.2e-6 (dw
// with F(3×3, 4×4): 0.8–1.5e-6, F(2×2)'s dw 1.6–4.1e-7) — F(4×4) with the
// interpolation points 0, ±1, ½, −2, ∞ and its reduction summed in blocks of 32 channels
// (kernels/cpu/simd/winograd.cpp, kBlockKF4 in winograd.cpp). The usual points 0, ±1, ±2, ∞ with one
// long sum measured 4.0e-6–1.3e-5, past the op table's f32 bound (1e-5) on its own conv rows; the
// mixed points alone cut that ~3×, the 32-channel blocks stop it growing with the channel count.
//
// The steps, per block of tiles (sized so the block's transformed input and products stay in L2):
// the input transform V = Bᵀ·d·B of every tile's window (kernels/cpu/simd/winograd.h), then for
// each of the (m + 2)² transformed positions one GEMM [tiles, Cin] · [Cin, Cout] on the project's
// micro-kernel (kernels/cpu/simd/gemm_micro.h) against the transformed weights U = G·g·Gᵀ (packed
// once per call, shared by the threads), then the output transform Y = Aᵀ·M·A with the bias (and
// conv2d's fused residual). The
// blocks are spread over threads by parallel_for; every output element is computed by one thread
// in a fixed order, so results do not depend on the thread count. The weight gradient runs the
// adjoint steps (winograd_conv3x3_backward_weights below). Scratch: the calling
// thread's thread_scratch slot 1 (U, or dw's partial sums) and every thread's slots 2 and 3
// (V, M, dw's Z), grow-only.
#pragma once
#include <cstdint>

#include "kernels/conv2d.h"

namespace diffuse::kernels::cpu {

// Whether conv2d_forward (f32) runs d through Winograd: where it measured faster than the implicit
// GEMM (the rule and its numbers: fastest_algorithm in kernels/cpu/winograd.cpp) — today every
// 3×3, stride-1, pad-1 convolution (dw: from 32 input channels).
bool winograd_forward_wanted(const Conv2dDesc& d);
// The same for the input gradient dx (a 3×3 stride-1 pad-1 convolution of dy with the flipped,
// transposed kernel: Cout channels in, Cin out).
bool winograd_backward_data_wanted(const Conv2dDesc& d);
// The same for the weight gradient dw.
bool winograd_backward_weights_wanted(const Conv2dDesc& d);

// The tile of a pass: F(2×2, 3×3) (dw: its adjoint), F(4×4, 3×3) (dw: F(3×3, 4×4), 4×4 tiles of
// dy), or `chosen`: the one the rule picks for the shape and pass (winograd_tile_for). Tests ask
// for each by name.
enum class WinogradTile { chosen, f2x2, f4x4 };
enum class WinogradPass { forward, backward_data, backward_weights };
// The tile the rule runs d's pass with (when it runs Winograd).
WinogradTile winograd_tile_for(const Conv2dDesc& d, WinogradPass pass);

// y = conv(x, w) + bias + residual for a 3×3, stride-1, pad-1 d (bias and residual may be null;
// both are added by the output transform as it stores y). Throws on another shape.
void winograd_conv3x3_forward(const Conv2dDesc& d, const float* x, const float* w, const float* bias, float* y,
                              const float* residual = nullptr, WinogradTile tile = WinogradTile::chosen);
// dx = the input gradient of that convolution from dy (overwritten).
void winograd_conv3x3_backward_data(const Conv2dDesc& d, const float* w, const float* dy, float* dx,
                                    WinogradTile tile = WinogradTile::chosen);
// dw [Cout, 3, 3, Cin] = the weight gradient of that convolution from x and dy (overwritten): the
// adjoint of the forward's transforms, dU_xi = Σ over tiles of (A·dY·Aᵀ)_xiᵀ · (Bᵀ·d·B)_xi (16
// GEMMs [Cout, tiles]·[tiles, Cin]), then dw = Gᵀ·dU·G; or with F(3×3, 4×4) Z = G₄·dY·G₄ᵀ of 4×4
// dy tiles, V of 6×6 windows (36 GEMMs), dw = A₃ᵀ·dU·A₃. The sum over tiles runs in a fixed number
// of slices added in order (a shape-determined count), so dw does not depend on the thread count;
// the slices' partial sums are the calling thread's slot-1 scratch. With dbias (may be null) the
// bias gradient Σ dy over pixels comes from the same pass: position 5 of A·dY·Aᵀ is the sum of a
// tile's four dy (position 7 of G₄·dY·G₄ᵀ: its sixteen, / 36), so dbias is the column sum of that
// position over the tiles (in f64 per slice, added in order; kColumnSumSlot scratch) and dy is
// not read again.
void winograd_conv3x3_backward_weights(const Conv2dDesc& d, const float* x, const float* dy, float* dw,
                                       float* dbias = nullptr, WinogradTile tile = WinogradTile::chosen);

}  // namespace diffuse::kernels::cpu
