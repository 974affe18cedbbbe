// The samplers against diffusers 0.34.0's DDPMScheduler, DDIMScheduler and
// DPMSolverMultistepScheduler (torch 1.13): timestep lists, Karras sigmas, per-step coefficients
// and single steps, with numbers printed by the snippets quoted here; the kernel; bad input.
// Noise: the reference scripts draw the same Philox normals as kernels/philox.h with the Python
// port `normals(seed, stream, block_offset, n)` quoted in test_sampler_loops.cpp, and hand them to
// diffusers' step(). Whole sampling loops are in test_sampler_loops.cpp.
#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "engine/sampler.h"
#include "kernels/denoise_step.h"

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

SchedulerConfig config(SamplerKind kind, const std::function<void(SchedulerConfig&)>& edit = {}) {
  SchedulerConfig c;
  c.kind = kind;
  if (edit) edit(c);
  return c;
}

std::vector<int64_t> timesteps(SamplerKind kind, int64_t T, int64_t n, TimestepSpacing sp, int64_t offset) {
  return Sampler(config(kind, [&](SchedulerConfig& c) {
                   c.num_train_timesteps = T;
                   c.timestep_spacing = sp;
                   c.steps_offset = offset;
                 }),
                 n)
      .timesteps();
}

}  // namespace

// Printed by:
//   def ts(cls, n, **kw):
//       s = cls(**kw); s.set_timesteps(n); return "{" + ", ".join(str(int(t)) for t in s.timesteps) + "}"
//   for sp in ("leading", "trailing", "linspace"):
//       for (T, n, off) in [(1000, 10, 0), (1000, 10, 1), (1000, 7, 0), (1000, 7, 1), (50, 3, 0), (1000, 1, 0)]:
//           a = ts(DDPMScheduler, n, num_train_timesteps=T, timestep_spacing=sp, steps_offset=off)
//           assert a == ts(DDIMScheduler, n, num_train_timesteps=T, timestep_spacing=sp, steps_offset=off)
//           print("ddpm", sp, T, n, off, a)
TEST_CASE("DDPM and DDIM timesteps match diffusers for every spacing and steps_offset", "[sampler]") {
  using TS = TimestepSpacing;
  struct Case { TS sp; int64_t T, n, off; std::vector<int64_t> want; };
  const std::vector<Case> cases = {
      {TS::leading, 1000, 10, 0, {900, 800, 700, 600, 500, 400, 300, 200, 100, 0}},
      {TS::leading, 1000, 10, 1, {901, 801, 701, 601, 501, 401, 301, 201, 101, 1}},
      {TS::leading, 1000, 7, 0, {852, 710, 568, 426, 284, 142, 0}},
      {TS::leading, 1000, 7, 1, {853, 711, 569, 427, 285, 143, 1}},
      {TS::leading, 50, 3, 0, {32, 16, 0}},
      {TS::leading, 1000, 1, 0, {0}},
      {TS::trailing, 1000, 10, 0, {999, 899, 799, 699, 599, 499, 399, 299, 199, 99}},
      {TS::trailing, 1000, 10, 1, {999, 899, 799, 699, 599, 499, 399, 299, 199, 99}},
      {TS::trailing, 1000, 7, 0, {999, 856, 713, 570, 428, 285, 142}},
      {TS::trailing, 1000, 7, 1, {999, 856, 713, 570, 428, 285, 142}},
      {TS::trailing, 50, 3, 0, {49, 32, 16}},
      {TS::trailing, 1000, 1, 0, {999}},
      {TS::linspace, 1000, 10, 0, {999, 888, 777, 666, 555, 444, 333, 222, 111, 0}},
      {TS::linspace, 1000, 10, 1, {999, 888, 777, 666, 555, 444, 333, 222, 111, 0}},
      {TS::linspace, 1000, 7, 0, {999, 832, 666, 500, 333, 166, 0}},
      {TS::linspace, 1000, 7, 1, {999, 832, 666, 500, 333, 166, 0}},
      {TS::linspace, 50, 3, 0, {49, 24, 0}},
      {TS::linspace, 1000, 1, 0, {0}},
  };
  for (const auto& c : cases) {
    INFO(timestep_spacing_name(c.sp) << " T=" << c.T << " n=" << c.n << " offset=" << c.off);
    CHECK(timesteps(SamplerKind::ddpm, c.T, c.n, c.sp, c.off) == c.want);
    CHECK(timesteps(SamplerKind::ddim, c.T, c.n, c.sp, c.off) == c.want);
  }
  // numpy's arange(1000, 0, -1000/61) has 62 entries (diffusers then runs a step at t = −1); we keep 61.
  auto t61 = timesteps(SamplerKind::ddpm, 1000, 61, TS::trailing, 0);
  CHECK(t61.size() == 61);
  CHECK(t61.front() == 999);
  CHECK(t61.back() == 15);
}

