// Regularisation and loss kernels: inverted dropout whose mask is a pure function of
// (seed, philox::kDropout, offset, element) — so the backward regenerates it instead of storing
// it — and the (optionally per-batch-item weighted) mean squared error with its backward.
#pragma once
#include <cstdint>

#include "kernels/common.h"
#include "kernels/philox.h"

namespace diffuse::kernels {

struct DropoutDesc {
  int64_t n = 0;        // elements
  float p = 0.f;        // drop probability in [0, 1)
  double scale = 1.0;   // 1 / (1 - p), applied to kept elements
  uint64_t seed = 0;
  uint64_t offset = 0;  // Philox block offset; a draw of n elements uses philox::blocks_for(n)
  // Optional: a block position in the memory of the kernel's device, read when the kernel runs and
  // added to offset (a replayed training step's dropout position, written before the replay:
  // docs/design.md §4). Null: offset alone.
  const int64_t* base = nullptr;
};

// The first Philox block of d's draw (reads *d.base when given: call where that memory is readable).
DIFFUSE_HD inline uint64_t dropout_first_block(const DropoutDesc& d) {
  return d.base ? d.offset + static_cast<uint64_t>(*d.base) : d.offset;
}

// Element i is dropped when its uniform is below p (the same test on every device).
DIFFUSE_HD inline bool dropout_dropped(const DropoutDesc& d, uint64_t i) {
  return philox::uniform_at(d.seed, philox::kDropout, dropout_first_block(d), i) < d.p;
}

struct MseDesc {
  int64_t batch = 0;     // N: the leading dim, the unit a weight applies to
  int64_t per_item = 0;  // elements per batch item
};

namespace cpu {
// y = dropped ? 0 : x * scale. The backward is this same function applied to the output grad.
template <typename T>
void dropout_apply(const DropoutDesc& d, const T* x, T* y);
// Sum over all elements of w[n] * (pred - target)^2 (w == null: all ones), accumulated in double.
template <typename T>
double mse_weighted_sum(const MseDesc& d, const T* pred, const T* target, const T* w);
// gpred = coef * w[n] * (pred - target), coef = 2 * grad_of_loss / numel.
template <typename T>
void mse_backward(const MseDesc& d, double coef, const T* pred, const T* target, const T* w, T* gpred);
}  // namespace cpu

// Device launchers (kernels/cuda/loss.cu), f32: cuda:: takes device pointers, emu:: host pointers.
// dropout_apply draws the same mask as the CPU twin (dropout_dropped, element for element), and
// also takes bf16 storage (uint16_t bits; kept values scaled in f32, rounded once). The loss
// stays f32: bf16 autocast hands it the UNet's output cast back to f32 (nn/layers.h).
// mse_loss writes loss[0] = scale * sum_n w[n] * sum_i (pred - target)^2 as a deterministic
// two-stage sum (f32 within a thread, f64 across threads and blocks) through a workspace of
// mse_loss_workspace(d) doubles. mse_backward reads the upstream grad from memory
// (grad_loss, a device scalar; null means 1): gpred = coef * grad_loss * w[n] * (pred - target).
#define DIFFUSE_LOSS_LAUNCHERS                                                                          \
  void dropout_apply(const DropoutDesc& d, const float* x, float* y, Stream stream);                    \
  void dropout_apply(const DropoutDesc& d, const uint16_t* x, uint16_t* y, Stream stream);              \
  int64_t mse_loss_workspace(const MseDesc& d);                                                         \
  void mse_loss(const MseDesc& d, double scale, const float* pred, const float* target, const float* w, \
                float* loss, double* workspace, Stream stream);                                         \
  void mse_backward(const MseDesc& d, double coef, const float* grad_loss, const float* pred,           \
                    const float* target, const float* w, float* gpred, Stream stream);
namespace cuda {
DIFFUSE_LOSS_LAUNCHERS
}
namespace emu {
DIFFUSE_LOSS_LAUNCHERS
}
#undef DIFFUSE_LOSS_LAUNCHERS

}  // namespace diffuse::kernels
