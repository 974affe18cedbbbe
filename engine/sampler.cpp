// Sampler (see sampler.h). Every coefficient is computed in f64 on the host from ᾱ (DDPM, DDIM)
// or from the σ list (DPM-Solver++), following diffusers' step() line by line; diffusers does the
// same arithmetic in float32, so the two agree to float32 rounding. Rounding of timesteps follows
// numpy: round half to even (std::nearbyint in the default rounding mode).
#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "nn/autograd.h"
#include "nn/ops.h"

namespace diffuse {

namespace k = kernels;

namespace {

[[noreturn]] void fail(const std::string& what) { throw Error("sampler: " + what); }

// round(np.linspace(0, last, count)) in ascending order.
std::vector<int64_t> rounded_linspace(int64_t last, int64_t count) {
  std::vector<int64_t> out(static_cast<size_t>(count), 0);
  if (count < 2) return out;
  const double step = static_cast<double>(last) / static_cast<double>(count - 1);
  for (int64_t i = 0; i + 1 < count; ++i) out[i] = static_cast<int64_t>(std::nearbyint(static_cast<double>(i) * step));
  out[count - 1] = last;
  return out;
}

// x0 = x0_from_x·x + x0_from_m·m for a model output m, with a = √ᾱ (the signal scale) and
// s = √(1−ᾱ) (the noise scale) of the current step.
void set_x0_coefs(k::DenoiseStepDesc& d, PredictionType p, double a, double s) {
  switch (p) {
    case PredictionType::epsilon: d.x0_from_x = 1 / a, d.x0_from_m = -s / a; break;  // (x − s·ε̂)/a
    case PredictionType::v_prediction: d.x0_from_x = a, d.x0_from_m = -s; break;      // a·x − s·v̂
    case PredictionType::sample: d.x0_from_x = 0, d.x0_from_m = 1; break;
  }
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

Sampler::Sampler(const SchedulerConfig& config, int64_t num_inference_steps)
    : config_(config), schedule_(config.schedule_options()) {
  const int64_t T = config.num_train_timesteps;
  if (num_inference_steps < 1 || num_inference_steps > T)
    fail(std::to_string(num_inference_steps) + " inference steps: expected 1 to num_train_timesteps (" +
         std::to_string(T) + ")");
  if (config.steps_offset < 0) fail("steps_offset must be >= 0");
  if (config.clip_sample && !(config.clip_sample_range > 0)) fail("clip_sample_range must be > 0");
  if (config.kind == SamplerKind::ddim && !(config.eta >= 0 && config.eta <= 1))
    fail("DDIM eta must be in [0, 1], got " + std::to_string(config.eta));
  if (config.solver_order != 1 && config.solver_order != 2)
    fail("solver_order must be 1 or 2, got " + std::to_string(config.solver_order));
  if (config.kind == SamplerKind::dpmpp_2m && config.use_karras_sigmas) {
    if (T < 2) fail("Karras sigmas need num_train_timesteps >= 2");
  } else {
    timesteps_ = spaced_timesteps(config.spacing(), T, num_inference_steps, config.steps_offset,
                                  config.kind == SamplerKind::dpmpp_2m);
    for (int64_t t : timesteps_)
      if (t < 0 || t >= T)
        fail("timestep " + std::to_string(t) + " (" + timestep_spacing_name(config.spacing()) +
             " spacing, steps_offset " + std::to_string(config.steps_offset) + ") is outside [0, " +
             std::to_string(T) + ")");
  }
  switch (config.kind) {
    case SamplerKind::ddpm: build_ddpm(); break;
    case SamplerKind::ddim: build_ddim(); break;
    case SamplerKind::dpmpp_2m: build_dpmpp(num_inference_steps); break;
  }
}

// DDPMScheduler.step: posterior mean of q(x_prev | x_t, x0) plus fixed variance; prev is the next
// timestep in the list (ᾱ_prev = 1 after the last), noise only while t > 0.
void Sampler::build_ddpm() {
  const auto& ac = schedule_.alphas_cumprod();
  const int64_t n = num_steps();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = timesteps_[i];
    const int64_t prev = i + 1 < n ? timesteps_[i + 1] : -1;
    const double a_t = ac[t], a_prev = prev >= 0 ? ac[prev] : 1.0;
    const double b_t = 1 - a_t, b_prev = 1 - a_prev;
    const double cur_alpha = a_t / a_prev, cur_beta = 1 - cur_alpha;
    k::DenoiseStepDesc d;
    d.update = static_cast<int32_t>(k::DenoiseUpdate::ddpm);
    set_x0_coefs(d, config_.prediction_type, std::sqrt(a_t), std::sqrt(b_t));
    d.clip = config_.clip_sample;
    d.clip_range = config_.clip_sample_range;
    d.c_x0 = std::sqrt(a_prev) * cur_beta / b_t;
    d.c_x = std::sqrt(cur_alpha) * b_prev / b_t;
    double variance = config_.variance_type == VarianceType::fixed_small
                          ? std::max(b_prev / b_t * cur_beta, 1e-20)
                          : cur_beta;
    d.noise_std = t > 0 ? std::sqrt(variance) : 0;
    steps_.push_back(d);
  }
}

// DDIMScheduler.step: prev = t − T/steps whatever the spacing (as diffusers), ᾱ after the last
// step is 1 or ᾱ_0 (set_alpha_to_one); σ = η·√((1−ᾱ_prev)/(1−ᾱ_t)·(1−ᾱ_t/ᾱ_prev)).
void Sampler::build_ddim() {
  const auto& ac = schedule_.alphas_cumprod();
  const int64_t n = num_steps(), T = config_.num_train_timesteps;
  const double final_alpha = config_.set_alpha_to_one ? 1.0 : ac[0];
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = timesteps_[i];
    const int64_t prev = t - T / n;
    const double a_t = ac[t], a_prev = prev >= 0 ? ac[prev] : final_alpha;
    const double b_t = 1 - a_t;
    const double sa = std::sqrt(a_t), sb = std::sqrt(b_t);
    k::DenoiseStepDesc d;
    d.update = static_cast<int32_t>(k::DenoiseUpdate::ddim);
    set_x0_coefs(d, config_.prediction_type, sa, sb);
    switch (config_.prediction_type) {  // ε̂ from the model output and x_t, before clipping
      case PredictionType::epsilon: d.eps_from_x = 0, d.eps_from_m = 1; break;
      case PredictionType::sample: d.eps_from_x = 1 / sb, d.eps_from_m = -sa / sb; break;
      case PredictionType::v_prediction: d.eps_from_x = sb, d.eps_from_m = sa; break;
    }
    d.clip = config_.clip_sample;
    d.clip_range = config_.clip_sample_range;
    const double variance = (1 - a_prev) / b_t * (1 - a_t / a_prev);
    const double std_dev = config_.eta * std::sqrt(variance);
    d.c_x0 = std::sqrt(a_prev);
    d.c_eps = std::sqrt(std::max(0.0, 1 - a_prev - std_dev * std_dev));
    d.noise_std = config_.eta > 0 ? std_dev : 0;
    steps_.push_back(d);
  }
}

// DPMSolverMultistepScheduler with algorithm_type dpmsolver++: the data prediction x0 integrated
// in λ = log(α_σ/σ_σ) with α_σ = 1/√(σ²+1), σ_σ = σ·α_σ, from the σ list (which, with Karras sigmas,
// lies between the training timesteps; the model is still called at rounded timesteps).
void Sampler::build_dpmpp(int64_t n) {
  const int64_t T = config_.num_train_timesteps;
  std::vector<double> ac = schedule_.alphas_cumprod();
  if (config_.rescale_betas_zero_snr) ac[T - 1] = std::ldexp(1.0, -24);  // as diffusers: keeps σ finite
  std::vector<double> train_sigmas(T);
  for (int64_t t = 0; t < T; ++t) train_sigmas[t] = std::sqrt((1 - ac[t]) / ac[t]);

  if (config_.use_karras_sigmas) {
    // Karras et al. 2022 (ρ = 7) between the smallest and largest training σ, mapped back to a
    // fractional timestep by interpolating log σ (diffusers' _sigma_to_t), then rounded — or
    // truncated for squaredcos_cap_v2, where diffusers skips the rounding and casts to int64.
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
      timesteps_.push_back(static_cast<int64_t>(
          config_.beta_schedule == BetaSchedule::squaredcos_cap_v2 ? std::trunc(t_frac) : std::nearbyint(t_frac)));
      sigmas_.push_back(sigma);
    }
  } else {
    for (int64_t t : timesteps_) sigmas_.push_back(train_sigmas[t]);
  }
  sigmas_.push_back(config_.final_sigmas_type == FinalSigmas::zero ? 0.0 : train_sigmas[0]);