// Printed by (DPM = DPMSolverMultistepScheduler):
//   for sp in ("leading", "trailing", "linspace"):
//       for (T, n, off) in [(1000, 10, 0), (1000, 10, 1), (1000, 7, 0), (50, 3, 0), (1000, 1, 0)]:
//           print("dpm", sp, T, n, off, ts(DPM, n, num_train_timesteps=T, timestep_spacing=sp, steps_offset=off))
TEST_CASE("DPM-Solver++ timesteps match diffusers for every spacing and steps_offset", "[sampler]") {
  using TS = TimestepSpacing;
  struct Case { TS sp; int64_t T, n, off; std::vector<int64_t> want; };
  const std::vector<Case> cases = {
      {TS::leading, 1000, 10, 0, {900, 810, 720, 630, 540, 450, 360, 270, 180, 90}},
      {TS::leading, 1000, 10, 1, {901, 811, 721, 631, 541, 451, 361, 271, 181, 91}},
      {TS::leading, 1000, 7, 0, {875, 750, 625, 500, 375, 250, 125}},
      {TS::leading, 50, 3, 0, {36, 24, 12}},
      {TS::leading, 1000, 1, 0, {500}},
      {TS::trailing, 1000, 10, 0, {999, 899, 799, 699, 599, 499, 399, 299, 199, 99}},
      {TS::trailing, 1000, 10, 1, {999, 899, 799, 699, 599, 499, 399, 299, 199, 99}},
      {TS::trailing, 1000, 7, 0, {999, 856, 713, 570, 428, 285, 142}},
      {TS::trailing, 50, 3, 0, {49, 32, 16}},
      {TS::trailing, 1000, 1, 0, {999}},
      {TS::linspace, 1000, 10, 0, {999, 899, 799, 699, 599, 500, 400, 300, 200, 100}},
      {TS::linspace, 1000, 10, 1, {999, 899, 799, 699, 599, 500, 400, 300, 200, 100}},
      {TS::linspace, 1000, 7, 0, {999, 856, 714, 571, 428, 285, 143}},
      {TS::linspace, 50, 3, 0, {49, 33, 16}},
      {TS::linspace, 1000, 1, 0, {999}},
  };
  for (const auto& c : cases) {
    INFO(timestep_spacing_name(c.sp) << " T=" << c.T << " n=" << c.n << " offset=" << c.off);
    CHECK(timesteps(SamplerKind::dpmpp_2m, c.T, c.n, c.sp, c.off) == c.want);
  }
  // Unset spacing takes each class's default: leading for DDPM/DDIM, linspace for DPM-Solver++.
  CHECK(Sampler(config(SamplerKind::ddim), 10).timesteps().front() == 900);
  CHECK(Sampler(config(SamplerKind::dpmpp_2m), 10).timesteps().back() == 100);
}

