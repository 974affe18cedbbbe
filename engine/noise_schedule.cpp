// Noise schedules (see noise_schedule.h). The one subtle part is reproducing diffusers' float32 betas:
// torch.linspace in float32 rounds differently from an ideal linspace, and those 1-ulp
// differences, compounded over 1000 factors of ᾱ, are larger than the agreement we promise.
#include "engine/noise_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "diffuse/error.h"

namespace diffuse {

const char* beta_schedule_name(BetaSchedule s) {
  switch (s) {
    case BetaSchedule::linear: return "linear";
    case BetaSchedule::scaled_linear: return "scaled_linear";
    case BetaSchedule::squaredcos_cap_v2: return "squaredcos_cap_v2";
  }
  return "?";
}

const char* prediction_type_name(PredictionType p) {
  switch (p) {
    case PredictionType::epsilon: return "epsilon";
    case PredictionType::v_prediction: return "v_prediction";
    case PredictionType::sample: return "sample";
  }
  return "?";
}

BetaSchedule parse_beta_schedule(const std::string& s, const std::string& what) {
  for (auto b : {BetaSchedule::linear, BetaSchedule::scaled_linear, BetaSchedule::squaredcos_cap_v2})
    if (s == beta_schedule_name(b)) return b;
  throw Error(what + ": beta schedule \"" + s + "\" is not supported (linear, scaled_linear, squaredcos_cap_v2)");
}

PredictionType parse_prediction_type(const std::string& s, const std::string& what) {
  for (auto p : {PredictionType::epsilon, PredictionType::v_prediction, PredictionType::sample})
    if (s == prediction_type_name(p)) return p;
  throw Error(what + ": prediction type \"" + s + "\" is not supported (epsilon, v_prediction, sample)");
}

namespace {

// torch's CPU linspace kernel for float32 (AVX2 build, the common x86 one): step is computed in
// float; element i is start + step·i below the halfway point and end − step·(n−1−i) above it,
// each one fused multiply-add (the compiler contracts them). Runs of 16 elements go through
// two 8-wide vectors whose lanes are base + k·step, rounded as a separate multiply and add.
// The result is bit-identical to torch 1.13's on such a CPU; another build differs by ≤ 1 ulp.
std::vector<float> torch_linspace_f32(double start_d, double end_d, int64_t n) {
  std::vector<float> out(static_cast<size_t>(std::max<int64_t>(n, 0)));
  if (n <= 0) return out;
  const float start = static_cast<float>(start_d), end = static_cast<float>(end_d);
  if (n == 1) {
    out[0] = start;
    return out;
  }
  const float step = (end - start) / static_cast<float>(n - 1);
  const int64_t halfway = n / 2;
  auto scalar_at = [&](int64_t i) {
    return i < halfway ? std::fma(step, static_cast<float>(i), start)
                       : std::fma(-step, static_cast<float>(n - 1 - i), end);
  };
  constexpr int64_t kVec = 8;
  const int64_t vectorised = n / (2 * kVec) * (2 * kVec);
  for (int64_t base_i = 0; base_i < vectorised; base_i += kVec) {
    float base = scalar_at(base_i);
    for (int64_t k = 0; k < kVec; ++k) {
      // Exact product in double, rounded once to float: a float multiply that cannot be fused.
      float k_step = static_cast<float>(static_cast<double>(k) * static_cast<double>(step));
      out[base_i + k] = base + k_step;
    }
  }
  for (int64_t i = vectorised; i < n; ++i) out[i] = scalar_at(i);
  return out;
}

std::vector<float> float32_betas(const ScheduleOptions& o) {
  const int64_t T = o.num_train_timesteps;
  std::vector<float> betas;
  switch (o.beta_schedule) {
    case BetaSchedule::linear:
      betas = torch_linspace_f32(o.beta_start, o.beta_end, T);
      break;
    case BetaSchedule::scaled_linear:
      betas = torch_linspace_f32(std::sqrt(o.beta_start), std::sqrt(o.beta_end), T);
      for (float& b : betas) b = static_cast<float>(static_cast<double>(b) * b);  // float32 b·b
      break;
    case BetaSchedule::squaredcos_cap_v2: {
      // diffusers' betas_for_alpha_bar: Python floats, then one rounding to float32.
      auto f = [](double s) {
        double c = std::cos((s + 0.008) / 1.008 * std::numbers::pi / 2);
        return c * c;
      };
      for (int64_t i = 0; i < T; ++i) {
        double t1 = static_cast<double>(i) / static_cast<double>(T);
        double t2 = static_cast<double>(i + 1) / static_cast<double>(T);
        betas.push_back(static_cast<float>(std::min(1 - f(t2) / f(t1), 0.999)));
      }
      break;
    }
  }
  return betas;
}

// Lin et al. 2023, Algorithm 1 (diffusers' rescale_zero_terminal_snr): shift and scale √ᾱ so the
// last is 0 and the first unchanged, then recover betas from the new cumulative product. diffusers
// runs it in float32, where √ᾱ_t − √ᾱ_T cancels; we run it in f64 on the float32 betas.
std::vector<double> rescale_zero_terminal_snr(const std::vector<double>& betas) {
  const size_t T = betas.size();
  std::vector<double> s(T);
  double prod = 1;
  for (size_t t = 0; t < T; ++t) {
    prod *= 1 - betas[t];
    s[t] = std::sqrt(prod);
  }
  const double s0 = s[0], sT = s[T - 1];
  std::vector<double> out(T);
  double prev_bar = 1;
  for (size_t t = 0; t < T; ++t) {
    double v = (s[t] - sT) * (s0 / (s0 - sT));
    double bar = v * v;
    out[t] = 1 - (t == 0 ? bar : bar / prev_bar);
    prev_bar = bar;
  }
  return out;
}

}  // namespace

NoiseSchedule::NoiseSchedule(const ScheduleOptions& opt) : opt_(opt) {
  const int64_t T = opt.num_train_timesteps;
  if (T < 1) throw Error("noise schedule: num_train_timesteps must be >= 1, got " + std::to_string(T));
  if (opt.beta_schedule != BetaSchedule::squaredcos_cap_v2 &&
      !(opt.beta_start > 0 && opt.beta_end >= opt.beta_start && opt.beta_end < 1))
    throw Error("noise schedule: need 0 < beta_start <= beta_end < 1, got beta_start " +
                std::to_string(opt.beta_start) + ", beta_end " + std::to_string(opt.beta_end));
  if (opt.rescale_betas_zero_snr && T < 2)
    throw Error("noise schedule: rescale_betas_zero_snr needs num_train_timesteps >= 2");
  std::vector<float> b32 = float32_betas(opt);
  betas_.assign(b32.begin(), b32.end());
  if (opt.rescale_betas_zero_snr) {
    betas_ = rescale_zero_terminal_snr(betas_);
    alphas_.resize(T);
    for (int64_t t = 0; t < T; ++t) alphas_[t] = 1 - betas_[t];
  } else {
    // torch computes 1 − β on the float32 tensor; its cumprod accumulates in double.
    alphas_.resize(T);
    for (int64_t t = 0; t < T; ++t) alphas_[t] = static_cast<double>(1.0f - b32[t]);
  }
  alphas_cumprod_.resize(T);
  double prod = 1;
  for (int64_t t = 0; t < T; ++t) alphas_cumprod_[t] = prod *= alphas_[t];
}

void NoiseSchedule::check_t(int64_t t) const {
  if (t < 0 || t >= opt_.num_train_timesteps)
    throw Error("noise schedule: timestep " + std::to_string(t) + " outside [0, " +
                std::to_string(opt_.num_train_timesteps) + ")");
}

double NoiseSchedule::alpha_bar(int64_t t) const {
  check_t(t);
  return alphas_cumprod_[t];
}
double NoiseSchedule::sqrt_alpha_bar(int64_t t) const { return std::sqrt(alpha_bar(t)); }
double NoiseSchedule::sqrt_one_minus_alpha_bar(int64_t t) const { return std::sqrt(1 - alpha_bar(t)); }
double NoiseSchedule::snr(int64_t t) const {
  double a = alpha_bar(t);
  return a / (1 - a);
}

double NoiseSchedule::min_snr_weight(int64_t t, double gamma) const {
  if (gamma <= 0) return 1;
  double s = snr(t);
  double clipped = std::min(s, gamma);
  switch (opt_.prediction_type) {
    case PredictionType::epsilon: return s == 0 ? 1.0 : clipped / s;
    case PredictionType::v_prediction: return clipped / (s + 1);
    case PredictionType::sample: return clipped;
  }
  return 1;
}

std::vector<QSampleCoef> NoiseSchedule::q_sample_coefs(const std::vector<int64_t>& timesteps,
                                                       double snr_gamma) const {
  std::vector<QSampleCoef> out;
  out.reserve(timesteps.size());
  for (int64_t t : timesteps) {
    QSampleCoef c{};
    c.sqrt_alpha_bar = sqrt_alpha_bar(t);
    c.sqrt_one_minus_alpha_bar = sqrt_one_minus_alpha_bar(t);
    switch (opt_.prediction_type) {
      case PredictionType::epsilon: c.target_x0 = 0, c.target_eps = 1; break;
      case PredictionType::sample: c.target_x0 = 1, c.target_eps = 0; break;
      case PredictionType::v_prediction:  // v = √ᾱ·ε − √(1−ᾱ)·x0
        c.target_x0 = -c.sqrt_one_minus_alpha_bar, c.target_eps = c.sqrt_alpha_bar;
        break;
    }
    c.loss_weight = min_snr_weight(t, snr_gamma);
    out.push_back(c);
  }
  return out;
}

}  // namespace diffuse
