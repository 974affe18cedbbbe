// Differentiable shape ops (kernels/shape.h): concat along the last dim, nearest 2x upsampling.
// Both backward passes are kernels of their own (a split; a 2x2 sum), not compositions, reached
// through the device seam (nn/dispatch.h). On CUDA both take bf16 storage as well as f32.
#include "kernels/shape.h"

#include "nn/autograd.h"
#include "nn/dispatch.h"
#include "nn/op_checks.h"
#include "nn/ops.h"

namespace diffuse::ops {

using namespace detail;
using dispatch::backend_for;
namespace k = diffuse::kernels;
constexpr auto kBf16Too = dispatch::DeviceDTypes::f32_bf16;

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
  backend_for(op, a, kBf16Too).concat_last(d, a, b, out);
  if (any_requires_grad({&a, &b})) {
    bool need_a = a.requires_grad(), need_b = b.requires_grad();
    Shape as = a.shape(), bs = b.shape();
    record(op, {&a, &b}, {&out}, [d, as, bs, need_a, need_b](const TensorList& g) {
      Tensor ga = need_a ? Tensor::empty(as, g[0].dtype(), g[0].device()) : Tensor();
      Tensor gb = need_b ? Tensor::empty(bs, g[0].dtype(), g[0].device()) : Tensor();
      backend_for("concat_channels backward", g[0], kBf16Too).split_last(d, g[0], ga, gb);
      return TensorList{ga, gb};
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
  backend_for(op, x, kBf16Too).upsample_nearest2x(d, x, y);
  if (any_requires_grad({&x})) {
    Shape xs = x.shape();
    record(op, {&x}, {&y}, [d, xs](const TensorList& g) {
      Tensor gx = Tensor::empty(xs, g[0].dtype(), g[0].device());
      backend_for("upsample_nearest2x backward", g[0], kBf16Too).upsample_nearest2x_backward(d, g[0], gx);
      return TensorList{gx};
    });
  }
  return y;
}

}  // namespace diffuse::ops
