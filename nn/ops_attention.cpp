// attention op (kernels/attention.h): q, k, v [N, L, heads * d] -> softmax(q kᵀ / √d) v. The
// backward node keeps q, k, v and the output and recomputes the probabilities (docs/design.md §5); on
// CUDA it also keeps the forward's per-row log-sum-exp [N, heads, L] f32, from which the flash
// kernels rebuild P without a softmax pass. CUDA takes f32 or bf16 and head dims 32, 64, 128.
// Other head dims on CUDA (ddpm-cifar10's single 256-wide head) take a stopgap: f32 only, q, k,
// v copied to the host and the CPU twin run there, forward and backward, the result copied back.
// Correct on any device, but it synchronises the stream and is slow at large batches; it lasts
// until the device kernels (or a cuBLAS + softmax path) take those head dims.
#include "kernels/attention.h"

#include "nn/autograd.h"
#include "nn/device_context.h"
#include "nn/op_checks.h"
#include "nn/ops.h"

namespace diffuse::ops {

using namespace detail;
namespace k = diffuse::kernels;

namespace {

void cuda_forward(const k::AttentionDesc& d, const Tensor& q, const Tensor& kt, const Tensor& v, const Tensor& out,
                  const Tensor& lse) {
#if DIFFUSE_WITH_CUDA
  float* lse_ptr = lse.defined() ? lse.data<float>() : nullptr;
  if (q.dtype() == DType::bf16)
    k::cuda::attention_forward(d, q.data<uint16_t>(), kt.data<uint16_t>(), v.data<uint16_t>(), out.data<uint16_t>(),
                               lse_ptr, current_stream());
  else
    k::cuda::attention_forward(d, q.data<float>(), kt.data<float>(), v.data<float>(), out.data<float>(), lse_ptr,
                               current_stream());
#else
  (void)d, (void)q, (void)kt, (void)v, (void)out, (void)lse;
  no_cuda_path("attention");
#endif
}

// gq/gk/gv may be undefined (not wanted). delta is the kernels' f32 [N, heads, L] scratch.
void cuda_backward(const k::AttentionDesc& d, const Tensor& q, const Tensor& kt, const Tensor& v, const Tensor& out,
                   const Tensor& lse, const Tensor& dout, const Tensor& gq, const Tensor& gk, const Tensor& gv) {
#if DIFFUSE_WITH_CUDA
  Tensor delta = Tensor::empty({d.n, d.heads, d.len}, DType::f32, Device::cuda);
  auto run = [&](auto t) {
    using T = decltype(t);
    auto grad = [](const Tensor& g) { return g.defined() ? g.data<T>() : nullptr; };
    k::cuda::attention_backward(d, q.data<T>(), kt.data<T>(), v.data<T>(), out.data<T>(), dout.data<T>(),
                                lse.data<float>(), delta.data<float>(), grad(gq), grad(gk), grad(gv),
                                current_stream());
  };
  if (q.dtype() == DType::bf16)
    run(uint16_t{});
  else
    run(float{});
#else
  (void)d, (void)q, (void)kt, (void)v, (void)out, (void)lse, (void)dout, (void)gq, (void)gk, (void)gv;
  no_cuda_path("attention");
#endif
}

bool device_kernels_take(int64_t head_dim) { return head_dim == 32 || head_dim == 64 || head_dim == 128; }

// The host stopgap for CUDA tensors (see the top of the file): f32 CUDA tensors in and out.
void host_forward(const k::AttentionDesc& d, const Tensor& q, const Tensor& kt, const Tensor& v, Tensor out) {
  const Tensor hq = q.to(Device::cpu), hk = kt.to(Device::cpu), hv = v.to(Device::cpu);
  Tensor hout = Tensor::empty(out.shape(), DType::f32);
  k::cpu::attention_forward<float>(d, hq.data<float>(), hk.data<float>(), hv.data<float>(), hout.data<float>());
  out.copy_from(hout);
}

void host_backward(const k::AttentionDesc& d, const Tensor& q, const Tensor& kt, const Tensor& v, const Tensor& out,
                   const Tensor& dout, Tensor gq, Tensor gk, Tensor gv) {
  const Tensor hq = q.to(Device::cpu), hk = kt.to(Device::cpu), hv = v.to(Device::cpu);
  const Tensor hout = out.to(Device::cpu), hdout = dout.to(Device::cpu);
  auto host_grad = [](const Tensor& g) { return g.defined() ? Tensor::empty(g.shape(), DType::f32) : Tensor(); };
  Tensor hgq = host_grad(gq), hgk = host_grad(gk), hgv = host_grad(gv);
  auto ptr = [](const Tensor& g) { return g.defined() ? g.data<float>() : nullptr; };
  k::cpu::attention_backward<float>(d, hq.data<float>(), hk.data<float>(), hv.data<float>(), hout.data<float>(),
                                    hdout.data<float>(), ptr(hgq), ptr(hgk), ptr(hgv));
  for (auto [dev, host] : {std::pair{&gq, &hgq}, std::pair{&gk, &hgk}, std::pair{&gv, &hgv}})
    if (dev->defined()) dev->copy_from(*host);
}

}  // namespace

Tensor attention(const Tensor& q, const Tensor& kt, const Tensor& v, int heads) {
  const char* op = "attention";
  check_defined(op, q, "q");
  check_defined(op, kt, "k");
  check_defined(op, v, "v");
  check_same(op, {&q, &kt, &v});
  check_float(op, q);
  const std::string what = " (q " + q.describe() + ", k " + kt.describe() + ", v " + v.describe() + ", heads " +
                           std::to_string(heads) + ")";
  if (q.ndim() != 3) fail(op, "q, k and v must be [N, L, heads * d]" + what);
  if (kt.shape() != q.shape() || v.shape() != q.shape()) fail(op, "q, k and v must have the same shape" + what);
  if (heads < 1 || q.dim(2) % heads != 0)
    fail(op, std::to_string(heads) + " heads do not divide the width " + std::to_string(q.dim(2)) + what);
  k::AttentionDesc d;
  d.n = q.dim(0);
  d.len = q.dim(1);
  d.heads = heads;
  d.head_dim = q.dim(2) / heads;
  const bool on_cuda = q.device() == Device::cuda;
  const bool on_host_stopgap = on_cuda && !device_kernels_take(d.head_dim);
  if (on_host_stopgap && q.dtype() != DType::f32)
    fail(op, "head dim " + std::to_string(d.head_dim) + " is supported on CUDA in f32 only (" +
                 dtype_name(q.dtype()) + " needs head dim 32, 64 or 128)" + what);

  const bool need_grad = any_requires_grad({&q, &kt, &v});
  Tensor out = Tensor::empty(q.shape(), q.dtype(), q.device());
  Tensor lse;  // CUDA kernels only, and only for a backward
  if (on_host_stopgap) {
    host_forward(d, q, kt, v, out);
  } else if (on_cuda) {
    if (need_grad) lse = Tensor::empty({d.n, d.heads, d.len}, DType::f32, Device::cuda);
    cuda_forward(d, q, kt, v, out, lse);
  } else {
    dispatch_cpu_float(op, q, [&](auto t) {
      using T = decltype(t);
      k::cpu::attention_forward<T>(d, q.data<T>(), kt.data<T>(), v.data<T>(), out.data<T>());
    });
  }
  if (need_grad) {
    Tensor sq = q.detach(), sk = kt.detach(), sv = v.detach(), so = out.detach();
    bool need_q = q.requires_grad(), need_k = kt.requires_grad(), need_v = v.requires_grad();
    record(op, {&q, &kt, &v}, {&out},
           [d, sq, sk, sv, so, lse, need_q, need_k, need_v, on_host_stopgap](const std::vector<Tensor>& g) {
             auto grad_if = [&](bool need) {
               return need ? Tensor::empty(sq.shape(), sq.dtype(), sq.device()) : Tensor();
             };
             Tensor gq = grad_if(need_q), gk = grad_if(need_k), gv = grad_if(need_v);
             if (g[0].dtype() != sq.dtype() || g[0].device() != sq.device() || g[0].shape() != sq.shape())
               fail("attention", "output grad " + g[0].describe() + " does not match the output " + so.describe());
             if (on_host_stopgap) {
               host_backward(d, sq, sk, sv, so, g[0], gq, gk, gv);
             } else if (sq.device() == Device::cuda) {
               cuda_backward(d, sq, sk, sv, so, lse, g[0], gq, gk, gv);
             } else {
               dispatch_cpu_float("attention", sq, [&](auto t) {
                 using T = decltype(t);
                 k::cpu::attention_backward<T>(d, sq.data<T>(), sk.data<T>(), sv.data<T>(), so.data<T>(),
                                               g[0].data<T>(), need_q ? gq.data<T>() : nullptr,
                                               need_k ? gk.data<T>() : nullptr, need_v ? gv.data<T>() : nullptr);
               });
             }
             return std::vector<Tensor>{gq, gk, gv};
           });
  }
  return out;
}

}  // namespace diffuse::ops
