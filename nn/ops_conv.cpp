// conv2d op (kernels/conv2d.h): NHWC x, OHWI w, optional bias and residual, per-side padding.
// Checks name the op and every tensor's shape; the body after the descriptor (forward, backward node keeping x and
// w) is linear's too (nn/weighted_op.h). The backend (nn/dispatch.h) runs an implicit GEMM on the
// project's packed GEMM or Winograd on the CPU (f64: im2col + OpenBLAS; kernels/cpu/conv2d.cpp)
// and cuDNN on CUDA (kernels/cuda/conv2d.cpp).
#include "kernels/conv2d.h"

#include "nn/ops.h"
#include "nn/weighted_op.h"

namespace diffuse::ops {

using namespace detail;
namespace k = diffuse::kernels;

namespace {

k::Conv2dDesc conv_desc(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dOptions& opt) {
  const char* op = "conv2d";
  check_weighted(op, x, w, bias);
  auto what = [&] { return weighted_operands(x, w, bias); };  // built only on failure: no allocation per call
  if (x.ndim() != 4) fail(op, "x must be [N, H, W, Cin]" + what());
  if (w.ndim() != 4) fail(op, "w must be [Cout, kh, kw, Cin]" + what());
  if (x.dim(3) != w.dim(3)) fail(op, "x has " + std::to_string(x.dim(3)) + " channels but w expects " +
                                         std::to_string(w.dim(3)) + what());
  check_bias(op, x, w, bias);
  if (opt.stride < 1) fail(op, "stride must be >= 1, got " + std::to_string(opt.stride) + what());
  if (opt.pad_top < 0 || opt.pad_bottom < 0 || opt.pad_left < 0 || opt.pad_right < 0)
    fail(op, "padding must be >= 0" + what());
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
  if (d.kh < 1 || d.kw < 1) fail(op, "kernel must be at least 1x1" + what());
  if (d.h + d.pad_top + d.pad_bottom < d.kh || d.w + d.pad_left + d.pad_right < d.kw)
    fail(op, "the " + std::to_string(d.kh) + "x" + std::to_string(d.kw) + " kernel is larger than the padded input" +
                 what());
  return d;
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dOptions& opt, const Tensor& residual) {
  const k::Conv2dDesc d = conv_desc(x, w, bias, opt);
  return run_weighted<k::Conv2dDesc>("conv2d", d, {d.n, d.out_h(), d.out_w(), d.cout}, x, w, bias, residual,
                                     &dispatch::Backend::conv2d_forward, &dispatch::Backend::conv2d_backward);
}

}  // namespace diffuse::ops
