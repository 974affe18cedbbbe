// The `optim` family (docs/design.md §5): AdamW over every parameter in one call, optionally fused
// with the EMA update, plus the global grad-norm and clipping. The CPU twin of a multi-tensor
// launch: the caller passes a list of per-tensor entries (raw pointers and sizes) and the kernel
// walks all of them in fixed-size chunks. Per-tensor bias corrections live in the entries because
// PyTorch keeps a step count per parameter (a parameter that got no grad does not advance).
// A gated update (DeviceStepGate) instead reads lr, one shared step count and the EMA step from
// device memory, with grad clipping and the non-finite skip decided there too: a training step
// that never waits for the host, so that it can be replayed as one CUDA graph.
#pragma once
#include <cmath>
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

// diffusers' EMAModel decay schedule and its defaults, one definition for host and device (nn/optim.h
// calls it EMAOptions).
struct EmaSchedule {
  double decay = 0.9999;        // the ceiling of the schedule
  double min_decay = 0.0;       // its floor
  int64_t update_after_step = 0;
  bool use_ema_warmup = false;  // decay = 1 - (1 + step/inv_gamma)^-power instead of (1+step)/(10+step)
  double inv_gamma = 1.0;
  double power = 2.0 / 3.0;
};

// EMAModel.get_decay: s = optimization_step - update_after_step - 1; 0 when s <= 0, else the
// warmup or (1+s)/(10+s) rule clamped to [min_decay, decay].
DIFFUSE_HD inline double ema_decay_at(const EmaSchedule& e, int64_t optimization_step) {
  const int64_t step = optimization_step - e.update_after_step - 1;
  if (step <= 0) return 0.0;
  const double s = static_cast<double>(step);
  double decay = e.use_ema_warmup ? 1.0 - pow(1.0 + s / e.inv_gamma, -e.power) : (1.0 + s) / (10.0 + s);
  decay = decay < e.decay ? decay : e.decay;
  return decay > e.min_decay ? decay : e.min_decay;
}
// torch.optim.AdamW's bias corrections at 1-based step `step`: lr / (1 - beta1^step) and
// sqrt(1 - beta2^step).
DIFFUSE_HD inline double adam_step_size(double lr, double beta1, int64_t step) {
  return lr / (1.0 - pow(beta1, static_cast<double>(step)));
}
DIFFUSE_HD inline double adam_bias_correction2_sqrt(double beta2, int64_t step) {
  return sqrt(1.0 - pow(beta2, static_cast<double>(step)));
}
DIFFUSE_HD inline bool finite_value(double x) { return x - x == 0.0; }  // false for inf and NaN

// A training step whose per-step values live in memory of the parameters' device (docs/design.md
// §4: the step replayed as one CUDA graph reads them there; eager steps do the same). state is
// f64 [3]: the step's lr (written by the host before the step), the AdamW steps taken and the EMA
// steps taken (both advanced by train_status, on the device, unless the step was skipped).
// The update is skipped (no change to weights, moments or EMA) when the loss or the global grad
// norm sqrt(sum_sq) is not finite; with max_norm > 0 the grads are scaled by
// min(1, max_norm / (norm + 1e-6)) as they are read (torch's clip_grad_norm_).
struct DeviceStepGate {
  const double* state = nullptr;  // null: no gate, AdamWHyper's and the entries' values apply
  const double* sum_sq = nullptr;
  const float* loss = nullptr;
  double max_norm = 0.0;
  bool loss_gates = true;  // false: the loss is only recorded (data-parallel: the global norm decides)
};
constexpr int64_t kStateLr = 0, kStateAdamSteps = 1, kStateEmaSteps = 2, kStateWords = 3;
// A status row per step: loss, grad norm, skipped (0 or 1), lr.
constexpr int64_t kStatusWords = 4;

DIFFUSE_HD inline bool gate_skips(const DeviceStepGate& g) {
  if (g.loss && g.loss_gates && !finite_value(static_cast<double>(*g.loss))) return true;
  return g.sum_sq && !finite_value(sqrt(*g.sum_sq));
}
DIFFUSE_HD inline float gate_grad_scale(const DeviceStepGate& g) {
  if (!(g.max_norm > 0.0) || !g.sum_sq) return 1.0f;
  const double coef = g.max_norm / (sqrt(*g.sum_sq) + 1e-6);
  return coef < 1.0 ? static_cast<float>(coef) : 1.0f;
}

struct AdamWHyper {
  double lr = 1e-4, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  double ema_decay = 0.0;  // for entries with ema != null: ema -= (1 - decay) * (ema - param)
  // With gate.state: lr, every entry's bias corrections (one shared step count) and the EMA decay
  // (from `ema`) come from device memory when the kernel runs, and the gate may skip or clip.
  DeviceStepGate gate;
  EmaSchedule ema;
};

// The values a gated update uses (read from gate.state; call where that memory is readable).
struct GatedValues {
  double lr, step_size, bias_correction2_sqrt, ema_decay;
};
DIFFUSE_HD inline GatedValues gated_values(const AdamWHyper& h) {
  const double* st = h.gate.state;
  const double lr = st[kStateLr];
  const int64_t step = static_cast<int64_t>(st[kStateAdamSteps]) + 1;
  return {lr, adam_step_size(lr, h.beta1, step), adam_bias_correction2_sqrt(h.beta2, step),
          ema_decay_at(h.ema, static_cast<int64_t>(st[kStateEmaSteps]) + 1)};
}

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
// After a gated update (h.gate.state set): writes row (step - 1) mod rows of ring (f64 [rows,
// kStatusWords]) and, unless the gate skipped, advances state's AdamW and EMA step counts.
void train_status(const DeviceStepGate& g, const int64_t* step, double* ring, int64_t rows, double* state);
}  // namespace cpu

// The status row and the advance, one definition for host and device.
DIFFUSE_HD inline void train_status_row(const DeviceStepGate& g, const int64_t* step, double* ring, int64_t rows,
                                        double* state) {
  const bool skip = gate_skips(g);
  double* row = ring + ((*step - 1) % rows) * kStatusWords;
  row[0] = g.loss ? static_cast<double>(*g.loss) : 0.0;
  row[1] = g.sum_sq ? sqrt(*g.sum_sq) : 0.0;
  row[2] = skip ? 1.0 : 0.0;
  row[3] = state[kStateLr];
  if (!skip) {
    state[kStateAdamSteps] += 1.0;
    state[kStateEmaSteps] += 1.0;
  }
}

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
  void scale_all(const MultiTensorTable<Span<float>>& table, double factor, Stream stream);                    \
  void train_status(const DeviceStepGate& g, const int64_t* step, double* ring, int64_t rows, double* state,    \
                    Stream stream);
namespace cuda {
DIFFUSE_OPTIM_LAUNCHERS
}
namespace emu {
DIFFUSE_OPTIM_LAUNCHERS
}
#undef DIFFUSE_OPTIM_LAUNCHERS

}  // namespace diffuse::kernels
