// What the GEMM-shaped layer ops (conv2d in ops_conv.cpp, linear in ops_linear.cpp) share: the
// operand checks around x, w and the optional bias [Cout], and the op body after the descriptor
// is built: allocate y, run the backend's forward, and record a backward node that keeps x and w
// and asks the backend for only the grads needed. The two ops differ only in their descriptor
// and the backend entries they name.
#pragma once
#include <string>
#include <vector>

#include "nn/autograd.h"
#include "nn/dispatch.h"
#include "nn/op_checks.h"

namespace diffuse::ops::detail {

// " (x <describe>, w <describe>, bias <describe or none>)": the tail of every error message.
std::string weighted_operands(const Tensor& x, const Tensor& w, const Tensor& bias);
// x and w defined, x, w and bias on one device and dtype, a float dtype.
void check_weighted(const char* op, const Tensor& x, const Tensor& w, const Tensor& bias);
// bias undefined, or [Cout] with Cout = w.dim(0).
void check_bias(const char* op, const Tensor& x, const Tensor& w, const Tensor& bias);
// residual undefined, or of y's shape on x's device and dtype.
void check_residual(const char* op, const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& residual,
                    const Shape& y_shape);

template <typename Desc>
using WeightedForward = void (dispatch::Backend::*)(const Desc&, const Tensor& x, const Tensor& w, const Tensor& bias,
                                                    const Tensor& residual, const Tensor& y) const;
template <typename Desc>
using WeightedBackward = void (dispatch::Backend::*)(const Desc&, const Tensor& x, const Tensor& w, const Tensor& dy,
                                                     const Tensor& dx, const Tensor& dw, const Tensor& dbias) const;

// y = forward(x, w, bias) + residual of shape y_shape (residual may be undefined; the backend adds
// it in the same output pass), with a backward node when any operand requires grad. The
// residual's grad is dy itself (no copy, no kernel). Both directions take f32 or bf16 storage on
// CUDA (cuDNN, cuBLAS).
template <typename Desc>
Tensor run_weighted(const char* op, const Desc& d, const Shape& y_shape, const Tensor& x, const Tensor& w,
                    const Tensor& bias, const Tensor& residual, WeightedForward<Desc> forward,
                    WeightedBackward<Desc> backward) {
  check_residual(op, x, w, bias, residual, y_shape);
  Tensor y = Tensor::empty(y_shape, x.dtype(), x.device());
  (dispatch::backend_for(op, x, dispatch::DeviceDTypes::f32_bf16).*forward)(d, x, w, bias, residual, y);
  if (any_requires_grad({&x, &w, &bias, &residual})) {
    Tensor sx = x.detach(), sw = w.detach();
    const int64_t bias_len = w.dim(0);
    bool need_x = x.requires_grad(), need_w = w.requires_grad(), need_b = bias.defined() && bias.requires_grad();
    record(op, {&x, &w, &bias, &residual}, {&y},
           [op, d, sx, sw, bias_len, need_x, need_w, need_b, backward](const TensorList& g) {
             Tensor gx = need_x ? Tensor::empty(sx.shape(), sx.dtype(), sx.device()) : Tensor();
             Tensor gw = need_w ? Tensor::empty(sw.shape(), sw.dtype(), sw.device()) : Tensor();
             Tensor gb = need_b ? Tensor::empty({bias_len}, sx.dtype(), sx.device()) : Tensor();
             (dispatch::backend_for(op, sx, dispatch::DeviceDTypes::f32_bf16).*backward)(d, sx, sw, g[0], gx, gw, gb);
             return TensorList{gx, gw, gb, g[0]};
           });
  }
  return y;
}

}  // namespace diffuse::ops::detail