// Printed by:
//   for kw in [dict(), dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
//              dict(beta_schedule="squaredcos_cap_v2")]:
//       for n in (7, 10):
//           s = DPM(use_karras_sigmas=True, **kw); s.set_timesteps(n)
//           print("karras", kw, n, "{" + ", ".join(str(int(t)) for t in s.timesteps) + "}",
//                 "{" + ", ".join(repr(float(x)) for x in s.sigmas) + "}")
TEST_CASE("DPM-Solver++ Karras sigmas and their timesteps match diffusers", "[sampler]") {
  struct Case { BetaSchedule bs; int64_t n; std::vector<int64_t> ts; std::vector<double> sigmas; };
  const std::vector<Case> cases = {
      {BetaSchedule::linear, 7, {999, 902, 775, 593, 301, 47, 0},
       {157.40725708007812, 61.93191146850586, 21.105602264404297, 5.911306381225586, 1.246360182762146,
        0.16786187887191772, 0.010001329705119133, 0.0}},
      {BetaSchedule::linear, 10, {999, 937, 864, 775, 663, 511, 301, 102, 18, 0},
       {157.40725708007812, 85.71072387695312, 44.04764175415039, 21.105602264404297, 9.274739265441895,
        3.652639865875244, 1.246360182762146, 0.34970611333847046, 0.0739302858710289, 0.010001329705119133, 0.0}},
      {BetaSchedule::scaled_linear, 7, {999, 868, 687, 427, 146, 18, 0},
       {14.614645004272461, 7.094419479370117, 3.1686108112335205, 1.274105191230774, 0.44692087173461914,
        0.13030871748924255, 0.029167532920837402, 0.0}},
      {BetaSchedule::scaled_linear, 10, {999, 916, 815, 687, 523, 327, 146, 41, 7, 0},
       {14.614645004272461, 9.102935791015625, 5.478400707244873, 3.1686108112335205, 1.7494229078292847,
        0.9140763878822327, 0.44692087173461914, 0.20139984786510468, 0.08191104978322983, 0.029167532920837402, 0.0}},
      // squaredcos_cap_v2: diffusers truncates (casts) instead of rounding.
      {BetaSchedule::squaredcos_cap_v2, 7, {999, 998, 998, 997, 983, 682, 0},
       {20291.302734375, 6666.47509765625, 1773.39453125, 345.8853454589844, 40.84315490722656, 1.8582979440689087,
        0.006427108775824308, 0.0}},
      {BetaSchedule::squaredcos_cap_v2, 10, {999, 998, 998, 998, 997, 995, 983, 894, 259, 0},
       {20291.302734375, 9856.4345703125, 4405.77001953125, 1773.39453125, 622.9054565429688, 181.96337890625,
        40.84315490722656, 6.096719741821289, 0.44390273094177246, 0.006427108775824308, 0.0}},
  };
  for (const auto& c : cases) {
    INFO(beta_schedule_name(c.bs) << " n=" << c.n);
    Sampler s(config(SamplerKind::dpmpp_2m,
                     [&](SchedulerConfig& k) {
                       k.use_karras_sigmas = true;
                       k.beta_schedule = c.bs;
                       if (c.bs == BetaSchedule::scaled_linear) k.beta_start = 0.00085, k.beta_end = 0.012;
                     }),
              c.n);
    CHECK(s.timesteps() == c.ts);
    // float32 σ in diffusers; the squaredcos ones (σ ~ 2e4 from ᾱ ~ 2e-9) carry its 1 − ᾱ rounding.
    check_close(s.sigmas(), c.sigmas, c.bs == BetaSchedule::squaredcos_cap_v2 ? 2e-5 : 1e-6);
  }
}

// Printed by:  from philox import normals; print(normals(42, 5, 0, 6).tolist())
TEST_CASE("initial noise is Philox stream kSampler from block 0, as the reference scripts draw it", "[sampler]") {
  Tensor x = Sampler::initial_noise({2, 3}, 42);
  check_close(x.to_vector(), {-1.015514850616455, 0.6529855132102966, 0.8418716788291931, -0.8689475655555725,
                              0.16394676268100739, -1.0049412250518799},
              1e-6);
  CHECK(Sampler::noise_offset(0, 24) == 6);  // after x_T's 6 blocks
  CHECK(Sampler::noise_offset(4, 8) == 10);
}

// The snippets below share:
//   def show(name, v): print(name, "{" + ", ".join("%.9g" % float(x) for x in torch.as_tensor(v).flatten()) + "}")
//   x = torch.tensor([[-1.5, -0.9, -0.3, 0.2, 0.7, 1.1, 1.6, 2.4]])
//   m = torch.tensor([[0.8, -0.4, 1.3, -1.1, 0.05, 0.6, -0.7, 1.9]])
//   z4 = torch.from_numpy(normals(7, 5, 2 * 5, 8)).reshape(1, 8)  # Sampler::noise_offset(4, 8) = 10 under seed 7
namespace {
const std::vector<double> kX = {-1.5, -0.9, -0.3, 0.2, 0.7, 1.1, 1.6, 2.4};
const std::vector<double> kM = {0.8, -0.4, 1.3, -1.1, 0.05, 0.6, -0.7, 1.9};

// Runs steps first..last of `s` on x = kX with model outputs `outputs` (one per step); returns x and x0.
std::pair<std::vector<double>, std::vector<double>> run_steps(const Sampler& s, int64_t first,
                                                              const std::vector<std::vector<double>>& outputs,
                                                              uint64_t seed) {
  Tensor x = Tensor::from(kX, {1, 8}), x0;
  for (size_t k = 0; k < outputs.size(); ++k)
    s.step(first + static_cast<int64_t>(k), Tensor::from(outputs[k], {1, 8}), x, x0,
           SampleOptions{.seed = seed, .guidance = std::nullopt});
  return {x.to_vector(), x0.to_vector()};
}
}  // namespace

