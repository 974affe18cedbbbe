// linear op (kernels/linear.h): x [..., in] · wᵀ + bias with w [out, in]. The leading dims of x
// are flattened into GEMM rows; the backward node keeps x and w. CUDA tensors go to cuBLAS /
// cuBLASLt (nn/cuda/blas.h), CPU tensors to OpenBLAS.
#include "kernels/linear.h"

#include "nn/autograd.h"
#include "nn/op_checks.h"
#include "nn/ops.h"

#if DIFFUSE_WITH_CUDA
#include "nn/cuda/blas.h"
#endif

namespace diffuse::ops {

using namespace detail;
namespace k = diffuse::kernels;

namespace {

void forward(const k::LinearDesc& d, const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y) {
  if (x.device() == Device::cuda) {
#if DIFFUSE_WITH_CUDA
    cuda::linear_forward(d, x, w, bias, y);
    return;
#else
    no_cuda_path("linear");
#endif
  }
  dispatch_cpu_float("linear", x, [&](auto t) {
    using T = decltype(t);
    k::cpu::linear_forward<T>(d, x.data<T>(), w.data<T>(), bias.defined() ? bias.data<T>() : nullptr, y.data<T>());
  });
}

// gx, gw, gb: undefined where not wanted.
void backward(const k::LinearDesc& d, const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor& gx,
              const Tensor& gw, const Tensor& gb) {
  if (x.device() == Device::cuda) {
#if DIFFUSE_WITH_CUDA
    cuda::linear_backward(d, x, w, dy, gx, gw, gb);
    return;
#else
    no_cuda_path("linear");
#endif
  }
  dispatch_cpu_float("linear", x, [&](auto t) {
    using T = decltype(t);
    k::cpu::linear_backward<T>(d, x.data<T>(), w.data<T>(), dy.data<T>(), gx.defined() ? gx.data<T>() : nullptr,
                               gw.defined() ? gw.data<T>() : nullptr, gb.defined() ? gb.data<T>() : nullptr);
  });
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  const char* op = "linear";
  check_defined(op, x, "x");
  check_defined(op, w, "w");
  check_same(op, {&x, &w, &bias});
  check_float(op, x);
  const std::string what = " (x " + x.describe() + ", w " + w.describe() + ", bias " +
                           (bias.defined() ? bias.describe() : "none") + ")";
  if (x.ndim() < 1) fail(op, "x must be [..., in]" + what);
  if (w.ndim() != 2) fail(op, "w must be [out, in]" + what);
  if (x.dim(-1) != w.dim(1))
    fail(op, "x has " + std::to_string(x.dim(-1)) + " features but w expects " + std::to_string(w.dim(1)) + what);
  if (bias.defined() && (bias.ndim() != 1 || bias.dim(0) != w.dim(0)))
    fail(op, "bias must be [" + std::to_string(w.dim(0)) + "]" + what);
  int64_t rows = 1;
  for (int i = 0; i + 1 < x.ndim(); ++i) rows *= x.dim(i);
  const k::LinearDesc d{rows, w.dim(1), w.dim(0)};
  Shape out_shape = x.shape();
  out_shape.back() = d.out;
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());
  forward(d, x, w, bias, y);
  if (any_requires_grad({&x, &w, &bias})) {
    Tensor sx = x.detach(), sw = w.detach();
    bool need_x = x.requires_grad(), need_w = w.requires_grad(), need_b = bias.defined() && bias.requires_grad();
    record(op, {&x, &w, &bias}, {&y}, [d, sx, sw, need_x, need_w, need_b](const std::vector<Tensor>& g) {
      Tensor gx = need_x ? Tensor::empty(sx.shape(), sx.dtype(), sx.device()) : Tensor();
      Tensor gw = need_w ? Tensor::empty(sw.shape(), sw.dtype(), sw.device()) : Tensor();
      Tensor gb = need_b ? Tensor::empty({d.out}, sx.dtype(), sx.device()) : Tensor();
      backward(d, sx, sw, g[0], gx, gw, gb);
      return std::vector<Tensor>{gx, gw, gb};
    });
  }
  return y;
}

}  // namespace diffuse::ops
