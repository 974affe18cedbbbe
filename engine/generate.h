// Image generation with a trained UNet: a sampler loop (DDPM, DDIM or DPM-Solver++(2M)) with
// optional classifier-free guidance, both halves in one batched forward. Deterministic for a seed:
// the initial noise and every step's noise come from Philox stream kSampler.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "engine/scheduler.h"
#include "nn/unet2d.h"

namespace diffuse {

struct GenerateOptions {
  int64_t count = 16;
  int64_t batch = 16;          // images per sampler loop (the forward sees 2x this with guidance)
  int64_t steps = 50;          // inference steps
  double eta = 0.0;            // DDIM η
  int64_t class_label = -1;    // -1: unconditional (the null class for class-conditional models)
  double guidance = 1.0;       // CFG weight w; 1 = plain conditional
  uint64_t seed = 0;
};

// Called after each sampler step of each batch: (batch index, step, steps); false cancels.
using GenerateCallback = std::function<bool(int64_t, int64_t, int64_t)>;

// Returns f32 [count, H, W, C] on the host, clamped to [-1, 1]. Batch k (images k·batch ...)
// draws its noise under a key derived from (seed, k), so a seed fixes every image.
Tensor generate(UNet2D& model, const SchedulerConfig& scheduler, const GenerateOptions& options,
                const GenerateCallback& callback = nullptr);

}  // namespace diffuse
