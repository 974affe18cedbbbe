// Differentiable shape ops (kernels/shape.h): concat along the last dim, nearest 2x upsampling.
// Both backward passes are kernels of their own (a split; a 2x2 sum), not compositions. CUDA f32
// tensors take the kernels/cuda/shape.cu launchers, CPU tensors the CPU twins.
#include "kernels/shape.h"

#include "nn/autograd.h"
#include "nn/cuda_dispatch.h"
#include "nn/op_checks.h"
#include "nn/ops.h"

namespace diffuse::ops {

using namespace detail;
namespace k = diffuse::kernels;

Tensor concat_channels(const Tensor& a, const Tensor& b) {
  const char* op = "concat_channels";
  check_defined(op, a, "a");
  check_defined(op, b, "b");
  check_same(op, {&a, &b});
  bool leading_match = a.ndim() >= 1 && a.ndim() == b.ndim();
  for (int i = 0; leading_match && i + 1 < a.ndim(); ++i) leading_match = a.dim(i) == b.dim(i);
  if (!leading_match)
    fail(op, "inputs must agree in every dim but the last, got " + a.describe() + " and " + b.describe());
  k::ConcatDesc d;
  d.ca = a.dim(-1);
  d.cb = b.dim(-1);
  d.rows = shape_numel(Shape(a.shape().begin(), a.shape().end() - 1));
  Shape out_shape = a.shape();
  out_shape.back() = d.ca + d.cb;
  Tensor out = Tensor::empty(out_shape, a.dtype(), a.device());
  if (!on_cuda(op, a, [&] {
        k::cuda::concat_last(d, a.data<float>(), b.data<float>(), out.data<float>(), current_stream());
      }))
    dispatch_cpu_float(op, a, [&](auto t) {
      using T = decltype(t);
      k::cpu::concat_last<T>(d, a.data<T>(), b.data<T>(), out.data<T>());
    });
  if (any_requires_grad({&a, &b})) {
    bool need_a = a.requires_grad(), need_b = b.requires_grad();
    Shape as = a.shape(), bs = b.shape();
    record(op, {&a, &b}, {&out}, [d, as, bs, need_a, need_b](const std::vector<Tensor>& g) {
      Tensor ga = need_a ? Tensor::empty(as, g[0].dtype(), g[0].device()) : Tensor();
      Tensor gb = need_b ? Tensor::empty(bs, g[0].dtype(), g[0].device()) : Tensor();
      if (!on_cuda("concat_channels backward", g[0], [&] {
            k::cuda::split_last(d, g[0].data<float>(), need_a ? ga.data<float>() : nullptr,
                                need_b ? gb.data<float>() : nullptr, current_stream());
          }))
        dispatch_cpu_float("concat_channels backward", g[0], [&](auto t) {
          using T = decltype(t);
          k::cpu::split_last<T>(d, g[0].data<T>(), need_a ? ga.data<T>() : nullptr, need_b ? gb.data<T>() : nullptr);
        });
      return std::vector<Tensor>{ga, gb};
    });
  }
  return out;
}

Tensor upsample_nearest2x(const Tensor& x) {
  const char* op = "upsample_nearest2x";
  check_defined(op, x, "x");
  check_rank(op, x, 4, "x (NHWC)");
  k::Upsample2xDesc d{x.dim(0), x.dim(1), x.dim(2), x.dim(3)};
  Tensor y = Tensor::empty({d.n, 2 * d.h, 2 * d.w, d.c}, x.dtype(), x.device());
  if (!on_cuda(op, x, [&] { k::cuda::upsample_nearest2x(d, x.data<float>(), y.data<float>(), current_stream()); }))
    dispatch_cpu_float(op, x, [&](auto t) {
      using T = decltype(t);
      k::cpu::upsample_nearest2x<T>(d, x.data<T>(), y.data<T>());
    });
  if (any_requires_grad({&x})) {
    Shape xs = x.shape();
    record(op, {&x}, {&y}, [d, xs](const std::vector<Tensor>& g) {
      Tensor gx = Tensor::empty(xs, g[0].dtype(), g[0].device());
      if (!on_cuda("upsample_nearest2x backward", g[0], [&] {
            k::cuda::upsample_nearest2x_backward(d, g[0].data<float>(), gx.data<float>(), current_stream());
          }))
        dispatch_cpu_float("upsample_nearest2x backward", g[0], [&](auto t) {
          using T = decltype(t);
          k::cpu::upsample_nearest2x_backward<T>(d, g[0].data<T>(), gx.data<T>());
        });
      return std::vector<Tensor>{gx};
    });
  }
  return y;
}

}  // namespace diffuse::ops
