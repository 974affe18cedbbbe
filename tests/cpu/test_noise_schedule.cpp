// NoiseSchedule against numbers printed by diffusers 0.34.0 (torch 1.13, x86 AVX2) with the
// snippet above each table; min-SNR-γ weights and q_sample coefficients against their formulas.
#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

#include "engine/noise_schedule.h"

using namespace diffuse;

namespace {

const std::vector<int64_t> kTs = {0, 1, 10, 100, 499, 500, 998, 999};

// |a − b| ≤ rel·|b| + abs for every entry.
void check_close(const std::vector<double>& got, const std::vector<double>& want, double rel, double abs = 0) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("index " << i << ": got " << got[i] << ", diffusers " << want[i]);
    CHECK(std::fabs(got[i] - want[i]) <= rel * std::fabs(want[i]) + abs);
  }
}

std::vector<double> at(const std::vector<double>& v, const std::vector<int64_t>& ts) {
  std::vector<double> out;
  for (int64_t t : ts) out.push_back(v[t]);
  return out;
}

// Float32 rounding of each value: diffusers' betas are float32, ours f64 copies of float32s.
std::vector<double> as_f32(const std::vector<double>& v) {
  std::vector<double> out;
  for (double x : v) out.push_back(static_cast<float>(x));
  return out;
}

}  // namespace

// Printed by:
//   from diffusers import DDPMScheduler
//   def show(name, v): print(name, "{" + ", ".join(repr(float(x)) for x in v) + "}")
//   ts = (0, 1, 10, 100, 499, 500, 998, 999)
//   for kw in [dict(), dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
//              dict(beta_schedule="squaredcos_cap_v2"), dict(rescale_betas_zero_snr=True),
//              dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, rescale_betas_zero_snr=True)]:
//       s = DDPMScheduler(**kw); print(kw)
//       show("betas", [s.betas[t] for t in ts]); show("alphas_cumprod", [s.alphas_cumprod[t] for t in ts])
TEST_CASE("linear betas are diffusers' float32 betas and alphas_cumprod agrees to float32 rounding", "[schedule]") {
  NoiseSchedule s;
  CHECK(as_f32(at(s.betas(), kTs)) ==
        std::vector<double>{9.999999747378752e-05, 0.00011991991777904332, 0.0002991991932503879, 0.0020919921807944775,
                            0.0100400410592556, 0.010059960186481476, 0.01998008042573929, 0.019999999552965164});
  check_close(at(s.alphas_cumprod(), kTs),
              {0.9998999834060669, 0.9997800588607788, 0.9978064894676208, 0.8951413631439209, 0.07858724147081375,
               0.07779666036367416, 4.118194556212984e-05, 4.0358307160204276e-05},
              1e-7);
}

TEST_CASE("scaled_linear betas and alphas_cumprod match diffusers", "[schedule]") {
  NoiseSchedule s({.beta_start = 0.00085, .beta_end = 0.012, .beta_schedule = BetaSchedule::scaled_linear});
  CHECK(as_f32(at(s.betas(), kTs)) ==
        std::vector<double>{0.0008499999530613422, 0.0008546985918655992, 0.0008975692908279598, 0.0013839724706485868,
                            0.004803793970495462, 0.004814954474568367, 0.01198237482458353, 0.011999999172985554});
  check_close(at(s.alphas_cumprod(), kTs),
              {0.9991499781608582, 0.9982960224151611, 0.9904313087463379, 0.894223153591156, 0.2776694595813751,
               0.2763324975967407, 0.0047166962176561356, 0.0046600960195064545},
              1e-7);
}

TEST_CASE("squaredcos_cap_v2 betas (capped at 0.999) and alphas_cumprod match diffusers", "[schedule]") {
  NoiseSchedule s({.beta_schedule = BetaSchedule::squaredcos_cap_v2});
  CHECK(as_f32(at(s.betas(), kTs)) ==
        std::vector<double>{4.128422369831242e-05, 4.614175122696906e-05, 8.987136243376881e-05, 0.0005318991607055068,
                            0.003145886119455099, 0.003155691549181938, 0.7499994039535522, 0.9990000128746033});
  check_close(at(s.alphas_cumprod(), kTs),
              {0.9999586939811707, 0.9999125599861145, 0.9992788434028625, 0.9715756177902222, 0.4938434660434723,
               0.4922850430011749, 2.428766265438753e-06, 2.4287349909002387e-09},
              1e-7);
}

