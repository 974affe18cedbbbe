// conv2d op (kernels/conv2d.h): NHWC x, OHWI w, optional bias, per-side padding. Checks name the
// op and every tensor's shape; the backward node keeps x and w and asks for only the grads needed.
// CUDA tensors go to cuDNN (nn/cuda/conv.h), CPU tensors to im2col + OpenBLAS.
#include "kernels/conv2d.h"

#include "nn/autograd.h"
#include "nn/op_checks.h"
#include "nn/ops.h"

#if DIFFUSE_WITH_CUDA
#include "nn/cuda/conv.h"
#endif

namespace diffuse::ops {

using namespace detail;
namespace k = diffuse::kernels;

namespace {

std::string operands(const Tensor& x, const Tensor& w, const Tensor& bias) {
  return " (x " + x.describe() + ", w " + w.describe() + ", bias " + (bias.defined() ? bias.describe() : "none") + ")";
}

k::Conv2dDesc conv_desc(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dOptions& opt) {
  const char* op = "conv2d";
  check_defined(op, x, "x");
  check_defined(op, w, "w");
  check_same(op, {&x, &w, &bias});
  check_float(op, x);
  const std::string what = operands(x, w, bias);
  if (x.ndim() != 4) fail(op, "x must be [N, H, W, Cin]" + what);
  if (w.ndim() != 4) fail(op, "w must be [Cout, kh, kw, Cin]" + what);
  if (x.dim(3) != w.dim(3)) fail(op, "x has " + std::to_string(x.dim(3)) + " channels but w expects " +
                                         std::to_string(w.dim(3)) + what);
  if (bias.defined() && (bias.ndim() != 1 || bias.dim(0) != w.dim(0)))
    fail(op, "bias must be [" + std::to_string(w.dim(0)) + "]" + what);
  if (opt.stride < 1) fail(op, "stride must be >= 1, got " + std::to_string(opt.stride) + what);
  if (opt.pad_top < 0 || opt.pad_bottom < 0 || opt.pad_left < 0 || opt.pad_right < 0)
    fail(op, "padding must be >= 0" + what);
  k::Conv2dDesc d;
  d.n = x.dim(0);
  d.h = x.dim(1);
  d.w = x.dim(2);
  d.cin = x.dim(3);
  d.cout = w.dim(0);
  d.kh = w.dim(1);
  d.kw = w.dim(2);
  d.stride = opt.stride;
  d.pad_top = opt.pad_top;
  d.pad_bottom = opt.pad_bottom;
  d.pad_left = opt.pad_left;
  d.pad_right = opt.pad_right;
  if (d.kh < 1 || d.kw < 1) fail(op, "kernel must be at least 1x1" + what);
  if (d.h + d.pad_top + d.pad_bottom < d.kh || d.w + d.pad_left + d.pad_right < d.kw)
    fail(op, "the " + std::to_string(d.kh) + "x" + std::to_string(d.kw) + " kernel is larger than the padded input" +
                 what);
  return d;
}

void forward(const k::Conv2dDesc& d, const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y) {
  if (x.device() == Device::cuda) {
#if DIFFUSE_WITH_CUDA
    cuda::conv2d_forward(d, x, w, bias, y);
    return;
#else
    no_cuda_path("conv2d");
#endif
  }
  dispatch_cpu_float("conv2d", x, [&](auto t) {
    using T = decltype(t);
    k::cpu::conv2d_forward<T>(d, x.data<T>(), w.data<T>(), bias.defined() ? bias.data<T>() : nullptr, y.data<T>());
  });
}

// gx, gw, gb: undefined where not wanted.
void backward(const k::Conv2dDesc& d, const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor& gx,
              const Tensor& gw, const Tensor& gb) {
  if (x.device() == Device::cuda) {
#if DIFFUSE_WITH_CUDA
    cuda::conv2d_backward(d, x, w, dy, gx, gw, gb);
    return;
#else
    no_cuda_path("conv2d");
#endif
  }
  dispatch_cpu_float("conv2d", x, [&](auto t) {
    using T = decltype(t);
    k::cpu::conv2d_backward<T>(d, x.data<T>(), w.data<T>(), dy.data<T>(), gx.defined() ? gx.data<T>() : nullptr,
                               gw.defined() ? gw.data<T>() : nullptr, gb.defined() ? gb.data<T>() : nullptr);
  });
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dOptions& opt) {
  const k::Conv2dDesc d = conv_desc(x, w, bias, opt);
  Tensor y = Tensor::empty({d.n, d.out_h(), d.out_w(), d.cout}, x.dtype(), x.device());
  forward(d, x, w, bias, y);
  if (any_requires_grad({&x, &w, &bias})) {
    Tensor sx = x.detach(), sw = w.detach();
    bool need_x = x.requires_grad(), need_w = w.requires_grad(), need_b = bias.defined() && bias.requires_grad();
    record("conv2d", {&x, &w, &bias}, {&y}, [d, sx, sw, need_x, need_w, need_b](const std::vector<Tensor>& g) {
      Tensor gx = need_x ? Tensor::empty(sx.shape(), sx.dtype(), sx.device()) : Tensor();
      Tensor gw = need_w ? Tensor::empty(sw.shape(), sw.dtype(), sw.device()) : Tensor();
      Tensor gb = need_b ? Tensor::empty({d.cout}, sx.dtype(), sx.device()) : Tensor();
      backward(d, sx, sw, g[0], gx, gw, gb);
      return std::vector<Tensor>{gx, gw, gb};
    });
  }
  return y;
}

}  // namespace diffuse::ops