// Printed by:
//   for sp in ("leading", "trailing"):
//       s = DDPMScheduler(timestep_spacing=sp); s.set_timesteps(10)
//       for t in (s.timesteps[0], s.timesteps[4], s.timesteps[9]):
//           prev_t = s.previous_timestep(t)
//           a = s.alphas_cumprod[t]; ap = s.alphas_cumprod[prev_t] if prev_t >= 0 else s.one
//           cur_a = a / ap; cur_b = 1 - cur_a
//           show("ddpm %s t=%d c_x0 c_x small large" % (sp, t), [ap ** 0.5 * cur_b / (1 - a),
//                cur_a ** 0.5 * (1 - ap) / (1 - a), s._get_variance(t), s._get_variance(t, variance_type="fixed_large")])
TEST_CASE("DDPM posterior-mean coefficients and fixed_small / fixed_large variances match diffusers", "[sampler]") {
  struct Case { TimestepSpacing sp; int64_t step, t; std::vector<double> want; };  // c_x0, c_x, small, large
  const std::vector<Case> cases = {
      {TimestepSpacing::leading, 0, 900, {0.0318751633, 0.422872007, 0.81972003, 0.820735812}},
      {TimestepSpacing::leading, 4, 500, {0.285343558, 0.554367959, 0.523012936, 0.598099589}},
      {TimestepSpacing::leading, 9, 0, {1, 0, 9.99999968e-21, 0.000100016594}},
      {TimestepSpacing::trailing, 0, 999, {0.0141571146, 0.382856101, 0.853151917, 0.853352308}},
      {TimestepSpacing::trailing, 4, 599, {0.193013042, 0.542803228, 0.634402394, 0.670692325}},
      {TimestepSpacing::trailing, 9, 99, {1, 0, 9.99999968e-21, 0.102982044}},
  };
  for (const auto& c : cases) {
    INFO(timestep_spacing_name(c.sp) << " t=" << c.t);
    Sampler small(config(SamplerKind::ddpm, [&](SchedulerConfig& k) { k.timestep_spacing = c.sp; }), 10);
    Sampler large(config(SamplerKind::ddpm, [&](SchedulerConfig& k) {
                    k.timestep_spacing = c.sp;
                    k.variance_type = VarianceType::fixed_large;
                  }),
                  10);
    REQUIRE(small.timesteps()[c.step] == c.t);
    const auto& d = small.step_desc(c.step);
    CHECK(d.update == static_cast<int32_t>(kernels::DenoiseUpdate::ddpm));
    check_close({d.c_x0, d.c_x}, {c.want[0], c.want[1]}, 2e-6);
    if (c.t == 0) {  // diffusers adds noise only while t > 0
      CHECK(d.noise_std == 0);
      CHECK(large.step_desc(c.step).noise_std == 0);
    } else {  // σ² is the variance (relative: fixed_small is clamped at 1e-20)
      CHECK(d.noise_std * d.noise_std / c.want[2] == Approx(1).epsilon(2e-6));
      double s_large = large.step_desc(c.step).noise_std;
      CHECK(s_large * s_large / c.want[3] == Approx(1).epsilon(2e-6));
    }
  }
}

