// denoise_step: one sampler update (DDPM, DDIM, DPM-Solver++(2M)) for a whole batch, fused into
// one element-wise pass: CFG combine, x0 prediction, optional clipping, the update and fresh
// Philox noise (docs/design.md §5, §8). The host (engine/sampler.cpp) reduces every sampler, step and
// prediction type to the scalar coefficients of DenoiseStepDesc — a plain struct a CUDA kernel
// takes by value — so the per-element math below is the whole contract for every backend.
#pragma once
#include <cstdint>

#include "kernels/common.h"
#include "kernels/philox.h"

namespace diffuse::kernels {

enum class DenoiseUpdate : int32_t {
  ddpm = 0,        // x_prev = c_x·x + c_x0·x0 + σ·z           (posterior mean + variance)
  ddim = 1,        // x_prev = c_x0·x0 + c_eps·ε̂ + σ·z
  dpm_first = 2,   // x_prev = c_x·x + c_x0·x0                  (DPM-Solver++ first order)
  dpm_second = 3,  // x_prev = c_x·x + c_x0·x0 + c_d1·(x0 − x0_prev)   (2M, midpoint or heun)
};

struct DenoiseStepDesc {
  int64_t numel = 0;   // elements of x_t (the whole batch)
  int32_t update = 0;  // a DenoiseUpdate
  // Classifier-free guidance: when set, the model output holds 2·numel elements, the unconditional
  // half first, and m = m_u + guidance·(m_c − m_u). Otherwise m is the model output itself.
  int32_t guided = 0;
  double guidance = 1;
  // x0 = x0_from_x·x + x0_from_m·m (this encodes the prediction type), then clamped to
  // ±clip_range when clip is set.
  double x0_from_x = 0, x0_from_m = 0;
  int32_t clip = 0;
  double clip_range = 1;
  // ε̂ = eps_from_x·x + eps_from_m·m, used by ddim only; from the unclipped x0, as diffusers.
  double eps_from_x = 0, eps_from_m = 0;
  double c_x = 0, c_x0 = 0, c_eps = 0, c_d1 = 0;
  // Noise: noise_std·z with z = philox::normal_at(seed, stream, noise_offset, i) for element i;
  // nothing is drawn when noise_std is 0.
  double noise_std = 0;
  uint64_t seed = 0;
  uint64_t noise_offset = 0;
  uint32_t stream = philox::kSampler;
};

// Throws diffuse::Error for a descriptor no backend can run (unknown update, negative size...).
void validate(const DenoiseStepDesc& d);

// The guided model output m for one element.
template <typename T>
DIFFUSE_HD inline T guided_output(const DenoiseStepDesc& d, T m_uncond, T m_cond) {
  return m_uncond + static_cast<T>(d.guidance) * (m_cond - m_uncond);
}

// One element: x (x_t), m (guided model output), x0_prev (the previous step's x0; read by
// dpm_second only), z (a standard normal; read when noise_std != 0). Writes x_prev and x0.
template <typename T>
DIFFUSE_HD inline void denoise_element(const DenoiseStepDesc& d, T x, T m, T x0_prev, float z, T* x_prev, T* x0) {
  T x0v = static_cast<T>(d.x0_from_x) * x + static_cast<T>(d.x0_from_m) * m;
  if (d.clip) {
    const T r = static_cast<T>(d.clip_range);
    x0v = x0v < -r ? -r : (x0v > r ? r : x0v);
  }
  T out = static_cast<T>(d.c_x) * x + static_cast<T>(d.c_x0) * x0v;
  if (d.update == static_cast<int32_t>(DenoiseUpdate::ddim)) {
    T eps = static_cast<T>(d.eps_from_x) * x + static_cast<T>(d.eps_from_m) * m;
    out += static_cast<T>(d.c_eps) * eps;
  } else if (d.update == static_cast<int32_t>(DenoiseUpdate::dpm_second)) {
    out += static_cast<T>(d.c_d1) * (x0v - x0_prev);
  }
  if (d.noise_std != 0) out += static_cast<T>(d.noise_std) * static_cast<T>(z);
  *x_prev = out;
  *x0 = x0v;
}

namespace cpu {
// x: numel; model_out: numel (2·numel when guided); x0_prev: numel, only for dpm_second (may be
// null otherwise); x_prev, x0_out: numel. In place is allowed: x_prev == x, x0_out == x0_prev.
template <typename T>
void denoise_step(const DenoiseStepDesc& d, const T* x, const T* model_out, const T* x0_prev, T* x_prev,
                  T* x0_out);
}  // namespace cpu

// Device launchers (kernels/cuda/denoise_step.cu), f32 only, same buffers and in-place rules as
// cpu::denoise_step: cuda:: takes device pointers, emu:: host pointers (the SIMT emulator).
// The per_step variant is for CUDA graphs (nn/cuda/graph.h), whose replays repeat the captured
// kernel arguments: its kernel reads the descriptor from per_step (device memory, written on the
// stream before each launch or replay) and takes only numel and guided from d, which fix the
// buffers and the launch shape. x0_prev is required (any step may be second order); per_step's
// contents are the caller's to validate() on the host before it writes them.
#define DIFFUSE_DENOISE_STEP_LAUNCHERS                                                                       \
  void denoise_step(const DenoiseStepDesc& d, const float* x, const float* model_out, const float* x0_prev,  \
                    float* x_prev, float* x0_out, Stream stream);                                            \
  void denoise_step_per_step(const DenoiseStepDesc& d, const DenoiseStepDesc* per_step, const float* x,      \
                             const float* model_out, const float* x0_prev, float* x_prev, float* x0_out,     \
                             Stream stream);
namespace cuda {
DIFFUSE_DENOISE_STEP_LAUNCHERS
}
namespace emu {
DIFFUSE_DENOISE_STEP_LAUNCHERS
}
#undef DIFFUSE_DENOISE_STEP_LAUNCHERS

}  // namespace diffuse::kernels
