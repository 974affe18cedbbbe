// Sampler: a SchedulerConfig plus a number of inference steps becomes the timestep list and, for
// each step, the scalar coefficients of the denoise_step op (DDPM, DDIM, DPM-Solver++(2M)), all as
// diffusers' schedulers compute them (docs/design.md §8). Each sampler is a small unit — one file
// (engine/sampler_<name>.cpp) whose plan function builds those per-step coefficients — registered
// in one table (sampler_units()). The loop, Sampler::sample, is the only sampling loop: the CLI
// and the library (through engine/generate.h), the benchmark and the tests all run it. The model
// is a denoise callback, and all randomness comes from Philox stream kSampler under one seed, so
// a seed fixes the samples on every device.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "engine/noise_schedule.h"
#include "engine/scheduler_config.h"
#include "kernels/denoise_step.h"
#include "nn/tensor.h"

namespace diffuse {

// What one run of the loop did (SampleOptions::stats): how its steps ran, for the benchmark's
// report and the tests.
struct SampleStats {
  int64_t eager_steps = 0;    // steps whose work the host queued itself (warm-up, graphs off or refused, CPU)
  int64_t graph_replays = 0;  // steps replayed from the CUDA graph (the captured step included)
  std::string graph_refused;  // why the capture failed; "" when it did not fail or was not tried
};

struct SampleOptions {
  uint64_t seed = 0;
  // Classifier-free guidance weight w. When set, the model callback returns 2·B rows for B rows of
  // x_t — the unconditional outputs first, then the conditional ones — and the step uses
  // m = m_uncond + w·(m_cond − m_uncond).
  std::optional<double> guidance;
  // CUDA graphs (docs/design.md §4), for sample() with a TensorModelFn on a CUDA x_T: after two
  // eager steps, the model call and the update are captured once and replayed for every remaining
  // step, bit-identical to eager steps. Ignored on the CPU and with a ModelFn.
  bool cuda_graphs = false;
  // Called once, with the reason, when the capture fails and the steps go on eagerly.
  std::function<void(const std::string&)> on_graph_fallback = nullptr;
  // Tests only: runs inside the captured region after the model call (to inject a forbidden call).
  std::function<void()> inside_capture_for_test = nullptr;
  // When set, sample() fills it in (reset at the start of the run).
  SampleStats* stats = nullptr;
};

// What a sampler unit builds for a config and a number of inference steps: the timesteps the model
// is called at and step i's denoise_step coefficients (numel, guidance, seed and noise offset are
// filled in by Sampler::step).
struct SamplerPlan {
  std::vector<int64_t> timesteps;
  std::vector<double> sigmas;  // DPM-Solver++ only: σ per step plus the final one
  std::vector<kernels::DenoiseStepDesc> steps;
};

// One sampler. plan() checks the settings only that sampler reads (the ones every sampler shares
// are checked by Sampler's constructor first) and throws diffuse::Error naming a bad one.
struct SamplerUnit {
  SamplerKind kind;
  SamplerPlan (*plan)(const SchedulerConfig& config, const NoiseSchedule& schedule, int64_t num_inference_steps);
};

// The table of every sampler, one entry per SamplerKind; sampler_unit(kind) finds its entry.
const std::vector<SamplerUnit>& sampler_units();
const SamplerUnit& sampler_unit(SamplerKind kind);

class Sampler {
 public:
  // The denoise callback: the model's output (ε̂, v̂ or x̂0, per prediction_type) for x_t at
  // timestep t — with guidance, the [uncond; cond] rows of SampleOptions::guidance.
  using ModelFn = std::function<Tensor(const Tensor& x_t, int64_t t)>;
  // The same, reading the timestep from t: an i64 [1] tensor on x_t's device, which a replayed CUDA
  // graph finds rewritten before each replay (a host integer would be frozen into the graph).
  using TensorModelFn = std::function<Tensor(const Tensor& x_t, const Tensor& t)>;
  // Called after each step with the new x and this step's x0 prediction; returning false stops the
  // loop there (sample() then returns that x).
  using StepFn = std::function<bool(int64_t step, int64_t num_steps, const Tensor& x, const Tensor& x0)>;

  // With SampleOptions::cuda_graphs, the steps run eagerly before the capture (the caching
  // allocator then holds every block a step uses).
  static constexpr int64_t kGraphWarmupSteps = 2;

  Sampler(const SchedulerConfig& config, int64_t num_inference_steps);

  const SchedulerConfig& config() const { return config_; }
  const NoiseSchedule& schedule() const { return schedule_; }
  int64_t num_steps() const { return static_cast<int64_t>(plan_.timesteps.size()); }
  const std::vector<int64_t>& timesteps() const { return plan_.timesteps; }
  // DPM-Solver++ only: σ_i = √((1−ᾱ)/ᾱ) for each step plus the final one (num_steps + 1 values).
  const std::vector<double>& sigmas() const { return plan_.sigmas; }
  // Step i's coefficients; numel, guidance, seed and noise offset are filled in by step().
  const kernels::DenoiseStepDesc& step_desc(int64_t i) const;

  // x_T ~ N(0, I): Philox stream kSampler under `seed`, block offset 0.
  static Tensor initial_noise(const Shape& shape, uint64_t seed, DType dtype = DType::f32);
  // The Philox block offset of step i's noise for a batch of numel elements (after x_T's blocks).
  static uint64_t noise_offset(int64_t step, int64_t numel);

  // Step i: x (x_t) becomes x_{prev} in place; x0 becomes this step's x0 prediction and must hold
  // the previous step's on entry (DPM-Solver++ second order reads it; allocated when undefined).
  void step(int64_t i, const Tensor& model_output, Tensor& x, Tensor& x0, const SampleOptions& opt) const;
  // Step i's complete descriptor for x_t (numel, guidance, seed and noise offset filled in).
  kernels::DenoiseStepDesc full_step_desc(int64_t i, const Tensor& x, const SampleOptions& opt) const;
  // The checks step() makes: the model output matches x_t (2B rows when guided), x0 matches x_t.
  static void check_step_buffers(const Tensor& model_output, const Tensor& x, const Tensor& x0,
                                 const SampleOptions& opt);
  // The sampling loop from x_T (not modified): model, then step, for each timestep; returns x_0
  // (or the x of the step where on_step returned false). Runs with autograd recording off.
  Tensor sample(const ModelFn& model, const Tensor& x_T, const SampleOptions& opt, const StepFn& on_step = {}) const;
  // The same loop for a model that reads its timestep from a tensor; on CUDA each step's timestep
  // and coefficients are written into device memory the step reads (from tables uploaded once),
  // which lets opt.cuda_graphs replay the steps (engine/sampler_graph.cpp).
  Tensor sample(const TensorModelFn& model, const Tensor& x_T, const SampleOptions& opt,
                const StepFn& on_step = {}) const;

 private:
  SchedulerConfig config_;
  NoiseSchedule schedule_;
  SamplerPlan plan_;
};

// diffusers' set_timesteps for DDPMScheduler/DDIMScheduler (and, with dpm = true, for
// DPMSolverMultistepScheduler without Karras sigmas) for a spacing and steps_offset.
std::vector<int64_t> spaced_timesteps(TimestepSpacing spacing, int64_t num_train_timesteps, int64_t steps,
                                      int64_t steps_offset, bool dpm);

}  // namespace diffuse
