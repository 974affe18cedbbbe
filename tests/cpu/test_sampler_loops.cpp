// Whole sampling loops against diffusers 0.34.0 (torch 1.13): 10 steps (20 for one case) of each
// sampler with a fake model, from the same Philox x_T and per-step noise, compared end to end.
// The reference snippet is quoted once below; each case quotes its run(...) call.
#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "engine/sampler.h"

using namespace diffuse;

namespace {

// |got − want| ≤ tol·max(1, |want|) for every element.
void check_close(const std::vector<double>& got, const std::vector<double>& want, double tol) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i << ": got " << got[i] << ", diffusers " << want[i]);
    CHECK(std::fabs(got[i] - want[i]) <= tol * std::max(1.0, std::fabs(want[i])));
  }
}

SchedulerConfig config(SamplerKind kind, const std::function<void(SchedulerConfig&)>& edit) {
  SchedulerConfig c;
  c.kind = kind;
  if (edit) edit(c);
  return c;
}

}  // namespace

// Printed by (then one line per case below, with its run(...) call quoted):
//   import numpy as np, torch
//   import diffusers.schedulers.scheduling_ddpm as ddpm_mod
//   from diffusers import DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler
//   M = 0xFFFFFFFF
//   def block(seed, stream, counter):  # kernels/philox.h in Python
//       c = [counter & M, (counter >> 32) & M, stream & M, 0]; k0, k1 = seed & M, (seed >> 32) & M
//       for _ in range(10):
//           p0 = 0xD2511F53 * c[0]; p1 = 0xCD9E8D57 * c[2]
//           c = [((p1 >> 32) ^ c[1] ^ k0) & M, p1 & M, ((p0 >> 32) ^ c[3] ^ k1) & M, p0 & M]
//           k0 = (k0 + 0x9E3779B9) & M; k1 = (k1 + 0xBB67AE85) & M
//       return c
//   def normals(seed, stream, offset, n):  # Box-Muller in float32, as philox::normals4
//       f = np.float32; out = []
//       for b in range((n + 3) // 4):
//           r = block(seed, stream, offset + b)
//           for p in range(2):
//               u1 = (f(r[2*p] >> 8) + f(0.5)) * f(1.0 / 16777216.0)
//               u2 = (f(r[2*p+1] >> 8) + f(0.5)) * f(1.0 / 16777216.0)
//               rad = np.sqrt(f(-2.0) * np.log(u1)); th = f(6.28318530717958647692) * u2
//               out += [rad * np.cos(th), rad * np.sin(th)]
//       return np.array(out[:n], dtype=np.float32)
//   N, SHAPE, SEED = 24, (2, 2, 2, 3), 42
//   j = torch.arange(N, dtype=torch.float64).reshape(SHAPE)
//   def model(x, t):  return (0.7 * x.double() + 0.4 * torch.sin(0.37 * j + 0.002 * int(t))).float()
//   def cond_model(x, t):  return (0.5 * x.double() - 0.3 * torch.cos(0.21 * j + 0.001 * int(t))).float()
//   def noise(i):  return torch.from_numpy(normals(SEED, 5, (N + 3) // 4 * (i + 1), N)).reshape(SHAPE)
//   def run(cls, steps, eta=None, w=None, **kw):
//       s = cls(**kw); s.set_timesteps(steps)
//       x = torch.from_numpy(normals(SEED, 5, 0, N)).reshape(SHAPE)
//       for i, t in enumerate(s.timesteps):
//           m = model(x, t)
//           if w is not None: m = m + w * (cond_model(x, t) - m)
//           if cls is DDPMScheduler:
//               ddpm_mod.randn_tensor = lambda *a, **k: noise(i)
//               x = s.step(m, t, x).prev_sample
//           elif cls is DDIMScheduler:
//               x = s.step(m, t, x, eta=eta, variance_noise=noise(i) if eta else None).prev_sample
//           else:
//               x = s.step(m, t, x).prev_sample
//       return "{" + ", ".join("%.9g" % v for v in x.flatten().tolist()) + "}"
namespace {

// The fake model above: element j of x in memory order; unconditional or conditional rows.
std::vector<double> fake_model(const std::vector<double>& x, int64_t t, bool cond) {
  std::vector<double> out(x.size());
  for (size_t j = 0; j < x.size(); ++j) {
    double v = cond ? 0.5 * x[j] - 0.3 * std::cos(0.21 * static_cast<double>(j) + 0.001 * static_cast<double>(t))
                    : 0.7 * x[j] + 0.4 * std::sin(0.37 * static_cast<double>(j) + 0.002 * static_cast<double>(t));
    out[j] = static_cast<float>(v);
  }
  return out;
}

struct LoopCase {
  const char* name;
  SamplerKind kind;
  int64_t steps;
  std::optional<double> guidance;
  std::function<void(SchedulerConfig&)> edit;
  std::vector<double> want;
};

const std::vector<LoopCase>& loop_cases() {
  static const std::vector<LoopCase> cases = {
  {"ddpm",  // run(DDPMScheduler, 10)
   SamplerKind::ddpm, 10, std::nullopt, [](SchedulerConfig&) {},
   {0.158918306, -0.322681874, 0.0243223663, -0.998494148, -0.631051719, -0.356704146, -0.736771703, 0.0709931254, 0.635568917, 0.215908781, 0.962200582, -0.358853847, 0.81761682, 1, 0.596758127, -0.199523851, -0.063391678, -0.2332744, 0.0806663036, -0.895336926, -0.13377744, -0.65703088, 0.914200783, 0.0989304483}},
  {"ddpm_large_v_trailing",  // run(DDPMScheduler, 10, variance_type="fixed_large", prediction_type="v_prediction", timestep_spacing="trailing", clip_sample=False)
   SamplerKind::ddpm, 10, std::nullopt, [](SchedulerConfig& c) { c.variance_type = VarianceType::fixed_large; c.prediction_type = PredictionType::v_prediction; c.timestep_spacing = TimestepSpacing::trailing; c.clip_sample = false; },
   {0.357292324, -0.0780028477, 0.221763283, -0.874624014, -0.0236210227, -0.385717124, -0.938874006, -0.662418187, 0.724363744, -0.87593317, -0.296509564, 1.0021224, 0.672512114, 0.974422276, 0.397147954, -0.608941972, -0.56464982, 0.782439351, -0.285573691, -0.188242912, -0.859259069, -1.85197401, 0.812349856, 0.169278353}},
  {"ddim",  // run(DDIMScheduler, 10, eta=0.0)
   SamplerKind::ddim, 10, std::nullopt, [](SchedulerConfig&) {},
   {-0.175462484, 0.00289894384, -0.124027029, -0.664583147, -0.670425296, -0.988606632, -1, -0.153411686, 0.255092382, -0.0195861366, 0.228701085, 0.408642799, 0.663404465, 0.919042051, 0.221888453, 0.734880388, 1, 0.505715311, -0.327653885, -0.452525198, 0.448575228, -0.733340085, -0.644220531, 0.000255838502}},
  {"ddim_eta1_sample_linspace",  // run(DDIMScheduler, 10, eta=1.0, prediction_type="sample", timestep_spacing="linspace", set_alpha_to_one=False, clip_sample_range=0.8)
   SamplerKind::ddim, 10, std::nullopt, [](SchedulerConfig& c) { c.eta = 1; c.prediction_type = PredictionType::sample; c.timestep_spacing = TimestepSpacing::linspace; c.set_alpha_to_one = false; c.clip_sample_range = 0.8; },
   {0.569703281, 0.561808586, 0.783872545, 0.242100358, 0.614184618, 0.627831638, -0.0286218226, 0.177702397, 0.0193149596, -0.7318694, 0.250824898, -0.664319515, -0.0616998374, -0.0200539529, 0.0249665976, -0.732007682, -0.112460449, 0.540124893, 0.810674429, 0.47213313, 0.680906475, 0.237466604, 0.675718844, 0.512829781}},
  {"ddim_cfg",  // run(DDIMScheduler, 10, eta=0.0, w=1.5, steps_offset=1, clip_sample=False)
   SamplerKind::ddim, 10, std::optional<double>(1.5), [](SchedulerConfig& c) { c.steps_offset = 1; c.clip_sample = false; },
   {-2.25594974, 15.9616108, 15.9433756, -7.13635826, 2.05791855, -14.9267702, -22.5471478, -3.57274175, 10.3550558, -15.124445, -12.7464962, -14.6265383, -9.30446053, 3.50170588, -12.336833, 3.9325757, 17.6092262, 14.2735348, -8.61896229, -3.99366927, 24.159935, 4.35731745, 3.79161549, 17.487505}},
  {"ddim_zero_snr",  // run(DDIMScheduler, 10, eta=0.0, rescale_betas_zero_snr=True, timestep_spacing="trailing", prediction_type="v_prediction", clip_sample=False)
   SamplerKind::ddim, 10, std::nullopt, [](SchedulerConfig& c) { c.rescale_betas_zero_snr = true; c.timestep_spacing = TimestepSpacing::trailing; c.prediction_type = PredictionType::v_prediction; c.clip_sample = false; },
   {-0.411836922, -0.105644122, -0.120459415, -0.549363852, -0.2709876, -0.481245726, -0.473378867, 0.0835888162, 0.526793778, 0.139255807, 0.271011472, 0.259925485, 0.335582793, 0.507959962, 0.0545308366, 0.225183815, 0.33489278, 0.111045465, -0.479850471, -0.468139261, 0.072971493, -0.307114094, -0.250201166, 0.130623177}},
  {"dpm",  // run(DPMSolverMultistepScheduler, 10)
   SamplerKind::dpmpp_2m, 10, std::nullopt, [](SchedulerConfig&) {},
   {-5.21708059, -0.81868428, 0.0481597483, -3.76677251, -0.196549475, -2.30606127, -2.44155765, 3.02218509, 6.96400499, 1.71361268, 2.0769968, 1.00606143, 1.12338173, 2.6326859, -2.26550817, 0.00235835509, 1.93895781, 0.48214677, -4.86382198, -3.71099925, 3.00656462, -0.582255781, 0.203217372, 4.11190939}},
  {"dpm_karras_v",  // run(DPMSolverMultistepScheduler, 10, use_karras_sigmas=True, prediction_type="v_prediction", beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
   SamplerKind::dpmpp_2m, 10, std::nullopt, [](SchedulerConfig& c) { c.use_karras_sigmas = true; c.prediction_type = PredictionType::v_prediction; c.beta_schedule = BetaSchedule::scaled_linear; c.beta_start = 0.00085; c.beta_end = 0.012; },
   {-0.569517195, 0.0112199746, 0.026011914, -0.687203407, -0.241993487, -0.648295343, -0.709322274, 0.142115146, 0.801863253, 0.074699156, 0.243286505, 0.200242817, 0.335332036, 0.664301217, -0.0343412496, 0.334615052, 0.606998324, 0.312044531, -0.617701828, -0.55879128, 0.360239983, -0.303524554, -0.260571599, 0.305890679}},
  {"dpm_heun_sigma_min",  // run(DPMSolverMultistepScheduler, 10, solver_type="heun", lower_order_final=False, final_sigmas_type="sigma_min")
   SamplerKind::dpmpp_2m, 10, std::nullopt, [](SchedulerConfig& c) { c.solver_type = DpmSolverType::heun; c.lower_order_final = false; c.final_sigmas_type = FinalSigmas::sigma_min; },
   {-4.98766804, -0.505818367, 0.327795506, -3.65363336, -0.124898314, -2.4020586, -2.65829349, 2.82157922, 6.78396797, 1.41013885, 1.81046903, 0.789014697, 1.01222408, 2.67397594, -2.20086217, 0.221609265, 2.27638459, 0.82817924, -4.63405991, -3.50940871, 3.25602579, -0.520730436, 0.156148314, 4.0269227}},
  {"dpm_sigma_min_lof",  // run(DPMSolverMultistepScheduler, 10, final_sigmas_type="sigma_min")
   SamplerKind::dpmpp_2m, 10, std::nullopt, [](SchedulerConfig& c) { c.final_sigmas_type = FinalSigmas::sigma_min; },
   {-5.26047516, -0.822863758, 0.0527472273, -3.79384804, -0.193080977, -2.32110691, -2.45893002, 3.04969978, 7.02320719, 1.72624481, 2.0911243, 1.0099529, 1.12778783, 2.65015721, -2.2888608, -0.000250834273, 1.95462728, 0.487314373, -4.90241575, -3.73839974, 3.03717184, -0.582075477, 0.209521607, 4.15031195}},
  {"dpm_20_leading",  // run(DPMSolverMultistepScheduler, 20, timestep_spacing="leading", steps_offset=1)
   SamplerKind::dpmpp_2m, 20, std::nullopt, [](SchedulerConfig& c) { c.timestep_spacing = TimestepSpacing::leading; c.steps_offset = 1; },
   {-4.57405329, -0.716409385, -0.0236424357, -3.51450896, -0.372631103, -2.29051399, -2.41010499, 2.5148561, 6.10282183, 1.47697544, 1.88623261, 1.00746405, 1.17840004, 2.57256699, -1.80045867, 0.213027582, 1.90130675, 0.528366625, -4.34050369, -3.39156961, 2.54999518, -0.718830526, -0.0436293967, 3.45904374}},
  {"dpm_zero_snr",  // run(DPMSolverMultistepScheduler, 10, rescale_betas_zero_snr=True, timestep_spacing="trailing", prediction_type="v_prediction")
   SamplerKind::dpmpp_2m, 10, std::nullopt, [](SchedulerConfig& c) { c.rescale_betas_zero_snr = true; c.timestep_spacing = TimestepSpacing::trailing; c.prediction_type = PredictionType::v_prediction; },
   {-0.471049398, -0.0489879362, -0.0574449711, -0.619242728, -0.272063583, -0.572925568, -0.596786499, 0.092474319, 0.635652781, 0.102689594, 0.257418245, 0.238900751, 0.347003669, 0.593452513, 0.0333299264, 0.291952372, 0.471340656, 0.211160958, -0.536535978, -0.510649979, 0.191938564, -0.319564998, -0.272280753, 0.189999178}},
  {"dpm_cfg_order1",  // run(DPMSolverMultistepScheduler, 10, w=1.5, solver_order=1)
   SamplerKind::dpmpp_2m, 10, std::optional<double>(1.5), [](SchedulerConfig& c) { c.solver_order = 1; },
   {-5.68101215, 28.8036728, 28.055645, -17.2109985, 0.427609265, -32.4243889, -46.8112221, -9.34251976, 18.5165997, -29.9937496, -24.4523888, -27.2661133, -16.2749672, 9.01532841, -21.5211391, 10.0042295, 36.2958641, 29.4328709, -15.4505424, -6.93909836, 47.2927284, 8.58978271, 7.35624456, 33.9379921}},
  };
  return cases;
}

Tensor run_loop(const LoopCase& c, uint64_t seed = 42, DType dtype = DType::f32) {
  Sampler s(config(c.kind, c.edit), c.steps);
  const Shape shape = {2, 2, 2, 3};
  auto model = [&](const Tensor& x, int64_t t) {
    std::vector<double> xv = x.to_vector(), out = fake_model(xv, t, false);
    if (!c.guidance) return Tensor::from(out, shape, dtype);
    std::vector<double> cond = fake_model(xv, t, true);
    out.insert(out.end(), cond.begin(), cond.end());  // [uncond; cond] rows
    return Tensor::from(out, {4, 2, 2, 3}, dtype);
  };
  return s.sample(model, Sampler::initial_noise(shape, seed, dtype), SampleOptions{.seed = seed, .guidance = c.guidance});
}

}  // namespace

TEST_CASE("10-step sampling loops with a fake model match diffusers' schedulers end to end", "[sampler]") {
  for (const auto& c : loop_cases()) {
    INFO(c.name);
    check_close(run_loop(c).to_vector(), c.want, 1e-5);
  }
}

TEST_CASE("sampling is deterministic for a seed, differs across seeds, and f64 agrees with f32", "[sampler]") {
  const LoopCase& ddpm = loop_cases()[0];
  REQUIRE(std::string(ddpm.name) == "ddpm");
  CHECK(run_loop(ddpm, 42).to_vector() == run_loop(ddpm, 42).to_vector());
  CHECK(run_loop(ddpm, 42).to_vector() != run_loop(ddpm, 43).to_vector());
  for (const auto& c : loop_cases()) {
    INFO(c.name);
    check_close(run_loop(c, 42, DType::f64).to_vector(), run_loop(c, 42, DType::f32).to_vector(), 1e-5);
  }
}
