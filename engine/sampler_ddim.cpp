// The DDIM sampler unit (see engine/sampler.h): DDIMScheduler.step with η, as per-step
// denoise_step coefficients.
#include <algorithm>
#include <cmath>

#include "engine/sampler_units.h"

namespace diffuse::sampler_detail {

// prev = t − T/steps whatever the spacing (as diffusers), ᾱ after the last step is 1 or ᾱ_0
// (set_alpha_to_one); σ = η·√((1−ᾱ_prev)/(1−ᾱ_t)·(1−ᾱ_t/ᾱ_prev)).
SamplerPlan plan_ddim(const SchedulerConfig& config, const NoiseSchedule& schedule, int64_t num_inference_steps) {
  if (!(config.eta >= 0 && config.eta <= 1)) fail("DDIM eta must be in [0, 1], got " + std::to_string(config.eta));
  SamplerPlan plan;
  plan.timesteps = checked_timesteps(config, num_inference_steps, /*dpm=*/false);
  const auto& ac = schedule.alphas_cumprod();
  const auto n = static_cast<int64_t>(plan.timesteps.size());
  const int64_t T = config.num_train_timesteps;
  const double final_alpha = config.set_alpha_to_one ? 1.0 : ac[0];
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = plan.timesteps[i];
    const int64_t prev = t - T / n;
    const double a_t = ac[t], a_prev = prev >= 0 ? ac[prev] : final_alpha;
    const double b_t = 1 - a_t;
    const double sa = std::sqrt(a_t), sb = std::sqrt(b_t);
    kernels::DenoiseStepDesc d;
    d.update = static_cast<int32_t>(kernels::DenoiseUpdate::ddim);
    set_x0_coefs(d, config.prediction_type, sa, sb);
    switch (config.prediction_type) {  // ε̂ from the model output and x_t, before clipping
      case PredictionType::epsilon: d.eps_from_x = 0, d.eps_from_m = 1; break;
      case PredictionType::sample: d.eps_from_x = 1 / sb, d.eps_from_m = -sa / sb; break;
      case PredictionType::v_prediction: d.eps_from_x = sb, d.eps_from_m = sa; break;
    }
    d.clip = config.clip_sample;
    d.clip_range = config.clip_sample_range;
    const double variance = (1 - a_prev) / b_t * (1 - a_t / a_prev);
    const double std_dev = config.eta * std::sqrt(variance);
    d.c_x0 = std::sqrt(a_prev);
    d.c_eps = std::sqrt(std::max(0.0, 1 - a_prev - std_dev * std_dev));
    d.noise_std = config.eta > 0 ? std_dev : 0;
    plan.steps.push_back(d);
  }
  return plan;
}

}  // namespace diffuse::sampler_detail