TEST_CASE("zero-terminal-SNR rescaling matches diffusers' rescale_zero_terminal_snr", "[schedule]") {
  // diffusers rescales in float32, we in f64: √ᾱ_t − √ᾱ_T and β = 1 − ᾱ_t/ᾱ_{t−1} cancel in
  // float32, so diffusers' betas carry up to ~3e-6 absolute error near the end. The same function
  // run in float64 on the float32 betas is what we compute, to 1e-10.
  NoiseSchedule lin({.rescale_betas_zero_snr = true});
  check_close(at(lin.betas(), kTs),
              {0.00010001659393310547, 0.00012063980102539062, 0.00030118227005004883, 0.002106010913848877,
               0.010271012783050537, 0.010292530059814453, 0.7522695064544678, 1.0},
              1e-6, 3e-6);
  // Printed by:
  //   from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr
  //   b = rescale_zero_terminal_snr(DDPMScheduler().betas.double()); a = torch.cumprod(1 - b, 0)
  //   show("betas", [b[t] for t in ts]); show("alphas_cumprod", [a[t] for t in ts])
  check_close(at(lin.betas(), kTs),
              {9.999999747389854e-05, 0.00012068663344300123, 0.00030111378620623075, 0.002106111697160906,
               0.010271043623652054, 0.010292617689994787, 0.752267241112154, 1.0},
              1e-10);
  check_close(at(lin.alphas_cumprod(), kTs),
              {0.9999000000025261, 0.9997793254377462, 0.9977931946986675, 0.8944904358191135, 0.07602874692354968,
               0.07524621209801621, 4.2132632269355995e-09, 0.0},
              1e-12);
  check_close(at(lin.alphas_cumprod(), kTs),
              {0.9998999834060669, 0.9997793436050415, 0.9977930188179016, 0.8944903612136841, 0.07602876424789429,
               0.07524622976779938, 4.213215998305486e-09, 0.0},
              1e-6, 1e-10);
  CHECK(lin.alphas_cumprod()[999] == 0.0);
  CHECK(lin.snr(999) == 0.0);
  NoiseSchedule sl({.beta_start = 0.00085, .beta_end = 0.012, .beta_schedule = BetaSchedule::scaled_linear,
                    .rescale_betas_zero_snr = true});
  check_close(at(sl.alphas_cumprod(), kTs),
              {0.9991499781608582, 0.9982334971427917, 0.9897937178611755, 0.8867608904838562, 0.2423589527606964,
               0.24101859331130981, 1.9678900287090073e-07, 0.0},
              1e-6, 1e-10);
}

// Printed by:
//   s = DDPMScheduler(num_train_timesteps=37, beta_start=0.001, beta_end=0.2)
//   show("betas", s.betas); show("alphas_cumprod", s.alphas_cumprod)
TEST_CASE("a short schedule (37 steps: torch's scalar linspace path) matches diffusers", "[schedule]") {
  NoiseSchedule s({.num_train_timesteps = 37, .beta_start = 0.001, .beta_end = 0.2});
  CHECK(as_f32(s.betas()) ==
        std::vector<double>{
            0.0010000000474974513, 0.006527777761220932, 0.012055555358529091, 0.01758333295583725, 0.02311111055314541,
            0.028638888150453568, 0.03416666388511658, 0.03969443961977959, 0.045222219079732895, 0.050749994814395905,
            0.05627777427434921, 0.06180555373430252, 0.06733332574367523, 0.07286110520362854, 0.07838888466358185,
            0.08391666412353516, 0.08944444358348846, 0.09497222304344177, 0.10050000250339508, 0.10602777451276779,
            0.1115555539727211, 0.11708333343267441, 0.12261110544204712, 0.12813888490200043, 0.13366666436195374,
            0.13919444382190704, 0.14472222328186035, 0.15025000274181366, 0.15577778220176697, 0.16130554676055908,
            0.1668333262205124, 0.1723611056804657, 0.1778889000415802, 0.18341666460037231, 0.18894444406032562,
            0.19447222352027893, 0.20000000298023224});
  check_close(s.alphas_cumprod(),
              {0.9990000128746033, 0.9924787878990173, 0.980513870716095, 0.9632731676101685, 0.9410108923912048,
               0.9140613675117493, 0.8828309178352356, 0.8477874398231506, 0.8094485998153687, 0.7683690786361694,
               0.7251269817352295, 0.6803101301193237, 0.6345025897026062, 0.5882720351219177, 0.5421580672264099,
               0.4966619610786438, 0.4522382915019989, 0.4092881977558136, 0.36815473437309265, 0.32912009954452515,
               0.2924049198627472, 0.2581692039966583, 0.2265147864818573, 0.1974894255399704, 0.17109167575836182,
               0.14727666974067688, 0.12596246600151062, 0.10703659802675247, 0.09036267548799515, 0.07578667253255844,
               0.06314292550086975, 0.05225954204797745, 0.04296315088868141, 0.035082992166280746, 0.028454255312681198,
               0.022920694202184677, 0.018336554989218712},
              1e-7);
}

