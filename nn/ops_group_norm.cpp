// group_norm op (kernels/group_norm.h) over x [N, ..., C] with optional fused add_nc [N, C] and
// SiLU. The statistics are saved in f64 [N, groups] on x's device (CPU and CUDA kernels alike);
// the backward node recomputes the normalised values from x (and add_nc) rather than keeping
// another activation-sized tensor. The CUDA path takes f32 only.
#include "kernels/group_norm.h"

#include "nn/autograd.h"
#include "nn/device_context.h"
#include "nn/op_checks.h"
#include "nn/ops.h"

namespace diffuse::ops {

using namespace detail;
namespace k = diffuse::kernels;

namespace {

template <typename T>
const T* data_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

#if DIFFUSE_WITH_CUDA
// Device scratch for a launcher; the caching allocator may hand the block out again once this
// tensor dies, which is safe because every kernel queues on the one stream (nn/device_context.h).
Tensor device_workspace(size_t bytes) {
  return bytes ? Tensor::empty({static_cast<int64_t>((bytes + 3) / 4)}, DType::f32, Device::cuda) : Tensor();
}
void* raw_or_null(const Tensor& t) { return t.defined() ? t.raw() : nullptr; }
#endif

void check_cuda_f32(const char* op, const Tensor& x) {
  if (x.device() == Device::cuda && x.dtype() != DType::f32)
    fail(op, "the CUDA kernels take f32, got x " + x.describe());
}

}  // namespace

Tensor group_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, const GroupNormOptions& opt,
                  const Tensor& add_nc) {
  const char* op = "group_norm";
  check_defined(op, x, "x");
  check_defined(op, gamma, "gamma");
  check_defined(op, beta, "beta");
  check_same(op, {&x, &gamma, &beta, &add_nc});
  check_float(op, x);
  const std::string what = " (x " + x.describe() + ", gamma " + gamma.describe() + ", beta " + beta.describe() +
                           ", add_nc " + (add_nc.defined() ? add_nc.describe() : "none") + ", groups " +
                           std::to_string(opt.groups) + ")";
  if (x.ndim() < 2) fail(op, "x must be [N, ..., C]" + what);
  const int64_t C = x.dim(-1);
  if (opt.groups < 1 || C % opt.groups != 0)
    fail(op, std::to_string(opt.groups) + " groups do not divide " + std::to_string(C) + " channels" + what);
  if (gamma.ndim() != 1 || gamma.dim(0) != C || beta.ndim() != 1 || beta.dim(0) != C)
    fail(op, "gamma and beta must be [" + std::to_string(C) + "]" + what);
  if (add_nc.defined() && (add_nc.ndim() != 2 || add_nc.dim(0) != x.dim(0) || add_nc.dim(1) != C))
    fail(op, "add_nc must be [" + std::to_string(x.dim(0)) + ", " + std::to_string(C) + "]" + what);
  if (!(opt.eps >= 0)) fail(op, "eps must be >= 0, got " + std::to_string(opt.eps) + what);
  check_cuda_f32(op, x);

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
  if (x.device() == Device::cuda) {
#if DIFFUSE_WITH_CUDA
    Tensor ws = device_workspace(k::cuda::group_norm_forward_workspace_bytes(d));
    k::cuda::group_norm_forward(d, x.data<float>(), data_or_null<float>(add_nc), gamma.data<float>(),
                                beta.data<float>(), y.data<float>(), mean.data<double>(), rstd.data<double>(),
                                raw_or_null(ws), current_stream());
#else
    no_cuda_path(op);
#endif
  } else {
    dispatch_cpu_float(op, x, [&](auto t) {
      using T = decltype(t);
      k::cpu::group_norm_forward<T>(d, x.data<T>(), data_or_null<T>(add_nc), gamma.data<T>(), beta.data<T>(),
                                    y.data<T>(), mean.data<double>(), rstd.data<double>());
    });
  }
  if (any_requires_grad({&x, &gamma, &beta, &add_nc})) {
    Tensor sx = x.detach(), sg = gamma.detach(), sb = beta.detach(), sa = add_nc.defined() ? add_nc.detach() : Tensor();
    bool need_x = x.requires_grad(), need_g = gamma.requires_grad(), need_b = beta.requires_grad();
    bool need_a = add_nc.defined() && add_nc.requires_grad();
    record(op, {&x, &gamma, &beta, &add_nc}, {&y},
           [d, sx, sg, sb, sa, mean, rstd, need_x, need_g, need_b, need_a](const std::vector<Tensor>& g) {
             // dx is computed whenever anything is: it is the scratch for the other grads too.
             Tensor gx = Tensor::empty(sx.shape(), sx.dtype(), sx.device());
             Tensor gg = need_g ? Tensor::empty(sg.shape(), sg.dtype(), sg.device()) : Tensor();
             Tensor gb = need_b ? Tensor::empty(sb.shape(), sb.dtype(), sb.device()) : Tensor();
             Tensor ga = need_a ? Tensor::empty(sa.shape(), sa.dtype(), sa.device()) : Tensor();
             if (sx.device() == Device::cuda) {
#if DIFFUSE_WITH_CUDA
               Tensor ws = device_workspace(k::cuda::group_norm_backward_workspace_bytes(d));
               k::cuda::group_norm_backward(d, sx.data<float>(), data_or_null<float>(sa), sg.data<float>(),
                                            sb.data<float>(), mean.data<double>(), rstd.data<double>(),
                                            g[0].data<float>(), gx.data<float>(),
                                            need_g ? gg.data<float>() : nullptr, need_b ? gb.data<float>() : nullptr,
                                            need_a ? ga.data<float>() : nullptr, raw_or_null(ws), current_stream());
#else
               no_cuda_path("group_norm");
#endif
             } else {
               dispatch_cpu_float("group_norm", sx, [&](auto t) {
                 using T = decltype(t);
                 k::cpu::group_norm_backward<T>(d, sx.data<T>(), data_or_null<T>(sa), sg.data<T>(), sb.data<T>(),
                                                mean.data<double>(), rstd.data<double>(), g[0].data<T>(),
                                                gx.data<T>(), need_g ? gg.data<T>() : nullptr,
                                                need_b ? gb.data<T>() : nullptr, need_a ? ga.data<T>() : nullptr);
               });
             }
             return std::vector<Tensor>{need_x ? gx : Tensor(), gg, gb, ga};
           });
  }
  return y;
}

}  // namespace diffuse::ops
