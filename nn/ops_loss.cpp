// Dropout and the MSE training loss (kernels/loss.h). Dropout's backward regenerates the Philox
// mask from (seed, offset) rather than saving it; mse_loss sends a gradient to pred only. The
// kernels are reached through the device seam (nn/dispatch.h); on CUDA (kernels/cuda/loss.cu) the
// mask is the same, the loss sum a deterministic two-stage one, and its backward reads the
// upstream grad on the device.
#include "kernels/loss.h"

#include "nn/autograd.h"
#include "nn/dispatch.h"
#include "nn/op_checks.h"
#include "nn/ops.h"

namespace diffuse::ops {

using namespace detail;
using dispatch::backend_for;
namespace k = diffuse::kernels;

Tensor dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, const Tensor& base) {
  const char* op = "dropout";
  check_defined(op, x, "x");
  if (!(p >= 0.0 && p < 1.0)) fail(op, "p must be in [0, 1), got " + std::to_string(p) + " for " + x.describe());
  if (p == 0.0) return x;
  if (base.defined() && (base.dtype() != DType::i64 || base.numel() != 1 || base.device() != x.device()))
    fail(op, "base must be i64[1] on x's device, got " + base.describe() + " for " + x.describe());
  k::DropoutDesc d;
  d.n = x.numel();
  d.p = static_cast<float>(p);
  d.scale = 1.0 / (1.0 - p);
  d.seed = seed;
  d.offset = offset;
  d.base = base.defined() ? base.data<int64_t>() : nullptr;
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  backend_for(op, x, dispatch::DeviceDTypes::f32_bf16).dropout_apply(d, x, y);
  if (any_requires_grad({&x})) {
    // `base` is kept alive for the backward, which reads the same position from it.
    record(op, {&x}, {&y}, [d, base](const TensorList& g) {
      Tensor gx = Tensor::empty(g[0].shape(), g[0].dtype(), g[0].device());
      backend_for("dropout backward", g[0], dispatch::DeviceDTypes::f32_bf16).dropout_apply(d, g[0], gx);
      return TensorList{gx};
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
  backend_for(op, pred).mse_loss(d, inv_numel, pred, target, weight, loss);
  if (any_requires_grad({&pred})) {
    Tensor sp = pred.detach(), st = target.detach(), sw = weight.defined() ? weight.detach() : Tensor();
    record(op, {&pred}, {&loss}, [d, sp, st, sw, inv_numel](const TensorList& g) {
      Tensor gp = Tensor::empty(sp.shape(), sp.dtype(), sp.device());
      backend_for("mse_loss backward", sp).mse_backward(d, 2.0 * inv_numel, g[0], sp, st, sw, gp);
      return TensorList{gp};
    });
  }
  return loss;
}

}  // namespace diffuse::ops
