// Winograd F(2×2, 3×3) and F(4×4, 3×3) for the CPU's f32 3×3 convolutions: the driver (blocking, weight transform,
// threads) around the per-path tile transforms of kernels/cpu/simd/winograd.h and the GEMM
// micro-kernel of kernels/cpu/simd/gemm_micro.h. See kernels/cpu/winograd.h for why and how.
#include "kernels/cpu/winograd.h"

#include <algorithm>
#include <string>

#include "diffuse/error.h"
#include "kernels/cpu/gemm_blocked.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd/gemm_micro.h"
#include "kernels/cpu/simd/elementwise.h"
#include "kernels/cpu/simd/winograd.h"
#include "kernels/gemm.h"

namespace diffuse::kernels::cpu {

namespace {

constexpr int kWeightSlot = 1, kInputSlot = 2, kProductSlot = 3;  // thread_scratch slots
// Transformed positions per tile for m×m output tiles: (m + 2)².
constexpr int64_t positions(int m) { return int64_t(m + 2) * (m + 2); }
constexpr int64_t kBlockK = 384;  // reduction channels per packed weight block (as the blocked GEMM's)
// F(4×4)'s reduction runs in blocks of at most 32 channels, each summed from zero in the
// micro-kernel's registers and added to the products in order: the rounding of one long f32 sum
// grows with its length (√K relative), and F(4×4)'s output transform (entries up to 8, 64 at the
// corner) magnifies it; with 32-channel blocks its error no longer grows with the channel count
// (measured: kernels/cpu/winograd.h).
constexpr int64_t kBlockKF4 = 32;
// Transformed input + products of one tile block: α² · tiles · (Cin + Cout) floats up to 512 KB,
// inside one core's L2 (1 MB on Zen 4, 2 MB on the Xeons these machines also are), in multiples
// of 24 tiles (every path's MR divides 24).
constexpr int64_t kBlockFloats = 128 * 1024;
constexpr int64_t kTileQuantum = 24, kMaxBlockTiles = 192;
// The α² position planes of a tile block's V, M and Z lie one plane size plus one cache line
// apart: a tile's transform touches all of them at once, and with 48 tiles of 64 channels (a multiple
// of 4 KiB per plane) 16 streams a power of two apart would share one L1 set.
constexpr int64_t kPlaneSkew = 16;
inline int64_t plane_stride(int64_t block, int64_t channels) { return block * channels + kPlaneSkew; }
// dw sums over every tile of the batch: in this many slices of consecutive tile blocks (fewer
// when there are fewer blocks), each into its own partial dU, added in slice order. A count fixed
// by the shape, not by the threads, so dw does not depend on the thread count.
constexpr int64_t kWeightGradSlices = 4;

bool is_3x3_same(const Conv2dDesc& d) {
  return d.kh == 3 && d.kw == 3 && d.stride == 1 && d.pad_top == 1 && d.pad_bottom == 1 && d.pad_left == 1 &&
         d.pad_right == 1;
}

// The rule, in one place: the implicit GEMM, F(2×2) or F(4×4) per shape and pass, whichever
// measured fastest. Winograd against the implicit GEMM, measured on an Intel
// Xeon (2 cores, 2 threads, avx512; docs/performance.md, the Winograd entry), the two alternated
// shape by shape on a shared machine (load 6–15). Forward and dx: 27 layer shapes (1 to 256
// channels in, 1 to 128 out, 8×8 to 32×32; every 3×3 same convolution of `tiny` and
// `fmnist-small` among them) at batch 1, 2, 4, 16, 32 and 64: Winograd 1.0–8× faster; the few
// cells below 1× (0.73–0.98×) were single cells that the neighbouring batches did not repeat, so
// every 3×3 stride-1 pad-1 convolution takes it. dw: 17 of those shapes at batch 1, 4, 16, 32 and
// 64: 1.1–26× faster from 32 channels in (single cells at 0.56–0.93×, not repeated at other
// batches), but 0.24–0.82× with 1 channel in (conv_in: its GEMMs are 1 column wide), so dw needs
// 32 channels in; nothing between 1 and 32 was measured for dw.
// F(4×4) against F(2×2) for forward and dx (CPU time of one thread, the two alternated, second
// session's load 6–7; docs/performance.md, the F(4×4) entry): every 3×3 same convolution of `tiny`
// and `fmnist-small` (22 shapes) at batch 1, 16, 32 and 64: F(4×4) 1.03–1.66× faster wherever
// N·h·w·32 ≥ Cin·Cout, and slower only below it — 0.48–0.93× at batch 1 with 128 or more
// channels at 8×8 and 16×16 (128→128, 192→128, 256→128), where its per-call weight transform
// (36 planes of Cin·Cout floats, 2.4 MB at 128→128) outweighs the GEMMs of so few tiles. dw,
// F(3×3, 4×4) against F(2×2)'s adjoint, the same way at the same shapes (from 32 channels in):
// 1.09–1.71× faster at 16×16 and 32×32 at every batch, but 0.66–1.15× at 8×8 (128→128 and
// 256→128: 0.66–0.70× at batch 1, 0.98–1.03× at 16 and 32), so F(3×3, 4×4) from 16×16 images.
enum class Algorithm { implicit_gemm, f2x2, f4x4 };
using Pass = WinogradPass;
Algorithm fastest_algorithm(const Conv2dDesc& d, Pass pass) {
  if (!is_3x3_same(d)) return Algorithm::implicit_gemm;
  if (pass == Pass::backward_weights)
    return d.cin < 32 ? Algorithm::implicit_gemm : d.h * d.w >= 256 ? Algorithm::f4x4 : Algorithm::f2x2;
  return d.n * d.h * d.w * 32 >= d.cin * d.cout ? Algorithm::f4x4 : Algorithm::f2x2;
}

// The tile size m a pass runs with: the tile asked for, or the rule's.
int tile_size(const Conv2dDesc& d, Pass pass, WinogradTile tile) {
  if (tile == WinogradTile::chosen) tile = winograd_tile_for(d, pass);
  return tile == WinogradTile::f4x4 ? 4 : 2;
}

// Tiles per block for k channels in and n out with p transformed positions per tile (kBlockFloats).
int64_t tile_block(int64_t k, int64_t n, int64_t p) {
  const int64_t fit = kBlockFloats / (p * (k + n));
  return std::clamp(fit / kTileQuantum * kTileQuantum, kTileQuantum, kMaxBlockTiles);
}

// The transformed weights as the micro-kernel's B panels, for m×m output tiles: for position xi
// and reduction block [p0, p0 + kc), panels of kc × nr floats at u + xi · xi_stride + p0 · n_pad
// (panel q holds columns q·nr ..), zero past n. xi_stride is k · n_pad plus one cache line: the
// weight transform writes every position at once, and 16 or 36 streams a power of two apart would
// share one L1 set.
struct PackedWeights {
  int m;
  int64_t k, n, nr, n_pad, kc_max, xi_stride;
  float* u;
  const float* panels(int64_t xi, int64_t p0) const { return u + xi * xi_stride + p0 * n_pad; }
};

// rows[(kk − kk0) · 9 + tap][nn] = w[nn, tap, kk] for kk in [kk0, kk1), nn < n, in blocks of 16
// output channels (both sides then touch 16 lines at a time).
void gather_rows(const float* __restrict w, int64_t cin, int64_t n, int64_t kk0, int64_t kk1, float* __restrict rows) {
  for (int64_t n0 = 0; n0 < n; n0 += 16) {
    const int64_t n1 = std::min(n, n0 + 16);
    for (int64_t tap = 0; tap < 9; ++tap)
      for (int64_t kk = kk0; kk < kk1; ++kk) {
        const float* __restrict src = w + tap * cin + kk;
        float* __restrict dst = rows + ((kk - kk0) * 9 + tap) * n;
        for (int64_t nn = n0; nn < n1; ++nn) dst[nn] = src[nn * 9 * cin];
      }
  }
}

// The packed U for w [Cout, 3, 3, Cin]: forward sums over ci (k = Cin, n = Cout); dx sums over co
// with the kernel flipped (k = Cout, n = Cin, g_{co→ci}(a, b) = w[co, 2 − a, 2 − b, ci]), whose rows
// of n floats are w's own rows. Forward's rows are gathered per chunk of 16 reduction channels into
// the thread's slot-2 scratch first.
PackedWeights transform_weights(const Conv2dDesc& d, const float* w, bool backward_data, int m) {
  PackedWeights pw;
  pw.m = m;
  pw.k = backward_data ? d.cout : d.cin;
  pw.n = backward_data ? d.cin : d.cout;
  pw.nr = simd::gemm_panel_width();
  pw.n_pad = (pw.n + pw.nr - 1) / pw.nr * pw.nr;
  const int64_t k_blocks = std::max<int64_t>(1, (pw.k + kBlockK - 1) / kBlockK);
  pw.kc_max = std::max<int64_t>(1, (pw.k + k_blocks - 1) / k_blocks);  // blocks of equal length
  if (m == 4) pw.kc_max = std::min(pw.kc_max, kBlockKF4);
  pw.xi_stride = pw.k * pw.n_pad + 16;
  pw.u = thread_scratch_of<float>(kWeightSlot, size_t(positions(m) * pw.xi_stride));
  const int64_t k = pw.k, n = pw.n, cin = d.cin;
  constexpr int64_t kChunk = 16;
  parallel_for((k + kChunk - 1) / kChunk, double(kChunk * n) * 48, [&](int64_t c0, int64_t c1) {
    float* rows = backward_data ? nullptr : thread_scratch_of<float>(kInputSlot, size_t(kChunk * 9 * n));
    for (int64_t kk0 = c0 * kChunk; kk0 < std::min(k, c1 * kChunk); kk0 += kChunk) {
      const int64_t kk1 = std::min(k, kk0 + kChunk);
      if (!backward_data) gather_rows(w, cin, n, kk0, kk1, rows);
      for (int64_t kk = kk0; kk < kk1; ++kk) {
        const float* g[9];
        for (int tap = 0; tap < 9; ++tap)
          g[tap] = backward_data ? w + (kk * 9 + (8 - tap)) * cin : rows + ((kk - kk0) * 9 + tap) * n;
        const int64_t p0 = kk / pw.kc_max * pw.kc_max, kc = std::min(pw.kc_max, k - p0);
        simd::winograd_weight_row(m, g, n, pw.nr, kc * pw.nr, pw.u + p0 * pw.n_pad + (kk - p0) * pw.nr, pw.xi_stride);
      }
    }
  });
  return pw;
}

// y [N, h, w, n] = the 3×3 pad-1 convolution of src [N, h, w, k] with the packed weights (in
// pw.m × pw.m output tiles), + bias + residual (each may be null), both added by the output
// transform as it stores y.
void convolve(int64_t images, int64_t h, int64_t w, const float* src, const PackedWeights& pw, const float* bias,
              const float* residual, float* y) {
  const int64_t k = pw.k, n = pw.n, tm = pw.m, pos = positions(pw.m);
  const int64_t tiles = images * ((h + tm - 1) / tm) * ((w + tm - 1) / tm);
  if (tiles == 0 || n == 0) return;
  int64_t block = tile_block(k, n, pos);
  // At least two blocks per thread when the tiles allow (a batch-1 sampling step).
  const int64_t per_thread = (tiles + 2 * region_threads() - 1) / (2 * region_threads());
  block = std::min(block, std::max(kTileQuantum, (per_thread + kTileQuantum - 1) / kTileQuantum * kTileQuantum));
  const int64_t blocks = (tiles + block - 1) / block;
  const double cost = double(block) * double(pos) * double(k) * double(n) / 4;
  parallel_for(blocks, cost, [&](int64_t b0, int64_t b1) {
    const int64_t v_stride = plane_stride(block, k), m_stride = plane_stride(block, n);
    float* v = thread_scratch_of<float>(kInputSlot, size_t(pos * v_stride));
    float* m = thread_scratch_of<float>(kProductSlot, size_t(pos * m_stride));
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t t0 = b * block, count = std::min(block, tiles - t0);
      simd::winograd_input_tiles(pw.m, src, h, w, k, t0, count, v, v_stride, k, 0);
      for (int64_t xi = 0; xi < pos; ++xi)
        simd::gemm_block_ksum(count, n, k, pw.kc_max, v + xi * v_stride, k, pw.panels(xi, 0), pw.n_pad,
                              m + xi * m_stride, n);
      simd::winograd_output_tiles(pw.m, m, m_stride, n, bias, residual, h, w, t0, count, y);
    }
  });
}

// dw [Cout, 3, 3, Cin] of the 3×3 pad-1 convolution of x [N, h, w, Cin] from dy [N, h, w, Cout],
// over m×m tiles of dy: dU_xi = Σ_tiles Z_xiᵀ · V_xi (F(2×2): Z = A·dY·Aᵀ, V = Bᵀ·d·B, dw = Gᵀ·dU·G;
// m = 4, F(3×3, 4×4): Z = G₄·dY·G₄ᵀ, V as F(4×4)'s forward, dw = A₃ᵀ·dU·A₃; one GEMM
// [Cout, tiles]·[tiles, Cin] per position, the tiles in blocks and the blocks in slices).
void weight_grad(const Conv2dDesc& d, const float* x, const float* dy, float* dw, float* dbias, int m) {
  const int64_t cin = d.cin, cout = d.cout, h = d.h, w = d.w, pos = positions(m);
  const int64_t tiles = d.n * ((h + m - 1) / m) * ((w + m - 1) / m);
  if (tiles == 0) {
    std::fill(dw, dw + cout * 9 * cin, 0.0f);
    if (dbias) std::fill(dbias, dbias + cout, 0.0f);
    return;
  }
  const int64_t nr = simd::gemm_panel_width(), cin_pad = (cin + nr - 1) / nr * nr;
  const int64_t mr = simd::gemm_panel_height();
  const int64_t plane = cout * cin, slice_stride = pos * plane;
  const int64_t block = tile_block(cin, cout, pos), blocks = (tiles + block - 1) / block;
  const int64_t slices = std::min(kWeightGradSlices, blocks);
  float* du = thread_scratch_of<float>(kWeightSlot, size_t(slices * slice_stride));
  // dbias's partial sums per slice: Σ of Z at position 5 (F(2×2): a tile's four dy summed) or 7
  // (F(3×3, 4×4): a tile's sixteen dy summed, / 36) over its tiles.
  const int64_t tile_sum_position = m == 4 ? 7 : 5;
  const double tile_sum_scale = m == 4 ? 36.0 : 1.0;
  double* bias_part = dbias ? thread_scratch_of<double>(kColumnSumSlot, size_t(slices * cout)) : nullptr;
  const double cost = double(tiles) * double(pos) * double(cin) * double(cout) / double(slices) / 4;
  parallel_for(slices, cost, [&](int64_t s0, int64_t s1) {
    // V (written by the input transform straight into the micro-kernel's B panels of NR columns),
    // Z, and one position's Zᵀ packed into MR-row panels.
    const int64_t v_stride = plane_stride(block, cin_pad), z_stride = plane_stride(block, cout);
    const int64_t v_size = pos * v_stride, z_size = pos * z_stride;
    const int64_t cout_pad = (cout + mr - 1) / mr * mr;
    float* v = thread_scratch_of<float>(kInputSlot, size_t(v_size + z_size + cout_pad * block));
    float* z = v + v_size;
    float* zt = z + z_size;
    // The last panel's columns past cin are never written by the transform: zero once.
    if (cin_pad != cin) std::fill(v, v + v_size, 0.0f);
    for (int64_t s = s0; s < s1; ++s) {
      const int64_t b_begin = s * blocks / slices, b_end = (s + 1) * blocks / slices;
      if (bias_part) std::fill(bias_part + s * cout, bias_part + (s + 1) * cout, 0.0);
      for (int64_t b = b_begin; b < b_end; ++b) {
        const int64_t t0 = b * block, count = std::min(block, tiles - t0);
        simd::winograd_input_tiles(m, x, h, w, cin, t0, count, v, v_stride, nr, count * nr);
        simd::winograd_output_grad_tiles(m, dy, h, w, cout, t0, count, z, z_stride);
        if (bias_part) simd::column_sum_rows(z + tile_sum_position * z_stride, count, cout, bias_part + s * cout);
        for (int64_t xi = 0; xi < pos; ++xi) {
          TransposedA{z + xi * z_stride, cout}(0, cout, 0, count, zt);
          simd::gemm_block_panels(cout, cin, count, zt, v + xi * v_stride, 1.0f, b == b_begin ? 0.0f : 1.0f, nullptr,
                                  du + s * slice_stride + xi * plane, cin);
        }
      }
    }
  });
  parallel_for(cout, double(pos * slices + 40) * double(cin), [&](int64_t c0, int64_t c1) {
    for (int64_t co = c0; co < c1; ++co)
      simd::winograd_weight_grad_row(m, du + co * cin, slices, slice_stride, plane, cin, dw + co * 9 * cin);
  });
  for (int64_t co = 0; co < cout && dbias; ++co) {
    double sum = 0;
    for (int64_t s = 0; s < slices; ++s) sum += bias_part[s * cout + co];
    dbias[co] = float(sum * tile_sum_scale);
  }
}

void check_shape(const Conv2dDesc& d, const char* what) {
  if (!is_3x3_same(d))
    throw Error(std::string(what) + ": Winograd takes a 3x3 kernel, stride 1, padding 1 on every side");
}

}  // namespace

