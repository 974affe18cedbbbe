// Op table rows for nn/ops_loss.cpp and nn/ops_diffusion.cpp: dropout (the Philox mask of
// (seed, offset) on every backend, so the CUDA mask is the CPU's), mse_loss with and without
// per-sample weights (one of them zero; the target is never differentiated); q_sample for each
// training target (f32 only) and denoise_step for each update kind, guided or not, clipped or not,
// with and without noise. The last two are not differentiable: forward only. Sizes are odd so the
// vectorised kernels' tails run.
#include <cmath>
#include <string>

#include "nn/ops.h"
#include "ops/naive_reference.h"
#include "ops/op_table.h"

namespace diffuse::test::op_table {

namespace {

namespace k = diffuse::kernels;

OpRow dropout_row(const Shape& s, double p, uint64_t seed, uint64_t offset) {
  return {.op = "dropout",
          .name = shape_str(s) + " p " + std::to_string(p) + " seed " + std::to_string(seed) + " offset " +
                  std::to_string(offset),
          .inputs = {normal(s)},
          .run = [=](const Inputs& in) -> Outputs { return {ops::dropout(in[0], p, seed, offset)}; },
          .reference = [=](const Inputs& in) -> Outputs { return {naive::dropout(in[0], p, seed, offset)}; },
          // x·(1/(1 − p)): two roundings in f32, one in f64; a wrong mask element is off by O(1).
          .bounds = {1e-15, 2e-7, 1e-3}};
}

OpRow mse_row(const Shape& s, const std::vector<double>& weight) {
  return {.op = "mse_loss",
          .name = shape_str(s) + (weight.empty() ? "" : " weighted"),
          .inputs = {normal(s), constant(s),
                     weight.empty() ? absent() : fixed(weight, {static_cast<int64_t>(weight.size())})},
          .run = [](const Inputs& in) -> Outputs { return {ops::mse_loss(in[0], in[1], in[2])}; },
          .reference = [](const Inputs& in) -> Outputs { return {naive::mse_loss(in[0], in[1], in[2])}; },
          .bounds = {1e-14, 1e-6, 1e-3}};
}

OpRow q_sample_row(const Shape& s, k::NoiseTarget target, const char* target_name) {
  k::QSampleDesc d;
  d.batch = s.front();
  d.per_sample = shape_numel(s) / d.batch;
  d.seed = 99;
  d.offset = 7;
  d.target = target;
  std::vector<double> a, b;
  for (int64_t n = 0; n < d.batch; ++n) {
    a.push_back(0.95 - 0.3 * static_cast<double>(n));
    b.push_back(std::sqrt(1 - a.back() * a.back()));
  }
  return {.op = "q_sample",
          .name = shape_str(s) + ", target " + target_name,
          .inputs = {constant(s), fixed(a, {d.batch}), fixed(b, {d.batch})},
          .run = [d](const Inputs& in) -> Outputs {
            const ops::QSampleOutput r = ops::q_sample(d, in[0], in[1], in[2]);
            return {r.x_t, r.target};
          },
          .reference = [d](const Inputs& in) -> Outputs {
            const auto [x_t, noise_target] = naive::q_sample(d, in[0], in[1], in[2]);
            return {x_t, noise_target};
          },
          .differentiable = false,
          .f32_only = true,
          .bounds = Bounds{}};
}

// model_output, x (x_t) and x0 (the previous step's x0 prediction); the op updates copies in place.
OpRow denoise_row(const std::string& what, const Shape& s, const k::DenoiseStepDesc& desc) {
  k::DenoiseStepDesc d = desc;
  d.numel = shape_numel(s);
  Shape model = s;
  if (d.guided) model.front() *= 2;
  return {.op = "denoise_step",
          .name = what + ": x " + shape_str(s),
          .inputs = {constant(model), constant(s), constant(s)},
          .run = [d](const Inputs& in) -> Outputs {
            Tensor x = in[1].clone(), x0 = in[2].clone();
            ops::denoise_step(d, in[0], x, x0);
            return {x, x0};
          },
          .reference = [d](const Inputs& in) -> Outputs {
            const auto [x_prev, x0] = naive::denoise_step(d, in[0], in[1], in[2]);
            return {x_prev, x0};
          },
          .differentiable = false,
          .bounds = Bounds{}};
}

}  // namespace

std::vector<OpRow> loss_diffusion_rows() {
  std::vector<OpRow> rows = {
      dropout_row({3, 5, 7}, 0.35, 1234, 10), dropout_row({2, 3, 1, 5}, 0.4, 5, 3),
      dropout_row({2, 4, 4, 8}, 0.1, 42, 5),  dropout_row({3, 5, 7, 3}, 0.5, 42, 0),
      mse_row({3, 2, 5, 3}, {}),              mse_row({3, 2, 5, 3}, {0.5, 2.0, 1.25}),
      mse_row({3, 1, 5}, {0.5, 2.0, 1.25}),  mse_row({4, 4, 4, 3}, {}),
      mse_row({2, 5, 7, 1}, {0.5, 0.0}),
  };
  for (const Shape& s : std::vector<Shape>{{2, 3, 4, 2}, {3, 5, 7}}) {
    rows.push_back(q_sample_row(s, k::NoiseTarget::epsilon, "epsilon"));
    rows.push_back(q_sample_row(s, k::NoiseTarget::v_prediction, "v_prediction"));
    rows.push_back(q_sample_row(s, k::NoiseTarget::sample, "sample"));
  }
  const int32_t ddpm = static_cast<int32_t>(k::DenoiseUpdate::ddpm), ddim = static_cast<int32_t>(k::DenoiseUpdate::ddim);
  const int32_t dpm1 = static_cast<int32_t>(k::DenoiseUpdate::dpm_first);
  const int32_t dpm2 = static_cast<int32_t>(k::DenoiseUpdate::dpm_second);
  k::DenoiseStepDesc d;
  d.x0_from_x = 1.3;
  d.x0_from_m = -0.6;
  d.c_x = 0.8;
  d.c_x0 = 0.25;
  d.seed = 11;
  d.noise_offset = 3;
  k::DenoiseStepDesc noisy = d;
  noisy.update = ddpm;
  noisy.noise_std = 0.3;
  rows.push_back(denoise_row("ddpm with noise", {2, 3, 5, 3}, noisy));
  k::DenoiseStepDesc clipped = noisy;
  clipped.clip = 1;
  clipped.clip_range = 0.5;
  rows.push_back(denoise_row("ddpm clipped", {3, 7}, clipped));
  k::DenoiseStepDesc eta = d;
  eta.update = ddim;
  eta.eps_from_x = 0.4;
  eta.eps_from_m = 1.1;
  eta.c_eps = -0.7;
  rows.push_back(denoise_row("ddim", {2, 3, 5, 3}, eta));
  eta.noise_std = 0.2;
  eta.guided = 1;
  eta.guidance = 7.5;
  rows.push_back(denoise_row("ddim guided with noise", {2, 2, 2, 4}, eta));
  k::DenoiseStepDesc first = d;
  first.update = dpm1;
  rows.push_back(denoise_row("dpm-solver++ first order", {2, 3, 5, 3}, first));
  k::DenoiseStepDesc second = d;
  second.update = dpm2;
  second.c_d1 = 0.45;
  second.guided = 1;
  second.guidance = 3.0;
  second.clip = 1;
  second.clip_range = 1.0;
  rows.push_back(denoise_row("dpm-solver++ 2M guided, clipped", {3, 5, 7}, second));
  return rows;
}

}  // namespace diffuse::test::op_table
