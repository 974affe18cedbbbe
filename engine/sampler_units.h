// What the sampler units (engine/sampler_ddpm.cpp, sampler_ddim.cpp, sampler_dpmpp_2m.cpp) share
// and export: each defines one plan function, listed in the table in engine/sampler.cpp; the
// helpers below are the arithmetic more than one of them needs. Internal to engine/sampler*.cpp.
#pragma once
#include <string>

#include "engine/sampler.h"

namespace diffuse::sampler_detail {

[[noreturn]] void fail(const std::string& what);  // diffuse::Error("sampler: " + what)

// x0 = x0_from_x·x + x0_from_m·m for a model output m, with a = √ᾱ (the signal scale) and
// s = √(1−ᾱ) (the noise scale) of the current step.
void set_x0_coefs(kernels::DenoiseStepDesc& d, PredictionType p, double a, double s);

// spaced_timesteps for the config's spacing and steps_offset, each checked to lie in [0, T).
std::vector<int64_t> checked_timesteps(const SchedulerConfig& config, int64_t num_inference_steps, bool dpm);

// The units: one per file.
SamplerPlan plan_ddpm(const SchedulerConfig& config, const NoiseSchedule& schedule, int64_t num_inference_steps);
SamplerPlan plan_ddim(const SchedulerConfig& config, const NoiseSchedule& schedule, int64_t num_inference_steps);
SamplerPlan plan_dpmpp_2m(const SchedulerConfig& config, const NoiseSchedule& schedule, int64_t num_inference_steps);

}  // namespace diffuse::sampler_detail
