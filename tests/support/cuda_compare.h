// For the `cuda` tests: the same computation on CUDA tensors and on the CPU, compared. Errors are
// relative to the reference tensor's scale, max|got - want| / max|want| (docs/design.md §11: f32 well
// under 1e-3, bf16 under 1e-2); a NaN or inf in either tensor is an infinite error, so NaN never
// passes and a poisoned, unwritten element fails.
#pragma once
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "nn/tensor.h"
#include "support/gradcheck.h"

namespace diffuse::test {

// max |got - want| over max |want|; an all-zero reference gives the absolute error.
inline double rel_to_peak_error(const Tensor& got, const Tensor& want) {
  REQUIRE(got.shape() == want.shape());
  const std::vector<double> g = got.to_vector(), w = want.to_vector();
  double peak = 0, worst = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    if (!std::isfinite(g[i]) || !std::isfinite(w[i])) return INFINITY;
    peak = std::max(peak, std::fabs(w[i]));
    worst = std::max(worst, std::fabs(g[i] - w[i]));
  }
  return peak > 0 ? worst / peak : worst;
}

// max |t|; infinite when any element is not finite.
inline double max_abs(const Tensor& t) {
  double peak = 0;
  for (double v : t.to_vector()) {
    if (!std::isfinite(v)) return INFINITY;
    peak = std::max(peak, std::fabs(v));
  }
  return peak;
}

// One UNet parameter's CUDA grad against the CPU's (diffusers' names): the error relative to
// the reference's peak must be at most tol; returns it. The exception is an attention key bias
// (`….to_k.bias`): it adds q·b to every score of a row, which the softmax ignores, so its grad
// is zero in exact arithmetic and rounding noise on both devices, with no peak to be relative
// to. Both must then be at most 1e-4 of the peak of the key weight's grad (`key_weight_grad`),
// and 0 is returned.
inline double check_param_grad(const std::string& name, const Tensor& got, const Tensor& want,
                               const Tensor& key_weight_grad, double tol = 1e-3) {
  INFO("grad of " << name << " " << want.describe());
  if (name.size() >= 10 && name.compare(name.size() - 10, 10, ".to_k.bias") == 0) {
    REQUIRE(key_weight_grad.defined());
    const double scale = max_abs(key_weight_grad);
    INFO("key bias grad peaks: cpu " << max_abs(want) << ", cuda " << max_abs(got) << "; key weight grad peak "
                                     << scale);
    CHECK(max_abs(want) <= 1e-4 * scale);
    CHECK(max_abs(got) <= 1e-4 * scale);
    return 0;
  }
  const double err = rel_to_peak_error(got, want);
  INFO("error " << err);
  CHECK(err <= tol);
  return err;
}

// The name of the key weight beside a key bias (`….to_k.bias` -> `….to_k.weight`), else "".
inline std::string key_weight_of(const std::string& name) {
  if (name.size() < 10 || name.compare(name.size() - 10, 10, ".to_k.bias") != 0) return "";
  return name.substr(0, name.size() - 4) + "weight";
}

// A leaf copy of a host tensor on `device` with the original's requires_grad (undefined stays so).
inline Tensor leaf_on(const Tensor& t, Device device) {
  if (!t.defined()) return t;
  Tensor copy = device == Device::cpu ? t.detach().clone() : t.detach().to(device);
  if (t.requires_grad()) copy.set_requires_grad(true);
  return copy;
}

using OpFn = std::function<Tensor(const std::vector<Tensor>& inputs)>;

// Runs f on copies of `inputs` (host tensors; those with requires_grad set are differentiated) on
// the CPU and on CUDA, then checks: the CUDA output lives on CUDA with the CPU output's shape and
// dtype and matches it, and so do the loss weighted_sum(output) and its grad with respect to
// every input that requires grad.
inline void check_against_cpu(const std::string& what, const OpFn& f, const std::vector<Tensor>& inputs,
                              double tol = 1e-3, uint64_t loss_seed = 1234) {
  INFO(what);
  std::vector<Tensor> on_cpu, on_cuda;
  for (const Tensor& t : inputs) {
    on_cpu.push_back(leaf_on(t, Device::cpu));
    on_cuda.push_back(leaf_on(t, Device::cuda));
  }
  // One device's forward and backward before the other's: the tape is shared, and a backward
  // consumes every node recorded so far.
  const Tensor want = f(on_cpu);
  const Tensor loss_cpu = want.requires_grad() ? weighted_sum(want, loss_seed) : Tensor();
  if (loss_cpu.defined()) loss_cpu.backward();
  const Tensor got = f(on_cuda);
  const Tensor loss_cuda = got.requires_grad() ? weighted_sum(got, loss_seed) : Tensor();
  if (loss_cuda.defined()) loss_cuda.backward();

  REQUIRE(got.device() == Device::cuda);
  REQUIRE(got.dtype() == want.dtype());
  REQUIRE(got.shape() == want.shape());
  const double out_err = rel_to_peak_error(got, want);
  INFO("output " << want.describe() << ": error " << out_err);
  CHECK(out_err <= tol);
  REQUIRE(loss_cuda.defined() == loss_cpu.defined());
  if (!loss_cpu.defined()) return;
  // The loss is a sum that may cancel: its error is measured against Σ|y·r|, its condition.
  const std::vector<double> y = want.to_vector(), r = Tensor::randn(want.shape(), loss_seed).to_vector();
  double magnitude = 0;
  for (size_t i = 0; i < y.size(); ++i) magnitude += std::fabs(y[i] * r[i]);
  const double loss_err = std::fabs(loss_cuda.item() - loss_cpu.item()) / std::max(magnitude, 1e-30);
  INFO("loss " << loss_cpu.item() << " vs " << loss_cuda.item() << ": error " << loss_err);
  CHECK(loss_err <= tol);  // a NaN loss fails here too
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined() || !inputs[i].requires_grad()) continue;
    const Tensor gw = on_cpu[i].grad(), gg = on_cuda[i].grad();
    INFO("grad of input " << i << " " << inputs[i].describe());
    REQUIRE(gw.defined());
    REQUIRE(gg.defined());
    CHECK(gg.device() == Device::cuda);
    const double err = rel_to_peak_error(gg, gw);
    INFO("error " << err);
    CHECK(err <= tol);
  }
}

}  // namespace diffuse::test
