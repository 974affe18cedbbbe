// Element-wise ops and reductions with their backward nodes (kernels/elementwise.h). Each op takes
// the CUDA launcher for a CUDA f32 tensor (nn/cuda_dispatch.h) and the CPU twin otherwise.
#include "kernels/elementwise.h"

#include "nn/autograd.h"
#include "nn/cuda_dispatch.h"
#include "nn/op_checks.h"
#include "nn/ops.h"

namespace diffuse::ops {

using namespace detail;
namespace k = diffuse::kernels;

namespace {

Tensor binary_raw(k::BinaryOp op, const char* name, const Tensor& a, const Tensor& b) {
  check_defined(name, a, "a");
  check_defined(name, b, "b");
  check_same(name, {&a, &b});
  k::BroadcastDesc d = k::make_broadcast(a.shape(), b.shape(), name);
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  if (on_cuda(name, a, [&] {
        k::cuda::binary(op, d, a.data<float>(), b.data<float>(), out.data<float>(), current_stream());
      }))
    return out;
  dispatch_cpu_float(name, a, [&](auto t) {
    using T = decltype(t);
    k::cpu::binary<T>(op, d, a.data<T>(), b.data<T>(), out.data<T>());
  });
  return out;
}

// Sums g (a-shaped) down to b's shape, multiplied element-wise by w (a-shaped) when defined.
Tensor reduce_to(const Tensor& g, const Tensor& w, const Shape& b_shape) {
  k::BroadcastDesc d = k::make_broadcast(g.shape(), b_shape, "reduce");
  Tensor out = Tensor::empty(b_shape, g.dtype(), g.device());
  if (on_cuda("reduce", g, [&] {
        Tensor ws = device_scratch(k::cuda::reduce_to_broadcast_workspace(d));
        k::cuda::reduce_to_broadcast(d, g.data<float>(), w.defined() ? w.data<float>() : nullptr, out.data<float>(),
                                     scratch_ptr<float>(ws), current_stream());
      }))
    return out;
  dispatch_cpu_float("reduce", g, [&](auto t) {
    using T = decltype(t);
    k::cpu::reduce_to_broadcast<T>(d, g.data<T>(), w.defined() ? w.data<T>() : nullptr, out.data<T>());
  });
  return out;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary_raw(k::BinaryOp::add, "add", a, b);
  if (any_requires_grad({&a, &b})) {
    Shape bs = b.shape();
    record("add", {&a, &b}, {&out}, [bs](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{g[0], reduce_to(g[0], Tensor(), bs)};
    });
  }
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary_raw(k::BinaryOp::sub, "sub", a, b);
  if (any_requires_grad({&a, &b})) {
    Shape bs = b.shape();
    record("sub", {&a, &b}, {&out}, [bs](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{g[0], scale(reduce_to(g[0], Tensor(), bs), -1.0)};
    });
  }
  return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary_raw(k::BinaryOp::mul, "mul", a, b);
  if (any_requires_grad({&a, &b})) {
    Tensor sa = a.detach(), sb = b.detach();
    bool need_a = a.requires_grad(), need_b = b.requires_grad();
    record("mul", {&a, &b}, {&out}, [sa, sb, need_a, need_b](const std::vector<Tensor>& g) {
      Tensor ga = need_a ? binary_raw(k::BinaryOp::mul, "mul", g[0], sb) : Tensor();
      Tensor gb = need_b ? reduce_to(g[0], sa, sb.shape()) : Tensor();
      return std::vector<Tensor>{ga, gb};
    });
  }
  return out;
}

Tensor scale(const Tensor& a, double s) {
  check_defined("scale", a, "a");
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  if (!on_cuda("scale", a, [&] {
        k::cuda::scale(a.numel(), static_cast<float>(s), a.data<float>(), out.data<float>(), current_stream());
      }))
    dispatch_cpu_float("scale", a, [&](auto t) {
      using T = decltype(t);
      k::cpu::scale<T>(a.numel(), static_cast<T>(s), a.data<T>(), out.data<T>());
    });
  if (any_requires_grad({&a}))
    record("scale", {&a}, {&out}, [s](const std::vector<Tensor>& g) { return std::vector<Tensor>{scale(g[0], s)}; });
  return out;
}

Tensor silu(const Tensor& x) {
  check_defined("silu", x, "x");
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (!on_cuda("silu", x, [&] { k::cuda::silu_forward(x.numel(), x.data<float>(), y.data<float>(), current_stream()); }))
    dispatch_cpu_float("silu", x, [&](auto t) {
      using T = decltype(t);
      k::cpu::silu_forward<T>(x.numel(), x.data<T>(), y.data<T>());
    });
  if (any_requires_grad({&x})) {
    Tensor sx = x.detach();
    record("silu", {&x}, {&y}, [sx](const std::vector<Tensor>& g) {
      Tensor gx = Tensor::empty(sx.shape(), sx.dtype(), sx.device());
      if (!on_cuda("silu backward", sx, [&] {
            k::cuda::silu_backward(sx.numel(), sx.data<float>(), g[0].data<float>(), gx.data<float>(),
                                   current_stream());
          }))
        dispatch_cpu_float("silu backward", sx, [&](auto t) {
          using T = decltype(t);
          k::cpu::silu_backward<T>(sx.numel(), sx.data<T>(), g[0].data<T>(), gx.data<T>());
        });
      return std::vector<Tensor>{gx};
    });
  }
  return y;
}

Tensor reshape(const Tensor& x, const Shape& shape) {
  check_defined("reshape", x, "x");
  Tensor y = x.view(shape);
  if (any_requires_grad({&x})) {
    Shape xs = x.shape();
    record("reshape", {&x}, {&y}, [xs](const std::vector<Tensor>& g) { return std::vector<Tensor>{g[0].view(xs)}; });
  }
  return y;
}

Tensor sum(const Tensor& x) {
  check_defined("sum", x, "x");
  Tensor out = Tensor::empty({}, x.dtype(), x.device());
  if (!on_cuda("sum", x, [&] {
        Tensor ws = device_scratch(k::cuda::sum_workspace(x.numel()));
        k::cuda::sum(x.numel(), x.data<float>(), out.data<float>(), scratch_ptr<float>(ws), current_stream());
      }))
    dispatch_cpu_float("sum", x, [&](auto t) {
      using T = decltype(t);
      out.data<T>()[0] = k::cpu::sum<T>(x.numel(), x.data<T>());
    });
  if (any_requires_grad({&x})) {
    Shape xs = x.shape();
    record("sum", {&x}, {&out}, [xs](const std::vector<Tensor>& g) {
      Tensor gx = Tensor::empty(xs, g[0].dtype(), g[0].device());
      // On CUDA the upstream scalar is read where it lies, in device memory.
      if (!on_cuda("sum backward", gx, [&] {
            k::cuda::fill(gx.numel(), g[0].data<float>(), gx.data<float>(), current_stream());
          }))
        dispatch_cpu_float("sum backward", gx, [&](auto t) {
          using T = decltype(t);
          k::cpu::fill<T>(gx.numel(), g[0].data<T>()[0], gx.data<T>());
        });
      return std::vector<Tensor>{gx};
    });
  }
  return out;
}

Tensor mean(const Tensor& x) {
  check_defined("mean", x, "x");
  return scale(sum(x), x.numel() ? 1.0 / static_cast<double>(x.numel()) : 0.0);
}

}  // namespace diffuse::ops
