// See weighted_op.h.
#include "nn/weighted_op.h"

namespace diffuse::ops::detail {

std::string weighted_operands(const Tensor& x, const Tensor& w, const Tensor& bias) {
  return " (x " + x.describe() + ", w " + w.describe() + ", bias " + (bias.defined() ? bias.describe() : "none") + ")";
}

void check_weighted(const char* op, const Tensor& x, const Tensor& w, const Tensor& bias) {
  check_defined(op, x, "x");
  check_defined(op, w, "w");
  check_same(op, {&x, &w, &bias});
  check_float(op, x);
}

void check_bias(const char* op, const Tensor& x, const Tensor& w, const Tensor& bias) {
  if (bias.defined() && (bias.ndim() != 1 || bias.dim(0) != w.dim(0)))
    fail(op, "bias must be [" + std::to_string(w.dim(0)) + "]" + weighted_operands(x, w, bias));
}

void check_residual(const char* op, const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& residual,
                    const Shape& y_shape) {
  if (!residual.defined()) return;
  check_same(op, {&x, &residual});
  if (residual.shape() != y_shape)
    fail(op, "residual " + residual.describe() + " must have the output's shape " + shape_str(y_shape) +
                 weighted_operands(x, w, bias));
}

}  // namespace diffuse::ops::detail