// Printed by:
//   for pred in ("epsilon", "v_prediction", "sample"):
//       s = DDPMScheduler(prediction_type=pred); s.set_timesteps(10)
//       ddpm_mod.randn_tensor = lambda *a, **k: z4   # import diffusers.schedulers.scheduling_ddpm as ddpm_mod
//       out = s.step(m, s.timesteps[4], x)
//       show("ddpm step " + pred + " prev", out.prev_sample); show("ddpm step " + pred + " x0", out.pred_original_sample)
TEST_CASE("one DDPM step (t = 500, clipped x0, Philox noise) matches diffusers for each prediction type", "[sampler]") {
  struct Case { PredictionType p; std::vector<double> prev, x0; };
  const std::vector<Case> cases = {
      {PredictionType::epsilon,
       {-0.648111939, 0.105684757, -0.983160019, 0.720928431, 0.623088777, 1.42911422, 0.485172272, 1.57950497},
       {-1, -1, -1, 1, 1, 1, 1, 1}},
      {PredictionType::v_prediction,
       {-0.648111939, 0.429006755, -0.983160019, 0.720928431, 0.379755974, 1.06690598, 0.485172272, 1.00881791},
       {-1, 0.133097202, -1, 1, 0.147228658, -0.26937598, 1, -1}},
      {PredictionType::sample,
       {-0.134493619, 0.276890874, -0.412472904, 0.1502413, 0.352012396, 1.31497681, 8.82744789e-05, 1.57950497},
       {0.800000012, -0.400000006, 1, -1, 0.0500000007, 0.600000024, -0.699999988, 1}},
  };
  for (const auto& c : cases) {
    INFO(prediction_type_name(c.p));
    Sampler s(config(SamplerKind::ddpm, [&](SchedulerConfig& k) { k.prediction_type = c.p; }), 10);
    auto [prev, x0] = run_steps(s, 4, {kM}, 7);
    check_close(prev, c.prev, 2e-6);
    check_close(x0, c.x0, 2e-6);
  }
}

// Printed by:
//   s = DDIMScheduler(); s.set_timesteps(10)
//   for t in (500, 0):
//       prev = t - 100; a = s.alphas_cumprod[t]; ap = s.alphas_cumprod[prev] if prev >= 0 else s.final_alpha_cumprod
//       std = 1.0 * s._get_variance(t, prev) ** 0.5
//       show("ddim t=%d c_x0 sigma(eta=1) c_eps(eta=1) c_eps(eta=0)" % t, [ap ** 0.5, std, (1 - ap - std ** 2) ** 0.5, (1 - ap) ** 0.5])
//   for pred in ("epsilon", "v_prediction", "sample"):
//       for eta in (0.0, 1.0):
//           s = DDIMScheduler(prediction_type=pred); s.set_timesteps(10)
//           out = s.step(m, 500, x, eta=eta, variance_noise=z4 if eta else None)
//           show("ddim step %s eta=%g prev" % (pred, eta), out.prev_sample)
TEST_CASE("DDIM sigma (eta 0 and 1) and one DDIM step match diffusers", "[sampler]") {
  for (double eta : {0.0, 1.0}) {
    Sampler s(config(SamplerKind::ddim, [&](SchedulerConfig& k) { k.eta = eta; }), 10);
    const auto& d = s.step_desc(4);  // t = 500, prev 400
    check_close({d.c_x0, d.noise_std, d.c_eps},
                {0.439968169, eta * 0.723196328, eta == 0 ? 0.898013353 : 0.532367408}, 2e-6);
    const auto& last = s.step_desc(9);  // t = 0: ᾱ_prev = 1 (set_alpha_to_one), σ = 0
    check_close({last.c_x0, last.noise_std, last.c_eps}, {1, 0, 0}, 1e-12);
  }
  struct Case { PredictionType p; double eta; std::vector<double> prev; };
  const std::vector<Case> cases = {
      {PredictionType::epsilon, 0,
       {0.278442502, -0.799173474, 0.727449119, -0.547846556, 0.484868824, 0.978776217, -0.188641191, 2.1461935}},
      {PredictionType::epsilon, 1,
       {0.454709232, 0.237044334, -0.279396653, 0.179075241, 0.41627419, 1.29335451, -0.619849026, 1.41514456}},
      {PredictionType::v_prediction, 0,
       {-1.53315115, -0.817768693, -0.373064011, 0.336921364, 0.680962086, 0.980380356, 1.64443612, 2.10563326}},
      {PredictionType::v_prediction, 1,
       {-0.619253993, 0.429006696, -0.931811571, 0.703590393, 0.379755944, 1.06690598, 0.466850281, 1.03281367}},
      {PredictionType::sample, 0,
       {-1.25937247, -0.913269162, -0.17964226, 0.0339646935, 0.663544297, 1.1361227, 1.37079942, 2.18869877}},
      {PredictionType::sample, 1,
       {-0.13449356, 0.276890874, -0.458860278, 0.165703744, 0.352012396, 1.31497693, 8.82148743e-05, 1.44034278}},
  };
  for (const auto& c : cases) {
    INFO(prediction_type_name(c.p) << " eta=" << c.eta);
    Sampler s(config(SamplerKind::ddim, [&](SchedulerConfig& k) {
                k.prediction_type = c.p;
                k.eta = c.eta;
              }),
              10);
    check_close(run_steps(s, 4, {kM}, 7).first, c.prev, 2e-6);
  }
}

