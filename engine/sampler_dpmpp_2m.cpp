// The DPM-Solver++(2M) sampler unit (see engine/sampler.h): DPMSolverMultistepScheduler with
// algorithm_type dpmsolver++, as per-step denoise_step coefficients.
#include <algorithm>
#include <cmath>

#include "engine/sampler_units.h"

namespace diffuse::sampler_detail {

namespace {

// Karras et al. 2022 (ρ = 7) between the smallest and largest training σ, mapped back to a
// fractional timestep by interpolating log σ (diffusers' _sigma_to_t), then rounded — or
// truncated for squaredcos_cap_v2, where diffusers skips the rounding and casts to int64.
void karras_sigmas(const SchedulerConfig& config, const std::vector<double>& train_sigmas, int64_t n, SamplerPlan& plan) {
  const auto T = static_cast<int64_t>(train_sigmas.size());
  const double rho = 7.0;
  const double min_inv = std::pow(train_sigmas[0], 1 / rho), max_inv = std::pow(train_sigmas[T - 1], 1 / rho);
  std::vector<double> log_sigmas(T);
  for (int64_t t = 0; t < T; ++t) log_sigmas[t] = std::log(train_sigmas[t]);
  for (int64_t i = 0; i < n; ++i) {
    // np.linspace(0, 1, n): i·(1/(n−1)), the last exactly 1.
    const double ramp =
        n == 1 ? 0.0 : (i == n - 1 ? 1.0 : static_cast<double>(i) * (1.0 / static_cast<double>(n - 1)));
    const double sigma = std::pow(max_inv + ramp * (min_inv - max_inv), rho);
    const double ls = std::log(std::max(sigma, 1e-10));
    int64_t low = 0;
    for (int64_t t = 0; t < T; ++t)
      if (log_sigmas[t] <= ls) low = t;
    low = std::min(low, T - 2);
    double w = (log_sigmas[low] - ls) / (log_sigmas[low] - log_sigmas[low + 1]);
    w = std::clamp(w, 0.0, 1.0);
    const double t_frac = (1 - w) * static_cast<double>(low) + w * static_cast<double>(low + 1);
    plan.timesteps.push_back(static_cast<int64_t>(
        config.beta_schedule == BetaSchedule::squaredcos_cap_v2 ? std::trunc(t_frac) : std::nearbyint(t_frac)));
    plan.sigmas.push_back(sigma);
  }
}

}  // namespace

// The data prediction x0 integrated in λ = log(α_σ/σ_σ) with α_σ = 1/√(σ²+1), σ_σ = σ·α_σ, from
// the σ list (which, with Karras sigmas, lies between the training timesteps; the model is still
// called at rounded timesteps).
SamplerPlan plan_dpmpp_2m(const SchedulerConfig& config, const NoiseSchedule& schedule, int64_t n) {
  const int64_t T = config.num_train_timesteps;
  if (config.use_karras_sigmas && T < 2) fail("Karras sigmas need num_train_timesteps >= 2");
  std::vector<double> ac = schedule.alphas_cumprod();
  if (config.rescale_betas_zero_snr) ac[T - 1] = std::ldexp(1.0, -24);  // as diffusers: keeps σ finite
  std::vector<double> train_sigmas(T);
  for (int64_t t = 0; t < T; ++t) train_sigmas[t] = std::sqrt((1 - ac[t]) / ac[t]);

  SamplerPlan plan;
  if (config.use_karras_sigmas) {
    karras_sigmas(config, train_sigmas, n, plan);
  } else {
    plan.timesteps = checked_timesteps(config, n, /*dpm=*/true);
    for (int64_t t : plan.timesteps) plan.sigmas.push_back(train_sigmas[t]);
  }
  plan.sigmas.push_back(config.final_sigmas_type == FinalSigmas::zero ? 0.0 : train_sigmas[0]);
  const std::vector<double>& sigmas = plan.sigmas;

  auto alpha_of = [](double sigma) { return 1 / std::sqrt(sigma * sigma + 1); };
  auto lambda_of = [&](double sigma) { return std::log(alpha_of(sigma)) - std::log(sigma * alpha_of(sigma)); };
  for (int64_t i = 0; i < n; ++i) {
    const double s0 = sigmas[i], st = sigmas[i + 1];
    const double a_s0 = alpha_of(s0), q_s0 = s0 * a_s0;
    const double a_t = alpha_of(st), q_t = st * a_t;
    const bool last = i == n - 1;
    const bool lower_order_final =
        last && (config.euler_at_final || (config.lower_order_final && n < 15) ||
                 config.final_sigmas_type == FinalSigmas::zero);
    // σ_t = 0 (the zero final sigma) is always a first-order step: x_prev = x0.
    const bool first = config.solver_order == 1 || i == 0 || lower_order_final || q_t == 0;
    kernels::DenoiseStepDesc d;
    set_x0_coefs(d, config.prediction_type, a_s0, q_s0);
    d.clip = 0;
    if (q_t == 0) {
      d.update = static_cast<int32_t>(kernels::DenoiseUpdate::dpm_first);
      d.c_x = 0;
      d.c_x0 = a_t;
      plan.steps.push_back(d);
      continue;
    }
    const double h = lambda_of(st) - lambda_of(s0);
    const double em1 = std::expm1(-h);  // e^{−h} − 1
    d.c_x = q_t / q_s0;
    d.c_x0 = -a_t * em1;
    if (first) {
      d.update = static_cast<int32_t>(kernels::DenoiseUpdate::dpm_first);
    } else {
      // D1 = (x0 − x0_prev)/r0 with r0 = h_0/h, h_0 = λ_s0 − λ_s1.
      const double r0 = (lambda_of(s0) - lambda_of(sigmas[i - 1])) / h;
      d.update = static_cast<int32_t>(kernels::DenoiseUpdate::dpm_second);
      d.c_d1 = config.solver_type == DpmSolverType::midpoint ? -0.5 * a_t * em1 / r0 : a_t * (em1 / h + 1) / r0;
    }
    plan.steps.push_back(d);
  }
  return plan;
}

}  // namespace diffuse::sampler_detail
