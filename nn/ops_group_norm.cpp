// group_norm op (kernels/group_norm.h) over x [N, ..., C] with optional fused add_nc [N, C] and
// SiLU. The statistics are saved in f64 [N, groups] on x's device (CPU and CUDA kernels alike);
// the backward node recomputes the normalised values from x (and add_nc) rather than keeping
// another activation-sized tensor. The kernels are reached through the device seam
// (nn/dispatch.h). On CUDA x may also be bf16 (bf16 autocast's activations): y and dx are then
// bf16, while gamma, beta, add_nc and their grads stay f32 (parameters and the time-embedding
// projection), as do the statistics.
#include "kernels/group_norm.h"

#include "nn/autograd.h"
#include "nn/dispatch.h"
#include "nn/op_checks.h"
#include "nn/ops.h"

namespace diffuse::ops {

using namespace detail;
using dispatch::backend_for;
namespace k = diffuse::kernels;

Tensor group_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, const GroupNormOptions& opt,
                  const Tensor& add_nc) {
  const char* op = "group_norm";
  check_defined(op, x, "x");
  check_defined(op, gamma, "gamma");
  check_defined(op, beta, "beta");
  check_same(op, {&gamma, &beta, &add_nc});
  check_float(op, x);
  if (x.device() != gamma.device() || (x.dtype() != gamma.dtype() && x.dtype() != DType::bf16) ||
      (x.dtype() == DType::bf16 && gamma.dtype() != DType::f32))
    fail(op, "x " + x.describe() + " and gamma " + gamma.describe() +
                 " must share a device and dtype (bf16 x takes f32 gamma, beta and add_nc)");
  auto what = [&] {  // built only on failure: no allocation per call
    return " (x " + x.describe() + ", gamma " + gamma.describe() + ", beta " + beta.describe() + ", add_nc " +
           (add_nc.defined() ? add_nc.describe() : "none") + ", groups " + std::to_string(opt.groups) + ")";
  };
  if (x.ndim() < 2) fail(op, "x must be [N, ..., C]" + what());
  const int64_t C = x.dim(-1);
  if (opt.groups < 1 || C % opt.groups != 0)
    fail(op, std::to_string(opt.groups) + " groups do not divide " + std::to_string(C) + " channels" + what());
  if (gamma.ndim() != 1 || gamma.dim(0) != C || beta.ndim() != 1 || beta.dim(0) != C)
    fail(op, "gamma and beta must be [" + std::to_string(C) + "]" + what());
  if (add_nc.defined() && (add_nc.ndim() != 2 || add_nc.dim(0) != x.dim(0) || add_nc.dim(1) != C))
    fail(op, "add_nc must be [" + std::to_string(x.dim(0)) + ", " + std::to_string(C) + "]" + what());
  if (!(opt.eps >= 0)) fail(op, "eps must be >= 0, got " + std::to_string(opt.eps) + what());

  k::GroupNormDesc d;
  d.n = x.dim(0);
  d.channels = C;
  d.spatial = 1;
  for (int i = 1; i + 1 < x.ndim(); ++i) d.spatial *= x.dim(i);
  d.groups = opt.groups;
  d.eps = opt.eps;
  d.silu = opt.silu;
  d.smem_limit_bytes = opt.cuda_smem_limit_bytes;

  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor mean = Tensor::empty({d.n, d.groups}, DType::f64, x.device());
  Tensor rstd = Tensor::empty({d.n, d.groups}, DType::f64, x.device());
  backend_for(op, x, dispatch::DeviceDTypes::f32_bf16).group_norm_forward(d, x, add_nc, gamma, beta, y, mean, rstd);
  if (any_requires_grad({&x, &gamma, &beta, &add_nc})) {
    Tensor sx = x.detach(), sg = gamma.detach(), sb = beta.detach(), sa = add_nc.defined() ? add_nc.detach() : Tensor();
    bool need_x = x.requires_grad(), need_g = gamma.requires_grad(), need_b = beta.requires_grad();
    bool need_a = add_nc.defined() && add_nc.requires_grad();
    record(op, {&x, &gamma, &beta, &add_nc}, {&y},
           [d, sx, sg, sb, sa, mean, rstd, need_x, need_g, need_b, need_a](const TensorList& g) {
             // dx is computed whenever anything is: it is the scratch for the other grads too.
             Tensor gx = Tensor::empty(sx.shape(), sx.dtype(), sx.device());
             Tensor gg = need_g ? Tensor::empty(sg.shape(), sg.dtype(), sg.device()) : Tensor();
             Tensor gb = need_b ? Tensor::empty(sb.shape(), sb.dtype(), sb.device()) : Tensor();
             Tensor ga = need_a ? Tensor::empty(sa.shape(), sa.dtype(), sa.device()) : Tensor();
             backend_for("group_norm", sx, dispatch::DeviceDTypes::f32_bf16)
                 .group_norm_backward(d, sx, sa, sg, sb, mean, rstd, cast(g[0], sx.dtype()), gx, gg, gb, ga);
             return TensorList{need_x ? gx : Tensor(), gg, gb, ga};
           });
  }
  return y;
}

}  // namespace diffuse::ops