  auto alpha_of = [](double sigma) { return 1 / std::sqrt(sigma * sigma + 1); };
  auto lambda_of = [&](double sigma) { return std::log(alpha_of(sigma)) - std::log(sigma * alpha_of(sigma)); };
  for (int64_t i = 0; i < n; ++i) {
    const double s0 = sigmas_[i], st = sigmas_[i + 1];
    const double a_s0 = alpha_of(s0), q_s0 = s0 * a_s0;
    const double a_t = alpha_of(st), q_t = st * a_t;
    const bool last = i == n - 1;
    const bool lower_order_final =
        last && (config_.euler_at_final || (config_.lower_order_final && n < 15) ||
                 config_.final_sigmas_type == FinalSigmas::zero);
    // σ_t = 0 (the zero final sigma) is always a first-order step: x_prev = x0.
    const bool first = config_.solver_order == 1 || i == 0 || lower_order_final || q_t == 0;
    k::DenoiseStepDesc d;
    set_x0_coefs(d, config_.prediction_type, a_s0, q_s0);
    d.clip = 0;
    if (q_t == 0) {
      d.update = static_cast<int32_t>(k::DenoiseUpdate::dpm_first);
      d.c_x = 0;
      d.c_x0 = a_t;
      steps_.push_back(d);
      continue;
    }
    const double h = lambda_of(st) - lambda_of(s0);
    const double em1 = std::expm1(-h);  // e^{−h} − 1
    d.c_x = q_t / q_s0;
    d.c_x0 = -a_t * em1;
    if (first) {
      d.update = static_cast<int32_t>(k::DenoiseUpdate::dpm_first);
    } else {
      // D1 = (x0 − x0_prev)/r0 with r0 = h_0/h, h_0 = λ_s0 − λ_s1.
      const double r0 = (lambda_of(s0) - lambda_of(sigmas_[i - 1])) / h;
      d.update = static_cast<int32_t>(k::DenoiseUpdate::dpm_second);
      d.c_d1 = config_.solver_type == DpmSolverType::midpoint ? -0.5 * a_t * em1 / r0 : a_t * (em1 / h + 1) / r0;
    }
    steps_.push_back(d);
  }
}