// Printed by (compute_snr inlined from diffusers.training_utils; the weighting of
// examples/text_to_image/train_text_to_image.py with snr_gamma = 5):
//   def compute_snr(s, t):
//       a = (s.alphas_cumprod ** 0.5)[t].float(); sg = ((1.0 - s.alphas_cumprod) ** 0.5)[t].float()
//       return (a / sg) ** 2
//   t = torch.tensor([0, 10, 100, 500, 900, 999])
//   for pred in ("epsilon", "v_prediction", "sample"):
//       s = DDPMScheduler(prediction_type=pred); snr = compute_snr(s, t)
//       w = torch.stack([snr, 5.0 * torch.ones_like(t)], dim=1).min(dim=1)[0]
//       if pred == "epsilon": w = w / snr
//       elif pred == "v_prediction": w = w / (snr + 1)
//       show("snr", snr) if pred == "epsilon" else None; show("w " + pred, w)
TEST_CASE("SNR and min-SNR-gamma loss weights match diffusers' training recipe", "[schedule]") {
  const std::vector<int64_t> ts = {0, 10, 100, 500, 900, 999};
  auto weights = [&](PredictionType p) {
    NoiseSchedule s({.prediction_type = p});
    std::vector<double> w;
    for (int64_t t : ts) w.push_back(s.min_snr_weight(t, 5.0));
    return w;
  };
  NoiseSchedule s;
  std::vector<double> snr;
  for (int64_t t : ts) snr.push_back(s.snr(t));
  // diffusers forms 1 − ᾱ from float32 ᾱ: near t = 0 (1 − ᾱ_10 ≈ 2e-3) float32's 6e-8 rounding of
  // ᾱ is ~3e-5 of it, so the SNR there agrees only to that.
  check_close(snr, {9997.3408203125, 454.8902282714844, 8.536649703979492, 0.0843595415353775, 0.0002703175996430218,
                    4.035994425066747e-05},
              5e-5);
  check_close(weights(PredictionType::epsilon), {0.000500132970046252, 0.010991662740707397, 0.5857098698616028, 1, 1, 1},
              5e-5);
  check_close(weights(PredictionType::v_prediction),
              {0.0005000829696655273, 0.010967552661895752, 0.5242931246757507, 0.07779665291309357,
               0.0002702445490285754, 4.035831443616189e-05},
              5e-5);
  check_close(weights(PredictionType::sample), {5, 5, 5, 0.0843595415353775, 0.0002703175996430218, 4.035994425066747e-05},
              5e-5);
  CHECK(s.min_snr_weight(500, 0) == 1.0);  // γ <= 0: weighting off
  // Zero terminal SNR: ε-weight takes its limit 1 instead of 0/0.
  NoiseSchedule z({.rescale_betas_zero_snr = true});
  CHECK(z.min_snr_weight(999, 5.0) == 1.0);
}

TEST_CASE("q_sample coefficients give x_t and the target of each prediction type", "[schedule]") {
  const std::vector<int64_t> ts = {0, 250, 999};
  for (auto p : {PredictionType::epsilon, PredictionType::v_prediction, PredictionType::sample}) {
    NoiseSchedule s({.prediction_type = p});
    auto coefs = s.q_sample_coefs(ts, 5.0);
    REQUIRE(coefs.size() == ts.size());
    for (size_t i = 0; i < ts.size(); ++i) {
      const auto& c = coefs[i];
      double a = std::sqrt(s.alphas_cumprod()[ts[i]]), b = std::sqrt(1 - s.alphas_cumprod()[ts[i]]);
      CHECK(c.sqrt_alpha_bar == Approx(a).epsilon(1e-15));
      CHECK(c.sqrt_one_minus_alpha_bar == Approx(b).epsilon(1e-15));
      CHECK(c.loss_weight == s.min_snr_weight(ts[i], 5.0));
      // target for x0 = 0.3, ε = −1.2 (v = √ᾱ·ε − √(1−ᾱ)·x0).
      double target = c.target_x0 * 0.3 + c.target_eps * -1.2;
      double want = p == PredictionType::epsilon ? -1.2 : p == PredictionType::sample ? 0.3 : a * -1.2 - b * 0.3;
      CHECK(target == Approx(want).margin(1e-15));
    }
  }
  NoiseSchedule s;
  CHECK_THROWS_WITH(s.q_sample_coefs({1000}), Catch::Contains("timestep 1000 outside [0, 1000)"));
  CHECK_THROWS_WITH(s.alpha_bar(-1), Catch::Contains("timestep -1"));
}

TEST_CASE("bad schedule options are one clear error each", "[schedule]") {
  CHECK_THROWS_WITH(NoiseSchedule({.num_train_timesteps = 0}), Catch::Contains("num_train_timesteps must be >= 1"));
  CHECK_THROWS_WITH(NoiseSchedule({.beta_start = 0.02, .beta_end = 0.01}), Catch::Contains("beta_start <= beta_end"));
  CHECK_THROWS_WITH(NoiseSchedule({.beta_start = 0.1, .beta_end = 1.5}), Catch::Contains("beta_end < 1"));
  CHECK_THROWS_WITH(parse_beta_schedule("sigmoid", "--beta-schedule"),
                    Catch::Contains("--beta-schedule: beta schedule \"sigmoid\" is not supported"));
  CHECK_THROWS_WITH(parse_prediction_type("flow_prediction", "cfg.json"), Catch::Contains("\"flow_prediction\""));
}
