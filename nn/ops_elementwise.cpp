// Element-wise ops and reductions with their backward nodes (kernels/elementwise.h). Each kernel
// call goes through the device seam (nn/dispatch.h) to the tensor's backend. On CUDA, add, sub,
// mul, scale and SiLU also take bf16 storage (bf16 autocast's activations, nn/layers.h); the
// reductions (sum, a broadcast's backward) are f32 only, and a same-shape backward needs none.
#include "kernels/elementwise.h"

#include "nn/autograd.h"
#include "nn/dispatch.h"
#include "nn/op_checks.h"
#include "nn/ops.h"

namespace diffuse::ops {

using namespace detail;
using dispatch::backend_for;
namespace k = diffuse::kernels;

namespace {

constexpr auto kBf16Too = dispatch::DeviceDTypes::f32_bf16;
thread_local uint64_t t_casts_run = 0;

// kernels::make_broadcast takes its dims as std::vectors; this thread's pair, kept at
// Shape::kMaxRank capacity, carries shapes there without a heap allocation per op.
k::BroadcastDesc broadcast_of(const Shape& a, const Shape& b, const char* op) {
  thread_local std::vector<int64_t> a_dims(Shape::kMaxRank), b_dims(Shape::kMaxRank);
  a_dims.assign(a.begin(), a.end());
  b_dims.assign(b.begin(), b.end());
  return k::make_broadcast(a_dims, b_dims, op);
}

Tensor binary_raw(k::BinaryOp op, const char* name, const Tensor& a, const Tensor& b) {
  check_defined(name, a, "a");
  check_defined(name, b, "b");
  check_same(name, {&a, &b});
  k::BroadcastDesc d = broadcast_of(a.shape(), b.shape(), name);
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  backend_for(name, a, kBf16Too).binary(op, d, a, b, out);
  return out;
}

// Sums g (a-shaped) down to b's shape, multiplied element-wise by w (a-shaped) when defined. A bf16
// g of b's own shape (bf16 autocast's residual adds; the reduction kernels are f32 only) has
// nothing to sum: g itself, or g * w. g then goes to both inputs of an add, which is safe for
// activations; f32 keeps the copy, since two f32 leaves sharing one grad buffer would be scaled
// twice by an in-place gradient clip.
Tensor reduce_to(const Tensor& g, const Tensor& w, const Shape& b_shape) {
  if (g.dtype() == DType::bf16 && b_shape == g.shape())
    return w.defined() ? binary_raw(k::BinaryOp::mul, "mul", g, w) : g;
  k::BroadcastDesc d = broadcast_of(g.shape(), b_shape, "reduce");
  Tensor out = Tensor::empty(b_shape, g.dtype(), g.device());
  backend_for("reduce", g).reduce_to_broadcast(d, g, w, out);
  return out;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary_raw(k::BinaryOp::add, "add", a, b);
  if (any_requires_grad({&a, &b})) {
    Shape bs = b.shape();
    const bool need_b = b.requires_grad();
    record("add", {&a, &b}, {&out}, [bs, need_b](const TensorList& g) {
      return TensorList{g[0], need_b ? reduce_to(g[0], Tensor(), bs) : Tensor()};
    });
  }
  return out;
}

void add_in_place(const Tensor& a, const Tensor& b) {
  check_defined("add", a, "a");
  check_defined("add", b, "b");
  check_same("add", {&a, &b});
  if (a.shape() != b.shape()) fail("add", "in place needs one shape, got " + a.describe() + " and " + b.describe());
  // The CPU kernel goes element by element, each output read from the same index of a just
  // before, so out may be a. CUDA's takes a and out as __restrict__: there the sum goes to a new
  // buffer, copied back in stream order.
  if (a.device() == Device::cpu) {
    backend_for("add", a, kBf16Too).binary(k::BinaryOp::add, broadcast_of(a.shape(), b.shape(), "add"), a, b, a);
  } else {
    Tensor sum = binary_raw(k::BinaryOp::add, "add", a, b);
    Tensor target = a;
    target.copy_from(sum);
  }
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary_raw(k::BinaryOp::sub, "sub", a, b);
  if (any_requires_grad({&a, &b})) {
    Shape bs = b.shape();
    const bool need_b = b.requires_grad();
    record("sub", {&a, &b}, {&out}, [bs, need_b](const TensorList& g) {
      return TensorList{g[0], need_b ? scale(reduce_to(g[0], Tensor(), bs), -1.0) : Tensor()};
    });
  }
  return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary_raw(k::BinaryOp::mul, "mul", a, b);
  if (any_requires_grad({&a, &b})) {
    Tensor sa = a.detach(), sb = b.detach();
    bool need_a = a.requires_grad(), need_b = b.requires_grad();
    record("mul", {&a, &b}, {&out}, [sa, sb, need_a, need_b](const TensorList& g) {
      Tensor ga = need_a ? binary_raw(k::BinaryOp::mul, "mul", g[0], sb) : Tensor();
      Tensor gb = need_b ? reduce_to(g[0], sa, sb.shape()) : Tensor();
      return TensorList{ga, gb};
    });
  }
  return out;
}

Tensor scale(const Tensor& a, double s) {
  check_defined("scale", a, "a");
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  backend_for("scale", a, kBf16Too).scale(s, a, out);
  if (any_requires_grad({&a}))
    record("scale", {&a}, {&out}, [s](const TensorList& g) { return TensorList{scale(g[0], s)}; });
  return out;
}

Tensor silu(const Tensor& x) {
  check_defined("silu", x, "x");
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  backend_for("silu", x, kBf16Too).silu_forward(x, y);
  if (any_requires_grad({&x})) {
    Tensor sx = x.detach();
    record("silu", {&x}, {&y}, [sx](const TensorList& g) {
      Tensor gx = Tensor::empty(sx.shape(), sx.dtype(), sx.device());
      backend_for("silu backward", sx, kBf16Too).silu_backward(sx, cast(g[0], sx.dtype()), gx);
      return TensorList{gx};
    });
  }
  return y;
}

Tensor reshape(const Tensor& x, const Shape& shape) {
  check_defined("reshape", x, "x");
  Tensor y = x.view(shape);
  if (any_requires_grad({&x})) {
    Shape xs = x.shape();
    record("reshape", {&x}, {&y}, [xs](const TensorList& g) { return TensorList{g[0].view(xs)}; });
  }
  return y;
}

Tensor sum(const Tensor& x) {
  check_defined("sum", x, "x");
  Tensor out = Tensor::empty({}, x.dtype(), x.device());
  backend_for("sum", x).sum(x, out);
  if (any_requires_grad({&x})) {
    Shape xs = x.shape();
    record("sum", {&x}, {&out}, [xs](const TensorList& g) {
      Tensor gx = Tensor::empty(xs, g[0].dtype(), g[0].device());
      // The upstream scalar is read where it lies (device memory for a CUDA tensor).
      backend_for("sum backward", gx).fill(g[0], gx);
      return TensorList{gx};
    });
  }
  return out;
}

uint64_t casts_run() { return t_casts_run; }

Tensor cast(const Tensor& x, DType dtype) {
  check_defined("cast", x, "x");
  auto storage = [](DType t) { return t == DType::f32 || t == DType::bf16 || t == DType::f64; };
  if (!storage(dtype) || !storage(x.dtype()))
    fail("cast", "converts between f32, bf16 and f64, not " + x.describe() + " to " + dtype_name(dtype));
  if (x.dtype() == dtype) return x;
  ++t_casts_run;
  Tensor y = Tensor::empty(x.shape(), dtype, x.device());
  backend_for("cast", x.device()).cast(x, y);
  if (any_requires_grad({&x})) {
    const DType from = x.dtype();
    record("cast", {&x}, {&y}, [from](const TensorList& g) { return TensorList{cast(g[0], from)}; });
  }
  return y;
}

Tensor mean(const Tensor& x) {
  check_defined("mean", x, "x");
  return scale(sum(x), x.numel() ? 1.0 / static_cast<double>(x.numel()) : 0.0);
}

}  // namespace diffuse::ops
