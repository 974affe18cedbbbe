// Sampler (see sampler.h): timestep spacing, the sampler table, the shared checks and the one
// sampling loop; the per-sampler coefficients are in engine/sampler_<name>.cpp. Every coefficient is computed in f64 on the host from ᾱ (DDPM, DDIM)
// or from the σ list (DPM-Solver++), following diffusers' step() line by line; diffusers does the
// same arithmetic in float32, so the two agree to float32 rounding. Rounding of timesteps follows
// numpy: round half to even (std::nearbyint in the default rounding mode).
#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "engine/sampler_units.h"
#include "nn/autograd.h"
#include "nn/layers.h"
#include "nn/ops.h"

namespace diffuse {

namespace k = kernels;
using sampler_detail::fail;

namespace {

// round(np.linspace(0, last, count)) in ascending order.
std::vector<int64_t> rounded_linspace(int64_t last, int64_t count) {
  std::vector<int64_t> out(static_cast<size_t>(count), 0);
  if (count < 2) return out;
  const double step = static_cast<double>(last) / static_cast<double>(count - 1);
  for (int64_t i = 0; i + 1 < count; ++i) out[i] = static_cast<int64_t>(std::nearbyint(static_cast<double>(i) * step));
  out[count - 1] = last;
  return out;
}

}  // namespace

std::vector<int64_t> spaced_timesteps(TimestepSpacing spacing, int64_t T, int64_t n, int64_t steps_offset, bool dpm) {
  std::vector<int64_t> ts;
  switch (spacing) {
    case TimestepSpacing::linspace: {
      // DPM-Solver++ spaces n+1 points and drops t = 0.
      std::vector<int64_t> up = rounded_linspace(T - 1, dpm ? n + 1 : n);
      ts.assign(up.rbegin(), up.rend());
      if (dpm) ts.pop_back();
      break;
    }
    case TimestepSpacing::leading: {
      const int64_t ratio = T / (dpm ? n + 1 : n);
      for (int64_t i = n - 1 + (dpm ? 1 : 0); i >= (dpm ? 1 : 0); --i) ts.push_back(i * ratio + steps_offset);
      break;
    }
    case TimestepSpacing::trailing: {
      // np.round(np.arange(T, 0, -T/n)) - 1, with numpy's arange arithmetic (start + i·delta).
      // numpy's length ceil(T / (T/n)) is n + 1 for some n (e.g. 61 of 1000), appending a
      // timestep −1 in diffusers; we keep exactly n steps.
      const double ratio = static_cast<double>(T) / static_cast<double>(n);
      const double delta = (static_cast<double>(T) - ratio) - static_cast<double>(T);
      for (int64_t i = 0; i < n; ++i)
        ts.push_back(static_cast<int64_t>(std::nearbyint(static_cast<double>(T) + static_cast<double>(i) * delta)) - 1);
      break;
    }
  }
  return ts;
}

namespace sampler_detail {

void fail(const std::string& what) { throw Error("sampler: " + what); }

void set_x0_coefs(k::DenoiseStepDesc& d, PredictionType p, double a, double s) {
  switch (p) {
    case PredictionType::epsilon: d.x0_from_x = 1 / a, d.x0_from_m = -s / a; break;  // (x − s·ε̂)/a
    case PredictionType::v_prediction: d.x0_from_x = a, d.x0_from_m = -s; break;      // a·x − s·v̂
    case PredictionType::sample: d.x0_from_x = 0, d.x0_from_m = 1; break;
  }
}

std::vector<int64_t> checked_timesteps(const SchedulerConfig& config, int64_t num_inference_steps, bool dpm) {
  const int64_t T = config.num_train_timesteps;
  std::vector<int64_t> ts = spaced_timesteps(config.spacing(), T, num_inference_steps, config.steps_offset, dpm);
  for (int64_t t : ts)
    if (t < 0 || t >= T)
      fail("timestep " + std::to_string(t) + " (" + timestep_spacing_name(config.spacing()) + " spacing, steps_offset " +
           std::to_string(config.steps_offset) + ") is outside [0, " + std::to_string(T) + ")");
  return ts;
}

}  // namespace sampler_detail

// The sampler table: adding a sampler is a SamplerKind (engine/scheduler_config.h, with its names), a
// unit file defining its plan function, and a row here.
const std::vector<SamplerUnit>& sampler_units() {
  static const std::vector<SamplerUnit> units = {
      {SamplerKind::ddpm, sampler_detail::plan_ddpm},
      {SamplerKind::ddim, sampler_detail::plan_ddim},
      {SamplerKind::dpmpp_2m, sampler_detail::plan_dpmpp_2m},
  };
  return units;
}

const SamplerUnit& sampler_unit(SamplerKind kind) {
  for (const SamplerUnit& u : sampler_units())
    if (u.kind == kind) return u;
  fail(std::string("no sampler unit for ") + sampler_kind_name(kind));
}

// The checks every sampler shares; each unit checks its own settings.
Sampler::Sampler(const SchedulerConfig& config, int64_t num_inference_steps)
    : config_(config), schedule_(config.schedule_options()) {
  const int64_t T = config.num_train_timesteps;
  if (num_inference_steps < 1 || num_inference_steps > T)
    fail(std::to_string(num_inference_steps) + " inference steps: expected 1 to num_train_timesteps (" +
         std::to_string(T) + ")");
  if (config.steps_offset < 0) fail("steps_offset must be >= 0");
  if (config.clip_sample && !(config.clip_sample_range > 0)) fail("clip_sample_range must be > 0");
  if (config.solver_order != 1 && config.solver_order != 2)
    fail("solver_order must be 1 or 2, got " + std::to_string(config.solver_order));
  plan_ = sampler_unit(config.kind).plan(config_, schedule_, num_inference_steps);
}

const k::DenoiseStepDesc& Sampler::step_desc(int64_t i) const {
  if (i < 0 || i >= num_steps())
    fail("step " + std::to_string(i) + " outside [0, " + std::to_string(num_steps()) + ")");
  return plan_.steps[i];
}

Tensor Sampler::initial_noise(const Shape& shape, uint64_t seed, DType dtype) {
  return Tensor::randn(shape, seed, philox::kSampler, 0, dtype);
}

uint64_t Sampler::noise_offset(int64_t step, int64_t numel) {
  return philox::blocks_for(static_cast<uint64_t>(numel)) * static_cast<uint64_t>(step + 1);
}

void Sampler::step(int64_t i, const Tensor& model_output, Tensor& x, Tensor& x0, const SampleOptions& opt) const {
  if (!x.defined() || !model_output.defined()) fail("step needs x_t and a model output");
  if (!x0.defined()) x0 = Tensor::zeros(x.shape(), x.dtype(), x.device());
  check_step_buffers(model_output, x, x0, opt);
  ops::denoise_step(full_step_desc(i, x, opt), model_output, x, x0);
}

void Sampler::check_step_buffers(const Tensor& model_output, const Tensor& x, const Tensor& x0,
                                 const SampleOptions& opt) {
  Shape expected = x.shape();
  if (opt.guidance) {
    if (expected.empty()) fail("classifier-free guidance needs a batch dimension on x_t " + x.describe());
    expected[0] *= 2;
  }
  if (model_output.shape() != expected || model_output.dtype() != x.dtype() || model_output.device() != x.device())
    fail("model output " + model_output.describe() + " does not match x_t " + x.describe() +
         (opt.guidance ? " (with guidance: [uncond; cond] rows, " + shape_str(expected) + ")" : std::string()));
  if (x0.shape() != x.shape() || x0.dtype() != x.dtype() || x0.device() != x.device())
    fail("x0 buffer " + x0.describe() + " does not match x_t " + x.describe());
}

k::DenoiseStepDesc Sampler::full_step_desc(int64_t i, const Tensor& x, const SampleOptions& opt) const {
  k::DenoiseStepDesc d = step_desc(i);
  d.numel = x.numel();
  d.guided = opt.guidance ? 1 : 0;
  d.guidance = opt.guidance.value_or(1.0);
  d.seed = opt.seed;
  d.noise_offset = noise_offset(i, x.numel());
  d.stream = philox::kSampler;
  return d;
}

Tensor Sampler::sample(const ModelFn& model, const Tensor& x_T, const SampleOptions& opt, const StepFn& on_step) const {
  if (!x_T.defined()) fail("x_T is undefined");
  NoGrad no_grad;
  const KeepBf16Weights kept;  // under autocast, the weights' bf16 copies are made once for the loop
  Tensor x = x_T.detach().clone();
  Tensor x0 = Tensor::zeros(x.shape(), x.dtype(), x.device());
  if (opt.stats) *opt.stats = SampleStats{};
  for (int64_t i = 0; i < num_steps(); ++i) {
    Tensor out = model(x, plan_.timesteps[i]);
    step(i, out, x, x0, opt);
    if (opt.stats) ++opt.stats->eager_steps;
    if (on_step && !on_step(i, num_steps(), x, x0)) break;
  }
  return x;
}

}  // namespace diffuse
