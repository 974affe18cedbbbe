// The f32 GroupNorm of kernels/cpu/group_norm.cpp, one version per instruction-set path
// (kernels/cpu/simd/dispatch.h). The driver cuts a call into blocks — one image's run of whole
// groups — and runs the blocks in one parallel region; each function here does one block.
//
// Precision without f64 arithmetic per element: the statistics are two-pass. Pass one gives a
// first mean m0 per group; pass two sums d = h − m0 and d² (h the pre-norm input), so the mean is
// m0 + Σd/count with Σd small, and the variance Σd²/count − (Σd/count)² suffers no cancellation
// even when the mean is far larger than the spread. Lane sums are f32 over at most kFlushRows rows,
// then added into per-channel f64 sums. The output is (h − m0)·scale + bias with bias folding the
// small Σd/count in, so a large mean is never multiplied and then subtracted again in f32. Each
// pass walks the block's channels in chunks of up to four vectors over every row, so a chunk's
// running sums and per-channel constants live in registers.
#pragma once
#include <cstdint>

#include "kernels/cpu/simd/dispatch.h"

namespace diffuse::kernels::cpu::simd {

// One image's channels [c0, c0 + width), whole groups of group_size channels. Pointers are
// already offset to the block: x, y, dy, dx at (n, position 0, c0) with rows row_stride apart;
// add (may be null) and dadd at (n, c0); gamma, beta at c0; mean, rstd at (n, c0 / group_size).
struct GroupNormBlock {
  const float* x = nullptr;
  const float* add = nullptr;
  const float* gamma = nullptr;
  const float* beta = nullptr;
  int64_t spatial = 0, row_stride = 0, width = 0, group_size = 1;
  double eps = 1e-5;
  bool silu = false;
  // Scratch of the calling thread: kGroupNormScratchDoubles · width doubles and
  // kGroupNormScratchFloats · width floats.
  double* scratch_d = nullptr;
  float* scratch_f = nullptr;
};
constexpr int64_t kGroupNormScratchDoubles = 2;
constexpr int64_t kGroupNormScratchFloats = 5;

struct GroupNormForwardBlock {
  GroupNormBlock b;
  float* y = nullptr;
  double* mean = nullptr;  // [width / group_size], written
  double* rstd = nullptr;
};

struct GroupNormBackwardBlock {
  GroupNormBlock b;
  const double* mean = nullptr;  // the forward's, [width / group_size]
  const double* rstd = nullptr;
  const float* dy = nullptr;
  float* dx = nullptr;
  double* sum_dy = nullptr;   // [width], written: Σ over positions of the affine output's grad g
  double* sum_dyx = nullptr;  // [width], written: Σ g · xhat
  float* dadd = nullptr;      // [width] or null: Σ over positions of dx
};

DIFFUSE_SIMD_FUNCTION(void, group_norm_forward_block, (const GroupNormForwardBlock& f), (f))
DIFFUSE_SIMD_FUNCTION(void, group_norm_backward_block, (const GroupNormBackwardBlock& k), (k))

}  // namespace diffuse::kernels::cpu::simd
