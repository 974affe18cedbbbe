// See gradcheck.h.
#include "support/gradcheck.h"

#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>

#include "nn/autograd.h"
#include "nn/ops.h"

namespace diffuse::test {

double max_abs_error(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  auto va = a.to_vector(), vb = b.to_vector();
  double m = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    double d = std::fabs(va[i] - vb[i]);
    if (std::isnan(d)) return INFINITY;
    m = std::max(m, d);
  }
  return m;
}

double max_rel_error(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  auto va = a.to_vector(), vb = b.to_vector();
  double m = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    double d = std::fabs(va[i] - vb[i]) / std::max(1.0, std::fabs(vb[i]));
    if (std::isnan(d)) return INFINITY;
    m = std::max(m, d);
  }
  return m;
}

Tensor weighted_sum(const Tensor& y, uint64_t seed) {
  Tensor r = Tensor::randn(y.shape(), seed, 0, 0, y.dtype());
  if (y.device() != Device::cpu) r = r.to(y.device());
  return ops::sum(ops::mul(y, r));
}

void check_gradients(const ScalarFn& f, std::vector<Tensor> inputs, double eps, double tol) {
  std::vector<bool> wants(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    wants[i] = inputs[i].defined() && inputs[i].requires_grad();
    if (wants[i]) inputs[i].zero_grad();
  }
  Tensor loss = f(inputs);
  loss.backward();
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!wants[i]) continue;
    Tensor analytic = inputs[i].grad();
    INFO("input " << i << " " << inputs[i].describe());
    REQUIRE(analytic.defined());
    REQUIRE(analytic.shape() == inputs[i].shape());
    auto ga = analytic.to_vector();
    Tensor x = inputs[i];
    REQUIRE(x.device() == Device::cpu);
    REQUIRE(x.dtype() == DType::f64);
    double* p = x.data<double>();
    NoGrad no_grad;
    for (int64_t j = 0; j < x.numel(); ++j) {
      double keep = p[j];
      p[j] = keep + eps;
      double fp = f(inputs).item();
      p[j] = keep - eps;
      double fm = f(inputs).item();
      p[j] = keep;
      double numeric = (fp - fm) / (2 * eps);
      double err = std::fabs(ga[j] - numeric);
      if (!(err <= tol * std::max(1.0, std::fabs(numeric)))) {
        FAIL("gradient mismatch: input " << i << " element " << j << " analytic " << ga[j] << " numeric "
                                         << numeric);
      }
    }
  }
}

void check_directional_derivatives(const ScalarFn& f, std::vector<Tensor> inputs, uint64_t seed, double eps,
                                   double tol) {
  std::vector<bool> wants(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    wants[i] = inputs[i].defined() && inputs[i].requires_grad();
    if (wants[i]) inputs[i].zero_grad();
  }
  f(inputs).backward();
  NoGrad no_grad;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!wants[i]) continue;
    Tensor& x = inputs[i];
    INFO("input " << i << " " << x.describe());
    REQUIRE(x.grad().defined());
    REQUIRE(x.device() == Device::cpu);
    REQUIRE(x.dtype() == DType::f64);
    const std::vector<double> g = x.grad().to_vector(), u = Tensor::randn(x.shape(), seed + i, 0, 0, DType::f64).to_vector();
    double analytic = 0;
    for (size_t j = 0; j < g.size(); ++j) analytic += g[j] * u[j];
    double* p = x.data<double>();
    const std::vector<double> keep(p, p + x.numel());
    auto loss_at = [&](double step) {
      for (size_t j = 0; j < keep.size(); ++j) p[j] = keep[j] + step * u[j];
      return f(inputs).item();
    };
    const double numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps);
    std::copy(keep.begin(), keep.end(), p);
    INFO("directional derivative: analytic " << analytic << " numeric " << numeric);
    CHECK(std::fabs(analytic - numeric) <= tol * std::max(1.0, std::fabs(numeric)));
  }
}

}  // namespace diffuse::test
