// The `optim` family (DESIGN.md §5): AdamW over every parameter in one call, optionally fused
// with the EMA update, plus the global grad-norm and clipping. The CPU twin of a multi-tensor
// launch: the caller passes a list of per-tensor entries (raw pointers and sizes) and the kernel
// walks all of them in fixed-size chunks. Per-tensor bias corrections live in the entries because
// PyTorch keeps a step count per parameter (a parameter that got no grad does not advance).
#pragma once
#include <cstdint>

#include "kernels/common.h"

namespace diffuse::kernels {

// One parameter tensor's part of a fused update.
template <typename T>
struct OptimEntry {
  T* param = nullptr;
  const T* grad = nullptr;  // null: no AdamW update for this tensor (EMA only)
  T* exp_avg = nullptr;     // m; needed when grad != null
  T* exp_avg_sq = nullptr;  // v; needed when grad != null
  T* ema = nullptr;         // null: no EMA update for this tensor
  int64_t n = 0;
  double step_size = 0.0;              // lr / (1 - beta1^step)
  double bias_correction2_sqrt = 1.0;  // sqrt(1 - beta2^step)
};

struct AdamWHyper {
  double lr = 1e-4, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  double ema_decay = 0.0;  // for entries with ema != null: ema -= (1 - decay) * (ema - param)
};

// A tensor as pointer + element count, for the grad-norm and clipping lists.
template <typename T>
struct Span {
  T* data = nullptr;
  int64_t n = 0;
};

namespace cpu {
// Per element, in torch.optim.AdamW's order (decoupled weight decay first):
//   p *= 1 - lr*wd;  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g;
//   p -= step_size * m / (sqrt(v)/bias_correction2_sqrt + eps)
// then, where ema != null, the EMA of the updated parameter (diffusers' EMAModel form).
template <typename T>
void adamw_ema_step(const AdamWHyper& h, const OptimEntry<T>* entries, int64_t count);
// Sum of squares of every element of every span, in double; deterministic for any thread count.
template <typename T>
double sum_of_squares(const Span<const T>* spans, int64_t count);
// Multiplies every element of every span by factor.
template <typename T>
void scale_all(const Span<T>* spans, int64_t count, double factor);
}  // namespace cpu

}  // namespace diffuse::kernels
