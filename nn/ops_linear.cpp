// linear op (kernels/linear.h): x [..., in] · wᵀ + bias (+ residual) with w [out, in]. The
// leading dims of x are flattened into GEMM rows; the body after the descriptor (forward, backward node keeping x
// and w) is conv2d's too (nn/weighted_op.h). The backend (nn/dispatch.h) runs the project's packed
// GEMM on the CPU (f64: OpenBLAS; kernels/gemm.h) and cuBLAS / cuBLASLt on CUDA (kernels/cuda/linear.cpp).
#include "kernels/linear.h"

#include "nn/ops.h"
#include "nn/weighted_op.h"

namespace diffuse::ops {

using namespace detail;
namespace k = diffuse::kernels;

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& residual) {
  const char* op = "linear";
  check_weighted(op, x, w, bias);
  auto what = [&] { return weighted_operands(x, w, bias); };  // built only on failure: no allocation per call
  if (x.ndim() < 1) fail(op, "x must be [..., in]" + what());
  if (w.ndim() != 2) fail(op, "w must be [out, in]" + what());
  if (x.dim(-1) != w.dim(1))
    fail(op, "x has " + std::to_string(x.dim(-1)) + " features but w expects " + std::to_string(w.dim(1)) + what());
  check_bias(op, x, w, bias);
  int64_t rows = 1;
  for (int i = 0; i + 1 < x.ndim(); ++i) rows *= x.dim(i);
  const k::LinearDesc d{rows, w.dim(1), w.dim(0)};
  Shape y_shape = x.shape();
  y_shape.back() = d.out;
  return run_weighted<k::LinearDesc>(op, d, y_shape, x, w, bias, residual, &dispatch::Backend::linear_forward,
                                     &dispatch::Backend::linear_backward);
}

}  // namespace diffuse::ops
