// The DDPM sampler unit (see engine/sampler.h): DDPMScheduler.step's posterior mean of
// q(x_prev | x_t, x0) plus its fixed variance, as per-step denoise_step coefficients.
#include <algorithm>
#include <cmath>

#include "engine/sampler_units.h"

namespace diffuse::sampler_detail {

// prev is the next timestep in the list (ᾱ_prev = 1 after the last); noise only while t > 0.
SamplerPlan plan_ddpm(const SchedulerConfig& config, const NoiseSchedule& schedule, int64_t num_inference_steps) {
  SamplerPlan plan;
  plan.timesteps = checked_timesteps(config, num_inference_steps, /*dpm=*/false);
  const auto& ac = schedule.alphas_cumprod();
  const auto n = static_cast<int64_t>(plan.timesteps.size());
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = plan.timesteps[i];
    const int64_t prev = i + 1 < n ? plan.timesteps[i + 1] : -1;
    const double a_t = ac[t], a_prev = prev >= 0 ? ac[prev] : 1.0;
    const double b_t = 1 - a_t, b_prev = 1 - a_prev;
    const double cur_alpha = a_t / a_prev, cur_beta = 1 - cur_alpha;
    kernels::DenoiseStepDesc d;
    d.update = static_cast<int32_t>(kernels::DenoiseUpdate::ddpm);
    set_x0_coefs(d, config.prediction_type, std::sqrt(a_t), std::sqrt(b_t));
    d.clip = config.clip_sample;
    d.clip_range = config.clip_sample_range;
    d.c_x0 = std::sqrt(a_prev) * cur_beta / b_t;
    d.c_x = std::sqrt(cur_alpha) * b_prev / b_t;
    const double variance = config.variance_type == VarianceType::fixed_small
                                ? std::max(b_prev / b_t * cur_beta, 1e-20)
                                : cur_beta;
    d.noise_std = t > 0 ? std::sqrt(variance) : 0;
    plan.steps.push_back(d);
  }
  return plan;
}

}  // namespace diffuse::sampler_detail