bool winograd_forward_wanted(const Conv2dDesc& d) {
  return fastest_algorithm(d, Pass::forward) != Algorithm::implicit_gemm;
}

bool winograd_backward_data_wanted(const Conv2dDesc& d) {
  return fastest_algorithm(d, Pass::backward_data) != Algorithm::implicit_gemm;
}

bool winograd_backward_weights_wanted(const Conv2dDesc& d) {
  return fastest_algorithm(d, Pass::backward_weights) != Algorithm::implicit_gemm;
}

WinogradTile winograd_tile_for(const Conv2dDesc& d, WinogradPass pass) {
  return fastest_algorithm(d, pass) == Algorithm::f4x4 ? WinogradTile::f4x4 : WinogradTile::f2x2;
}

void winograd_conv3x3_forward(const Conv2dDesc& d, const float* x, const float* w, const float* bias, float* y,
                              const float* residual, WinogradTile tile) {
  check_shape(d, "winograd_conv3x3_forward");
  convolve(d.n, d.h, d.w, x, transform_weights(d, w, false, tile_size(d, Pass::forward, tile)), bias, residual, y);
}

void winograd_conv3x3_backward_data(const Conv2dDesc& d, const float* w, const float* dy, float* dx,
                                    WinogradTile tile) {
  check_shape(d, "winograd_conv3x3_backward_data");
  const PackedWeights pw = transform_weights(d, w, true, tile_size(d, Pass::backward_data, tile));
  convolve(d.n, d.h, d.w, dy, pw, nullptr, nullptr, dx);
}

void winograd_conv3x3_backward_weights(const Conv2dDesc& d, const float* x, const float* dy, float* dw,
                                       float* dbias, WinogradTile tile) {
  check_shape(d, "winograd_conv3x3_backward_weights");
  weight_grad(d, x, dy, dw, dbias, tile_size(d, Pass::backward_weights, tile));
}

}  // namespace diffuse::kernels::cpu