const k::DenoiseStepDesc& Sampler::step_desc(int64_t i) const {
  if (i < 0 || i >= num_steps())
    fail("step " + std::to_string(i) + " outside [0, " + std::to_string(num_steps()) + ")");
  return steps_[i];
}

Tensor Sampler::initial_noise(const Shape& shape, uint64_t seed, DType dtype) {
  return Tensor::randn(shape, seed, philox::kSampler, 0, dtype);
}

uint64_t Sampler::noise_offset(int64_t step, int64_t numel) {
  return philox::blocks_for(static_cast<uint64_t>(numel)) * static_cast<uint64_t>(step + 1);
}

void Sampler::step(int64_t i, const Tensor& model_output, Tensor& x, Tensor& x0, const SampleOptions& opt) const {
  k::DenoiseStepDesc d = step_desc(i);
  if (!x.defined() || !model_output.defined()) fail("step needs x_t and a model output");
  if (!x0.defined()) x0 = Tensor::zeros(x.shape(), x.dtype(), x.device());
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
  d.numel = x.numel();
  d.guided = opt.guidance ? 1 : 0;
  d.guidance = opt.guidance.value_or(1.0);
  d.seed = opt.seed;
  d.noise_offset = noise_offset(i, x.numel());
  d.stream = philox::kSampler;
  ops::denoise_step(d, model_output, x, x0);
}

Tensor Sampler::sample(const ModelFn& model, const Tensor& x_T, const SampleOptions& opt, const StepFn& on_step) const {
  if (!x_T.defined()) fail("x_T is undefined");
  NoGrad no_grad;
  Tensor x = x_T.detach().clone();
  Tensor x0 = Tensor::zeros(x.shape(), x.dtype(), x.device());
  for (int64_t i = 0; i < num_steps(); ++i) {
    Tensor out = model(x, timesteps_[i]);
    step(i, out, x, x0, opt);
    if (on_step) on_step(i, num_steps(), x, x0);
  }
  return x;
}

}  // namespace diffuse
