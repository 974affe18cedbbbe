// The `optim` family (docs/design.md §5): AdamW over every parameter in one call, optionally fused
// with the EMA update, plus the global grad-norm and clipping. The CPU twin of a multi-tensor
// launch: the caller passes a list of per-tensor entries (raw pointers and sizes) and the kernel
// walks all of them in fixed-size chunks. Per-tensor bias corrections live in the entries because
// PyTorch keeps a step count per parameter (a parameter that got no grad does not advance).
#pragma once
#include <cstdint>
#include <vector>

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

// ---- the device multi-tensor launch --------------------------------------------------------------
// One launch covers every tensor: the caller uploads a table of entries (OptimEntry or Span, with
// device pointers) and first_chunk[count + 1], the running total of each entry's chunks of
// kDeviceChunk elements; block b works on chunk b of the entry e with first_chunk[e] <= b <
// first_chunk[e + 1] (found by binary search).
constexpr int64_t kDeviceChunk = 16384;  // 64 elements per thread of a 256-thread block

template <typename Entry>
struct MultiTensorTable {
  const Entry* entries = nullptr;        // [count], device memory
  const int64_t* first_chunk = nullptr;  // [count + 1], device memory
  int64_t count = 0;
  int64_t chunks = 0;  // first_chunk[count]
};

// The host side of first_chunk for entries with an element count `n`.
template <typename Sized>
std::vector<int64_t> chunk_offsets(const Sized* list, int64_t count) {
  std::vector<int64_t> first(static_cast<size_t>(count) + 1, 0);
  for (int64_t e = 0; e < count; ++e) first[e + 1] = first[e] + (list[e].n + kDeviceChunk - 1) / kDeviceChunk;
  return first;
}

// Device launchers (kernels/cuda/optim.cu), f32: cuda:: takes device tables and buffers, emu::
// host ones. adamw_ema_step is the CPU twin's per-element arithmetic. sum_of_squares is
// deterministic: one f64 partial per chunk ([table.chunks] doubles of workspace), then one block
// adds them in a fixed order into out[0] (a double in device memory).
#define DIFFUSE_OPTIM_LAUNCHERS                                                                          \
  void adamw_ema_step(const AdamWHyper& h, const MultiTensorTable<OptimEntry<float>>& table, Stream stream); \
  void sum_of_squares(const MultiTensorTable<Span<const float>>& table, double* partials, double* out,       \
                      Stream stream);                                                                        \
  void scale_all(const MultiTensorTable<Span<float>>& table, double factor, Stream stream);
namespace cuda {
DIFFUSE_OPTIM_LAUNCHERS
}
namespace emu {
DIFFUSE_OPTIM_LAUNCHERS
}
#undef DIFFUSE_OPTIM_LAUNCHERS

}  // namespace diffuse::kernels
