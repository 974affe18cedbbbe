// The `noise` family: fused q_sample (docs/design.md §5, §8). One pass draws ε with Philox and writes
// x_t = √ᾱ·x0 + √(1−ᾱ)·ε and the training target (ε, v = √ᾱ·ε − √(1−ᾱ)·x0, or x0).
// x0, x_t and target are flat f32 [batch, per_sample]; ε of flat element k is
// philox::normal_at(seed, philox::kNoise, offset, k), so every device draws the same noise and
// the caller advances its offset by philox::blocks_for(batch * per_sample).
#pragma once
#include <cstdint>
#include <string>

#include "kernels/common.h"

namespace diffuse::kernels {

enum class NoiseTarget : int { epsilon = 0, v_prediction = 1, sample = 2 };

struct QSampleDesc {
  int64_t batch = 0;       // B
  int64_t per_sample = 0;  // elements of one sample (H*W*C)
  uint64_t seed = 0;
  uint64_t offset = 0;  // first Philox counter block of the draw
  NoiseTarget target = NoiseTarget::epsilon;
};

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
}  // namespace cpu

// Device launchers (kernels/cuda/noise.cu): cuda:: takes device pointers, emu:: host pointers.
#define DIFFUSE_NOISE_LAUNCHERS                                                                         \
  void q_sample(const QSampleDesc& d, const float* x0, const float* sqrt_ab, const float* sqrt_1mab, \
                float* x_t, float* target, Stream stream);
namespace cuda {
DIFFUSE_NOISE_LAUNCHERS
}
namespace emu {
DIFFUSE_NOISE_LAUNCHERS
}
#undef DIFFUSE_NOISE_LAUNCHERS

}  // namespace diffuse::kernels
