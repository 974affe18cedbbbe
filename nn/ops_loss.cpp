// Dropout and the MSE training loss (kernels/loss.h). Dropout's backward regenerates the Philox
// mask from (seed, offset) rather than saving it; mse_loss sends a gradient to pred only. CUDA f32
// tensors take kernels/cuda/loss.cu (the same mask; a deterministic two-stage loss sum whose
// backward reads the upstream grad on the device), CPU tensors the CPU twins.
#include "kernels/loss.h"

#include "nn/autograd.h"
#include "nn/cuda_dispatch.h"
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
  if (!on_cuda(op, x, [&] { k::cuda::dropout_apply(d, x.data<float>(), y.data<float>(), current_stream()); }))
    dispatch_cpu_float(op, x, [&](auto t) {
      using T = decltype(t);
      k::cpu::dropout_apply<T>(d, x.data<T>(), y.data<T>());
    });
  if (any_requires_grad({&x})) {
    record(op, {&x}, {&y}, [d](const std::vector<Tensor>& g) {
      Tensor gx = Tensor::empty(g[0].shape(), g[0].dtype(), g[0].device());
      if (!on_cuda("dropout backward", g[0], [&] {
            k::cuda::dropout_apply(d, g[0].data<float>(), gx.data<float>(), current_stream());
          }))
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
  if (!on_cuda(op, pred, [&] {
        Tensor ws = device_scratch(k::cuda::mse_loss_workspace(d), DType::f64);
        k::cuda::mse_loss(d, inv_numel, pred.data<float>(), target.data<float>(),
                          weight.defined() ? weight.data<float>() : nullptr, loss.data<float>(), scratch_ptr<double>(ws),
                          current_stream());
      }))
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
      if (on_cuda("mse_loss backward", sp, [&] {
            k::cuda::mse_backward(d, 2.0 * inv_numel, g[0].data<float>(), sp.data<float>(), st.data<float>(),
                                  sw.defined() ? sw.data<float>() : nullptr, gp.data<float>(), current_stream());
          }))
        return std::vector<Tensor>{gp};
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
