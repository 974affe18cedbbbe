// The `noise` family: fused q_sample (docs/design.md §5, §8). One pass draws ε with Philox and writes
// x_t = √ᾱ·x0 + √(1−ᾱ)·ε and the training target (ε, v = √ᾱ·ε − √(1−ᾱ)·x0, or x0).
// x0, x_t and target are flat f32 [batch, per_sample]; ε of flat element k is
// philox::normal_at(seed, philox::kNoise, offset, k), so every device draws the same noise and
// the caller advances its offset by philox::blocks_for(batch * per_sample). Also the per-row
// draws of a training step (timesteps, label dropout, the schedule values at the drawn timesteps),
// so that a step's every random value is made on its device from a step number in memory.
#pragma once
#include <cstdint>
#include <string>

#include "kernels/common.h"
#include "kernels/philox.h"

namespace diffuse::kernels {

enum class NoiseTarget : int { epsilon = 0, v_prediction = 1, sample = 2 };

struct QSampleDesc {
  int64_t batch = 0;       // B
  int64_t per_sample = 0;  // elements of one sample (H*W*C)
  uint64_t seed = 0;
  uint64_t offset = 0;  // first Philox counter block of the draw
  NoiseTarget target = NoiseTarget::epsilon;
  // Optional: an i64 step number in the memory of the kernel's device, read when the kernel runs;
  // the draw then starts at block offset + step · step_blocks (a replayed CUDA graph's training
  // step takes its noise position from memory written before the replay, docs/design.md §4).
  const int64_t* step = nullptr;
  uint64_t step_blocks = 0;
};

// The first Philox block of d's draw (reads *d.step when given: call where that memory is readable).
DIFFUSE_HD inline uint64_t q_sample_offset(const QSampleDesc& d) {
  return d.step ? d.offset + static_cast<uint64_t>(*d.step) * d.step_blocks : d.offset;
}

// ---- a training step's per-row draws (engine/train_step.cpp's Philox layout) --------------------
// Row i of this rank is global row first_row + i of a global batch of global_rows. Step s's draws
// use counter block s·blocks_for(global_rows) of the streams kTimesteps and kLabelDrop, lane =
// the global row: the timestep is min(⌊u·T⌋, T − 1) and the label is replaced by null_class when
// its uniform is below p_uncond. The per-timestep values come from tables the host filled from
// the noise schedule, so the draws are the host's bits on every device.
struct TrainDrawDesc {
  int64_t batch = 0;        // rows of this rank
  int64_t first_row = 0;    // its first global row
  int64_t global_rows = 0;  // rows of the global batch (all ranks)
  uint64_t seed = 0;
  int64_t num_timesteps = 0;  // T: the tables' length
  double p_uncond = 0;        // label dropout probability (with labels)
  int64_t null_class = 0;     // the label a dropped row gets
  bool weights = false;       // also gather the min-SNR weight table
};

// Row `row`'s draws at step `step`: its timestep, and whether its label drops.
DIFFUSE_HD inline int64_t train_draw_timestep(const TrainDrawDesc& d, int64_t step, int64_t row) {
  const uint64_t block = static_cast<uint64_t>(step) * philox::blocks_for(static_cast<uint64_t>(d.global_rows));
  const float u = philox::uniform_at(d.seed, philox::kTimesteps, block, static_cast<uint64_t>(d.first_row + row));
  const int64_t t = static_cast<int64_t>(u * static_cast<float>(d.num_timesteps));
  return t < d.num_timesteps - 1 ? t : d.num_timesteps - 1;
}
DIFFUSE_HD inline bool train_draw_drops_label(const TrainDrawDesc& d, int64_t step, int64_t row) {
  const uint64_t block = static_cast<uint64_t>(step) * philox::blocks_for(static_cast<uint64_t>(d.global_rows));
  return philox::uniform_at(d.seed, philox::kLabelDrop, block, static_cast<uint64_t>(d.first_row + row)) < d.p_uncond;
}

// The buffers of a train_draws call (device pointers for the launchers, host ones for the twin).
// tables: f32 [3, T] = √ᾱ_t, √(1−ᾱ_t) and the min-SNR weight of each timestep (the last row read
// only with d.weights). coefs: f32 [3, batch] = the rows' √ᾱ, √(1−ᾱ) and weight (the same).
// labels_in/labels_out: i64 [batch], both null or both given.
struct TrainDrawBuffers {
  const int64_t* step = nullptr;  // [1], the 1-based training step
  const float* tables = nullptr;
  const int64_t* labels_in = nullptr;
  int64_t* timesteps = nullptr;  // [batch]
  float* coefs = nullptr;
  int64_t* labels_out = nullptr;
};

// Row i's outputs at step `step`, one definition for the CPU twin and the kernel.
DIFFUSE_HD inline void train_draw_row(const TrainDrawDesc& d, const TrainDrawBuffers& b, int64_t step, int64_t i) {
  const int64_t T = d.num_timesteps, B = d.batch;
  const int64_t t = train_draw_timestep(d, step, i);
  b.timesteps[i] = t;
  b.coefs[i] = b.tables[t];
  b.coefs[B + i] = b.tables[T + t];
  if (d.weights) b.coefs[2 * B + i] = b.tables[2 * T + t];
  if (b.labels_out) b.labels_out[i] = train_draw_drops_label(d, step, i) ? d.null_class : b.labels_in[i];
}

inline void check_train_draws(const TrainDrawDesc& d, const TrainDrawBuffers& b) {
  require(d.batch >= 0 && d.first_row >= 0 && d.global_rows >= d.first_row + d.batch && d.num_timesteps > 0, [&] {
    return "train_draws: bad rows (batch " + std::to_string(d.batch) + ", first row " + std::to_string(d.first_row) +
           ", global rows " + std::to_string(d.global_rows) + ") or timestep count " + std::to_string(d.num_timesteps);
  });
  require(d.batch == 0 || (b.step && b.tables && b.timesteps && b.coefs), "train_draws: null buffer");
  require(!b.labels_in == !b.labels_out, "train_draws: labels_in and labels_out must both be given or both null");
}

// The per-element math, shared by the CPU twin and the kernel so both round identically.
// a = √ᾱ_t and s = √(1−ᾱ_t) of the element's sample.
DIFFUSE_HD inline void q_sample_element(float x0, float eps, float a, float s, NoiseTarget target, float& x_t,
                                        float& out_target) {
  x_t = a * x0 + s * eps;
  out_target = target == NoiseTarget::epsilon ? eps : target == NoiseTarget::v_prediction ? a * eps - s * x0 : x0;
}

// Argument checks shared by every implementation (a bad descriptor is a caller bug, reported
// as diffuse::Error rather than an out-of-bounds write).
inline void check_q_sample(const QSampleDesc& d, const void* x0, const void* sqrt_ab, const void* sqrt_1mab,
                           const void* x_t, const void* target) {
  require(d.batch >= 0 && d.per_sample >= 0, [&] {
    return "q_sample: batch and per_sample must be >= 0, got " + std::to_string(d.batch) + " and " +
           std::to_string(d.per_sample);
  });
  int t = static_cast<int>(d.target);
  require(t >= 0 && t <= 2, [&] { return "q_sample: unknown target " + std::to_string(t); });
  require(d.batch * d.per_sample == 0 || (x0 && sqrt_ab && sqrt_1mab && x_t && target), "q_sample: null buffer");
}

namespace cpu {
// sqrt_ab, sqrt_1mab: [batch] coefficients the host computed from the schedule and the drawn
// timesteps. x_t and target must not overlap x0.
void q_sample(const QSampleDesc& d, const float* x0, const float* sqrt_ab, const float* sqrt_1mab, float* x_t,
              float* target);
// Row i: timesteps[i], coefs[0..2][i] gathered from the tables at it, labels_out[i] (labels_in[i]
// or null_class). step is read on the host.
void train_draws(const TrainDrawDesc& d, const TrainDrawBuffers& b);
}  // namespace cpu

// Device launchers (kernels/cuda/noise.cu): cuda:: takes device pointers, emu:: host pointers.
#define DIFFUSE_NOISE_LAUNCHERS                                                                         \
  void q_sample(const QSampleDesc& d, const float* x0, const float* sqrt_ab, const float* sqrt_1mab, \
                float* x_t, float* target, Stream stream);                                           \
  void train_draws(const TrainDrawDesc& d, const TrainDrawBuffers& b, Stream stream);
namespace cuda {
DIFFUSE_NOISE_LAUNCHERS
}
namespace emu {
DIFFUSE_NOISE_LAUNCHERS
}
#undef DIFFUSE_NOISE_LAUNCHERS

}  // namespace diffuse::kernels
