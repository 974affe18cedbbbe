// The f32 AdamW + EMA loop of kernels/cpu/optim.cpp, one version per instruction-set path
// (kernels/cpu/simd/dispatch.h): one pass over a chunk of one parameter tensor reads and writes
// p, m, v and the EMA shadow once each. The arithmetic is the scalar loop's, operation for
// operation, with sqrt and division correctly rounded and every product rounded before its add
// (no fused multiply-add: torch.optim.AdamW rounds twice, and the parity tests see the
// difference), so every path gives the same bits as the scalar code.
#pragma once
#include <cstdint>

#include "kernels/cpu/simd/dispatch.h"

namespace diffuse::kernels::cpu::simd {

struct AdamWChunk {
  float* param = nullptr;
  const float* grad = nullptr;  // null: EMA only
  float* exp_avg = nullptr;
  float* exp_avg_sq = nullptr;
  float* ema = nullptr;  // null: no EMA
  int64_t n = 0;
  float decay_factor = 1, beta1 = 0, one_minus_beta1 = 1, beta2 = 0, one_minus_beta2 = 1, eps = 0;
  float neg_step_size = 0, bias_correction2_sqrt = 1, one_minus_ema_decay = 0;
  float grad_scale = 1;  // the clipping factor each grad is multiplied by as it is read (1: exact)
};

DIFFUSE_SIMD_FUNCTION(void, adamw_ema_chunk, (const AdamWChunk& c), (c))

}  // namespace diffuse::kernels::cpu::simd
