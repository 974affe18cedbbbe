// SchedulerConfig: which sampler and every setting of it, read from and written to diffusers'
// scheduler_config.json (DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler; docs/design.md §8,
// §9). Like the UNet config (§7): `_`-prefixed keys are ignored, a key whose value asks for the
// behaviour we implement is accepted, anything else is one diffuse::Error naming file, key, value.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "engine/noise_schedule.h"

namespace diffuse {

enum class SamplerKind { ddpm, ddim, dpmpp_2m };
enum class TimestepSpacing { leading, trailing, linspace };
enum class VarianceType { fixed_small, fixed_large };  // DDPM's posterior variance
enum class DpmSolverType { midpoint, heun };           // DPM-Solver++ second-order variant
enum class FinalSigmas { zero, sigma_min };            // DPM-Solver++'s last sigma

const char* sampler_kind_name(SamplerKind k);  // "ddpm", "ddim", "dpmpp-2m" (the CLI's names)
SamplerKind parse_sampler_kind(const std::string& s, const std::string& what);
const char* scheduler_class_name(SamplerKind k);  // "DDPMScheduler", ...
const char* timestep_spacing_name(TimestepSpacing s);

struct SchedulerConfig {
  SamplerKind kind = SamplerKind::ddpm;  // from _class_name; a caller may switch samplers

  // The noise schedule.
  int64_t num_train_timesteps = 1000;
  double beta_start = 1e-4;
  double beta_end = 0.02;
  BetaSchedule beta_schedule = BetaSchedule::linear;
  bool rescale_betas_zero_snr = false;
  PredictionType prediction_type = PredictionType::epsilon;

  // Timesteps. Unset spacing means the sampler's diffusers default (leading for DDPM and DDIM,
  // linspace for DPM-Solver++), as when diffusers loads a config without the key.
  std::optional<TimestepSpacing> timestep_spacing;
  int64_t steps_offset = 0;

  // DDPM and DDIM (DPM-Solver++ never clips, as in diffusers).
  bool clip_sample = true;
  double clip_sample_range = 1;
  VarianceType variance_type = VarianceType::fixed_small;  // DDPM
  bool set_alpha_to_one = true;                            // DDIM: ᾱ after the last step is 1 (else ᾱ_0)
  double eta = 0;  // DDIM's η in [0, 1]: a step argument in diffusers, so never in the JSON

  // DPM-Solver++(2M).
  int solver_order = 2;  // 1 or 2
  DpmSolverType solver_type = DpmSolverType::midpoint;
  bool lower_order_final = true;  // first-order last step when fewer than 15 steps
  bool euler_at_final = false;    // always a first-order last step
  bool use_karras_sigmas = false;
  FinalSigmas final_sigmas_type = FinalSigmas::zero;

  ScheduleOptions schedule_options() const;
  TimestepSpacing spacing() const;  // timestep_spacing, or the kind's default
};

// Parses scheduler_config.json text; `source` (the file name) prefixes every error.
SchedulerConfig scheduler_config_from_json(const std::string& text, const std::string& source);
SchedulerConfig read_scheduler_config(const std::string& path);
// The scheduler a sampler uses: the file `override_path` when given (its errors are bad_input),
// else the model's own scheduler_config.json text (`model_json`, read from `model_source`), else
// diffusers' DDPMScheduler defaults. Pipeline and `diffuse sample` both ask this one function.
SchedulerConfig sampling_scheduler_config(const std::string& override_path, const std::string& model_json,
                                          const std::string& model_source);
// The JSON diffusers writes for kind's class (sorted keys, 2-space indent), loadable by
// diffusers' from_pretrained/from_config.
std::string scheduler_config_to_json(const SchedulerConfig& c);
void write_scheduler_config(const std::string& path, const SchedulerConfig& c);  // write_file_atomic

}  // namespace diffuse
