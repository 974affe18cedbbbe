// See q_sample.h.
#include "engine/q_sample.h"

#include "nn/ops.h"

namespace diffuse {

namespace {

// x0's checks, the descriptor and the op, with the per-sample coefficients in f32 host tensors [B].
QSampleResult q_sample_with(const Tensor& x0, const Tensor& sqrt_ab, const Tensor& sqrt_1mab,
                            PredictionType prediction, uint64_t seed, uint64_t offset, const Tensor& step = Tensor(),
                            uint64_t step_blocks = 0) {
  kernels::QSampleDesc d;
  d.batch = x0.dim(0);
  d.per_sample = d.batch ? x0.numel() / d.batch : 0;
  d.seed = seed;
  d.offset = offset;
  d.step_blocks = step_blocks;
  d.target = prediction == PredictionType::epsilon        ? kernels::NoiseTarget::epsilon
             : prediction == PredictionType::v_prediction ? kernels::NoiseTarget::v_prediction
                                                          : kernels::NoiseTarget::sample;
  ops::QSampleOutput r = ops::q_sample(d, x0, sqrt_ab.to(x0.device()), sqrt_1mab.to(x0.device()), step);
  return {r.x_t, r.target};
}

void check_batch(const Tensor& x0, size_t coefficients) {
  if (!x0.defined() || x0.ndim() < 1 || x0.dtype() != DType::f32)
    throw Error("q_sample: x0 must be an f32 batch, got " + x0.describe());
  if (static_cast<int64_t>(coefficients) != x0.dim(0))
    throw Error("q_sample: " + std::to_string(coefficients) + " coefficients for a batch of " +
                std::to_string(x0.dim(0)));
}

}  // namespace

QSampleResult q_sample(const Tensor& x0, const std::vector<QSampleCoef>& coefs, PredictionType prediction,
                       uint64_t seed, uint64_t offset) {
  check_batch(x0, coefs.size());
  const int64_t B = x0.dim(0);
  Tensor sqrt_ab = Tensor::empty({B}), sqrt_1mab = Tensor::empty({B});
  for (int64_t i = 0; i < B; ++i) {
    sqrt_ab.data<float>()[i] = static_cast<float>(coefs[i].sqrt_alpha_bar);
    sqrt_1mab.data<float>()[i] = static_cast<float>(coefs[i].sqrt_one_minus_alpha_bar);
  }
  return q_sample_with(x0, sqrt_ab, sqrt_1mab, prediction, seed, offset);
}

QSampleResult q_sample(const Tensor& x0, const NoiseSchedule& schedule, std::span<const int64_t> timesteps,
                       uint64_t seed, uint64_t offset) {
  check_batch(x0, timesteps.size());
  const int64_t B = x0.dim(0);
  Tensor sqrt_ab = Tensor::empty({B}), sqrt_1mab = Tensor::empty({B});
  for (int64_t i = 0; i < B; ++i) {
    sqrt_ab.data<float>()[i] = static_cast<float>(schedule.sqrt_alpha_bar(timesteps[i]));
    sqrt_1mab.data<float>()[i] = static_cast<float>(schedule.sqrt_one_minus_alpha_bar(timesteps[i]));
  }
  return q_sample_with(x0, sqrt_ab, sqrt_1mab, schedule.options().prediction_type, seed, offset);
}

QSampleResult q_sample(const Tensor& x0, const Tensor& sqrt_ab, const Tensor& sqrt_1mab, PredictionType prediction,
                       uint64_t seed, uint64_t offset, const Tensor& step, uint64_t step_blocks) {
  check_batch(x0, static_cast<size_t>(sqrt_ab.defined() ? sqrt_ab.numel() : 0));
  return q_sample_with(x0, sqrt_ab, sqrt_1mab, prediction, seed, offset, step, step_blocks);
}

}  // namespace diffuse