// Printed by:
//   for pred in ("epsilon", "v_prediction"):
//       s = DPM(prediction_type=pred); s.set_timesteps(10)
//       x1 = s.step(m, s.timesteps[0], x).prev_sample; show("dpm %s step0" % pred, x1)
//       x2 = s.step(-m, s.timesteps[1], x1).prev_sample; show("dpm %s step1" % pred, x2)
TEST_CASE("DPM-Solver++(2M): a first-order then a second-order step match diffusers", "[sampler]") {
  std::vector<double> neg_m;
  for (double v : kM) neg_m.push_back(-v);
  struct Case { PredictionType p; std::vector<double> step0, step1; };
  const std::vector<Case> cases = {
      {PredictionType::epsilon,
       {-5.20613575, -1.70563293, -2.8782444, 2.29482746, 1.74736273, 1.90561593, 5.30612707, 3.20550585},
       {-10.2222023, -5.05511904, -3.44120312, 2.58002257, 4.25168037, 6.04234219, 10.7158146, 12.4592915}},
      {PredictionType::v_prediction,
       {-1.508111, -0.89585799, -0.313292474, 0.211250275, 0.699451447, 1.09380007, 1.60708213, 2.38042402},
       {-1.47368395, -0.912822127, -0.257671684, 0.164194673, 0.70148313, 1.11928391, 1.57691514, 2.46128702}},
  };
  for (const auto& c : cases) {
    INFO(prediction_type_name(c.p));
    Sampler s(config(SamplerKind::dpmpp_2m, [&](SchedulerConfig& k) { k.prediction_type = c.p; }), 10);
    CHECK(s.step_desc(0).update == static_cast<int32_t>(kernels::DenoiseUpdate::dpm_first));
    CHECK(s.step_desc(1).update == static_cast<int32_t>(kernels::DenoiseUpdate::dpm_second));
    CHECK(s.step_desc(9).update == static_cast<int32_t>(kernels::DenoiseUpdate::dpm_first));  // final σ = 0
    check_close(run_steps(s, 0, {kM}, 0).first, c.step0, 2e-6);
    check_close(run_steps(s, 0, {kM, neg_m}, 0).first, c.step1, 2e-6);
  }
}

