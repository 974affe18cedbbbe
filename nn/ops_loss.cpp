// Dropout and the MSE training loss (kernels/loss.h). Dropout's backward regenerates the Philox
// mask from (seed, offset) rather than saving it; mse_loss sends a gradient to pred only.
#include "kernels/loss.h"

#include "nn/autograd.h"
#include "nn/op_checks.h"
#include "nn/ops.h"

namespace diffuse::ops {

using namespace detail;
namespace k = diffuse::kernels;

Tensor dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset) {
  const char* op = "dropout";
  check_defined(op, x, "x");
  if (!(p >= 0.0 && p < 1.0)) fail(op, "p must be in [0, 1), got " + std::to_string(p) + " for " + x.describe());
  if (p == 0.0) return x;
  k::DropoutDesc d;
  d.n = x.numel();
  d.p = static_cast<float>(p);
  d.scale = 1.0 / (1.0 - p);
  d.seed = seed;
  d.offset = offset;
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  dispatch_cpu_float(op, x, [&](auto t) {
    using T = decltype(t);
    k::cpu::dropout_apply<T>(d, x.data<T>(), y.data<T>());
  });
  if (any_requires_grad({&x})) {
    record(op, {&x}, {&y}, [d](const std::vector<Tensor>& g) {
      Tensor gx = Tensor::empty(g[0].shape(), g[0].dtype(), g[0].device());
      dispatch_cpu_float("dropout backward", g[0], [&](auto t) {
        using T = decltype(t);
        k::cpu::dropout_apply<T>(d, g[0].data<T>(), gx.data<T>());
      });
      return std::vector<Tensor>{gx};
    });
  }
  return y;
}

Tensor mse_loss(const Tensor& pred, const Tensor& target, const Tensor& weight) {
  const char* op = "mse_loss";
  check_defined(op, pred, "pred");
  check_defined(op, target, "target");
  check_same(op, {&pred, &target, &weight});
  if (pred.shape() != target.shape())
    fail(op, "pred and target differ in shape: " + pred.describe() + " and " + target.describe());
  if (pred.ndim() < 1 || pred.numel() == 0) fail(op, "pred must have a batch dim and elements, got " + pred.describe());
  k::MseDesc d{pred.dim(0), pred.numel() / pred.dim(0)};
  if (weight.defined() && weight.shape() != Shape{d.batch})
    fail(op, "weight must be [N] = [" + std::to_string(d.batch) + "] for pred " + pred.describe() + ", got " +
                 weight.describe());
  Tensor loss = Tensor::empty({}, pred.dtype(), pred.device());
  const double inv_numel = 1.0 / static_cast<double>(pred.numel());
  dispatch_cpu_float(op, pred, [&](auto t) {
    using T = decltype(t);
    const T* w = weight.defined() ? weight.data<T>() : nullptr;
    double total = k::cpu::mse_weighted_sum<T>(d, pred.data<T>(), target.data<T>(), w);
    loss.data<T>()[0] = static_cast<T>(total * inv_numel);
  });
  if (any_requires_grad({&pred})) {
    Tensor sp = pred.detach(), st = target.detach(), sw = weight.defined() ? weight.detach() : Tensor();
    record(op, {&pred}, {&loss}, [d, sp, st, sw, inv_numel](const std::vector<Tensor>& g) {
      Tensor gp = Tensor::empty(sp.shape(), sp.dtype(), sp.device());
      dispatch_cpu_float("mse_loss backward", sp, [&](auto t) {
        using T = decltype(t);
        double coef = 2.0 * inv_numel * static_cast<double>(g[0].data<T>()[0]);
        k::cpu::mse_backward<T>(d, coef, sp.data<T>(), st.data<T>(), sw.defined() ? sw.data<T>() : nullptr,
                                gp.data<T>());
      });
      return std::vector<Tensor>{gp};
    });
  }
  return loss;
}

}  // namespace diffuse::ops
