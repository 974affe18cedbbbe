// Image generation with a trained UNet: a sampler loop (DDPM, DDIM or DPM-Solver++(2M)) with
// optional classifier-free guidance, both halves in one batched forward. Deterministic for a seed:
// the initial noise and every step's noise come from Philox stream kSampler.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "diffuse/diffuse.h"
#include "engine/scheduler_config.h"
#include "nn/unet2d.h"

namespace diffuse {

// The public GenerateRequest (its fields, defaults and checks are defined once, in
// include/diffuse/diffuse.h and engine/options.cpp) plus the two sampler settings a loop needs;
// the rest of SamplerOptions is resolved by the caller into the SchedulerConfig.
struct GenerateOptions : GenerateRequest {
  int64_t steps = SamplerOptions{}.steps;  // inference steps
  double eta = SamplerOptions{}.eta;       // DDIM η
  // Told once per generate() when a CUDA graph capture fails (cuda_graphs) and the steps run
  // eagerly; unset: one line on stderr.
  std::function<void(const std::string&)> on_notice = nullptr;
};

// Called after each sampler step of each batch: (batch index, step, steps); false cancels.
using GenerateCallback = std::function<bool(int64_t, int64_t, int64_t)>;

// Returns f32 [count, H, W, C] on the host, clamped to [-1, 1] unless options.clamp is false.
// Batch k (images k·batch ...) draws its noise under batch_noise_seed(seed, k), so a seed fixes
// every image; options.initial_noise (NHWC, all count images) replaces the x_T draws, and the
// steps' own noise still comes from that key.
// The Philox key of batch k's noise: x_T is Sampler::initial_noise(shape, batch_noise_seed(seed, k)).
uint64_t batch_noise_seed(uint64_t seed, int64_t batch_index);

Tensor generate(UNet2D& model, const SchedulerConfig& scheduler, const GenerateOptions& options,
                const GenerateCallback& callback = nullptr);

}  // namespace diffuse
