// The noise schedule of a diffusion model: betas, ᾱ_t and everything derived from them that
// training and sampling need (docs/design.md §8; t counts 0..T−1). Numbers match diffusers: diffusers
// builds betas as float32 torch tensors, so we reproduce those float32 betas (and 1 − β rounded
// to float32, as torch does) and then take the cumulative product in f64, which agrees with
// diffusers' stored float32 alphas_cumprod to its rounding (~6e-8 relative).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace diffuse {

enum class BetaSchedule { linear, scaled_linear, squaredcos_cap_v2 };
enum class PredictionType { epsilon, v_prediction, sample };

const char* beta_schedule_name(BetaSchedule s);
const char* prediction_type_name(PredictionType p);
// Parse the diffusers spelling; throw diffuse::Error naming `what` (a file/key or a flag) otherwise.
BetaSchedule parse_beta_schedule(const std::string& s, const std::string& what);
PredictionType parse_prediction_type(const std::string& s, const std::string& what);

struct ScheduleOptions {
  int64_t num_train_timesteps = 1000;
  double beta_start = 1e-4;
  double beta_end = 0.02;
  BetaSchedule beta_schedule = BetaSchedule::linear;
  bool rescale_betas_zero_snr = false;  // Lin et al. 2023: ᾱ_{T−1} = 0
  PredictionType prediction_type = PredictionType::epsilon;
};

// Per-sample coefficients of one training example at timestep t:
//   x_t    = sqrt_alpha_bar·x0 + sqrt_one_minus_alpha_bar·ε
//   target = target_x0·x0 + target_eps·ε          (ε, v or x0 by prediction type)
//   loss   = loss_weight · mean((model − target)²)
struct QSampleCoef {
  double sqrt_alpha_bar;
  double sqrt_one_minus_alpha_bar;
  double target_x0;
  double target_eps;
  double loss_weight;
};

class NoiseSchedule {
 public:
  explicit NoiseSchedule(const ScheduleOptions& opt = {});

  const ScheduleOptions& options() const { return opt_; }
  int64_t num_train_timesteps() const { return opt_.num_train_timesteps; }
  const std::vector<double>& betas() const { return betas_; }
  const std::vector<double>& alphas() const { return alphas_; }
  const std::vector<double>& alphas_cumprod() const { return alphas_cumprod_; }

  double alpha_bar(int64_t t) const;
  double sqrt_alpha_bar(int64_t t) const;
  double sqrt_one_minus_alpha_bar(int64_t t) const;
  double snr(int64_t t) const;  // ᾱ_t / (1 − ᾱ_t); 0 at a zero-terminal-SNR end
  // Min-SNR-γ weight (Hang et al. 2023, as diffusers' train_text_to_image applies it):
  // epsilon min(snr, γ)/snr (1 where snr = 0, its limit), v_prediction min(snr, γ)/(snr + 1),
  // sample min(snr, γ). gamma <= 0 turns weighting off (weight 1).
  double min_snr_weight(int64_t t, double gamma) const;

  // One QSampleCoef per timestep of a training batch (the `noise` kernel family's inputs).
  std::vector<QSampleCoef> q_sample_coefs(const std::vector<int64_t>& timesteps, double snr_gamma = 0) const;

 private:
  void check_t(int64_t t) const;
  ScheduleOptions opt_;
  std::vector<double> betas_, alphas_, alphas_cumprod_;
};

}  // namespace diffuse
