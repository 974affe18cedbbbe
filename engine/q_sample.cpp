// See q_sample.h.
#include "engine/q_sample.h"

#include "nn/ops.h"

namespace diffuse {

QSampleResult q_sample(const Tensor& x0, const std::vector<QSampleCoef>& coefs, PredictionType prediction,
                       uint64_t seed, uint64_t offset) {
  if (!x0.defined() || x0.ndim() < 1 || x0.dtype() != DType::f32)
    throw Error("q_sample: x0 must be an f32 batch, got " + x0.describe());
  const int64_t B = x0.dim(0);
  if (static_cast<int64_t>(coefs.size()) != B)
    throw Error("q_sample: " + std::to_string(coefs.size()) + " coefficients for a batch of " + std::to_string(B));
  kernels::QSampleDesc d;
  d.batch = B;
  d.per_sample = B ? x0.numel() / B : 0;
  d.seed = seed;
  d.offset = offset;
  d.target = prediction == PredictionType::epsilon        ? kernels::NoiseTarget::epsilon
             : prediction == PredictionType::v_prediction ? kernels::NoiseTarget::v_prediction
                                                          : kernels::NoiseTarget::sample;
  std::vector<double> a, s;
  for (const auto& c : coefs) {
    a.push_back(c.sqrt_alpha_bar);
    s.push_back(c.sqrt_one_minus_alpha_bar);
  }
  Tensor sqrt_ab = Tensor::from(a, {B}).to(x0.device());
  Tensor sqrt_1mab = Tensor::from(s, {B}).to(x0.device());
  ops::QSampleOutput r = ops::q_sample(d, x0, sqrt_ab, sqrt_1mab);
  return {r.x_t, r.target};
}

}  // namespace diffuse