// ---- the kernel on its own ---------------------------------------------------------------------
TEST_CASE("denoise_step: guidance combine, clipping, noise indexing and in-place use", "[sampler][denoise_step]") {
  namespace k = kernels;
  const int64_t n = 7;  // not a multiple of a Philox block
  std::vector<float> x = {-2, -1, -0.5f, 0, 0.5f, 1, 2}, mu(n), mc(n), both;
  for (int64_t i = 0; i < n; ++i) mu[i] = 0.1f * static_cast<float>(i), mc[i] = 1 - 0.2f * static_cast<float>(i);
  both = mu;
  both.insert(both.end(), mc.begin(), mc.end());
  k::DenoiseStepDesc d;
  d.numel = n;
  d.update = static_cast<int32_t>(k::DenoiseUpdate::ddpm);
  d.x0_from_x = 0.5, d.x0_from_m = -2;
  d.clip = 1, d.clip_range = 1.25;
  d.c_x = 0.75, d.c_x0 = 0.25;
  d.noise_std = 0.3, d.seed = 11, d.noise_offset = 5;
  d.guided = 1, d.guidance = 2.5;
  std::vector<float> out(n), x0(n);
  k::cpu::denoise_step<float>(d, x.data(), both.data(), nullptr, out.data(), x0.data());
  for (int64_t i = 0; i < n; ++i) {
    double m = mu[i] + 2.5 * (mc[i] - mu[i]);
    double x0_want = std::clamp(0.5 * x[i] - 2 * m, -1.25, 1.25);
    double z = philox::normal_at(11, philox::kSampler, 5, static_cast<uint64_t>(i));
    CHECK(x0[i] == Approx(x0_want).margin(1e-6));
    CHECK(out[i] == Approx(0.75 * x[i] + 0.25 * x0_want + 0.3 * z).margin(1e-6));
  }
  // In place (x_prev over x) gives the same numbers.
  std::vector<float> xi = x, x0i(n);
  k::cpu::denoise_step<float>(d, xi.data(), both.data(), nullptr, xi.data(), x0i.data());
  CHECK(xi == out);
  CHECK(x0i == x0);
  // A second-order DPM step reads the previous x0, and refuses to run without it.
  d.update = static_cast<int32_t>(k::DenoiseUpdate::dpm_second);
  d.guided = 0, d.noise_std = 0, d.clip = 0, d.c_d1 = 0.5;
  std::vector<float> prev(n, 0.25f);
  k::cpu::denoise_step<float>(d, x.data(), mu.data(), prev.data(), out.data(), x0.data());
  for (int64_t i = 0; i < n; ++i) {
    double x0_want = 0.5 * x[i] - 2 * mu[i];
    CHECK(out[i] == Approx(0.75 * x[i] + 0.25 * x0_want + 0.5 * (x0_want - 0.25)).margin(1e-6));
  }
  CHECK_THROWS_WITH(k::cpu::denoise_step<float>(d, x.data(), mu.data(), nullptr, out.data(), x0.data()),
                    Catch::Contains("needs the previous x0"));
  d.update = 9;
  CHECK_THROWS_WITH(k::validate(d), Catch::Contains("unknown update kind 9"));
}

// ---- bad input ---------------------------------------------------------------------------------
TEST_CASE("bad sampler input is one clear error each", "[sampler]") {
  CHECK_THROWS_WITH(Sampler(config(SamplerKind::ddpm), 1001),
                    Catch::Contains("1001 inference steps: expected 1 to num_train_timesteps (1000)"));
  CHECK_THROWS_WITH(Sampler(config(SamplerKind::dpmpp_2m), 0), Catch::Contains("0 inference steps"));
  CHECK_THROWS_WITH(Sampler(config(SamplerKind::ddim, [](SchedulerConfig& c) { c.steps_offset = 1; }), 1000),
                    Catch::Contains("timestep 1000 (leading spacing, steps_offset 1) is outside [0, 1000)"));
  CHECK_THROWS_WITH(Sampler(config(SamplerKind::ddim, [](SchedulerConfig& c) { c.eta = 1.5; }), 10),
                    Catch::Contains("DDIM eta must be in [0, 1]"));
  CHECK_THROWS_WITH(Sampler(config(SamplerKind::dpmpp_2m, [](SchedulerConfig& c) { c.solver_order = 3; }), 10),
                    Catch::Contains("solver_order must be 1 or 2"));

  Sampler s(config(SamplerKind::ddim), 10);
  Tensor x = Tensor::zeros({2, 3}), x0;
  CHECK_THROWS_WITH(s.step(0, Tensor::zeros({2, 4}), x, x0, {}),
                    Catch::Contains("model output f32[2, 4] cpu does not match x_t f32[2, 3] cpu"));
  CHECK_THROWS_WITH(s.step(0, Tensor::zeros({2, 3}), x, x0, {.guidance = 3.0}),
                    Catch::Contains("with guidance: [uncond; cond] rows, [4, 3]"));
  CHECK_THROWS_WITH(s.step(0, Tensor::zeros({2, 3}, DType::f64), x, x0, {}), Catch::Contains("does not match"));
  CHECK_THROWS_WITH(s.step(10, Tensor::zeros({2, 3}), x, x0, {}), Catch::Contains("step 10 outside [0, 10)"));
  auto bad_model = [](const Tensor&, int64_t) { return Tensor::zeros({1, 3}); };
  CHECK_THROWS_WITH(s.sample(bad_model, x, {}), Catch::Contains("sampler: model output f32[1, 3]"));
}
