// attention op (kernels/attention.h): q, k, v [N, L, heads * d] -> softmax(q kᵀ / √d) v. The
// backward node keeps q, k, v and the output and recomputes the probabilities (docs/design.md §5); on
// CUDA it also keeps the forward's per-row log-sum-exp [N, heads, L] f32, from which either CUDA
// path (flash kernels or batched GEMMs: kernels/attention.h's rule) rebuilds P without a softmax
// pass (the backend's attention_keeps_lse). CUDA takes f32 or bf16 and any head dim; the kernels
// are reached through the device seam (nn/dispatch.h).
#include "kernels/attention.h"

#include "nn/autograd.h"
#include "nn/dispatch.h"
#include "nn/op_checks.h"
#include "nn/ops.h"

namespace diffuse::ops {

using namespace detail;
using dispatch::backend_for;
namespace k = diffuse::kernels;

Tensor attention(const Tensor& q, const Tensor& kt, const Tensor& v, int heads) {
  const char* op = "attention";
  check_defined(op, q, "q");
  check_defined(op, kt, "k");
  check_defined(op, v, "v");
  check_same(op, {&q, &kt, &v});
  check_float(op, q);
  auto what = [&] {  // built only on failure: no allocation per call
    return " (q " + q.describe() + ", k " + kt.describe() + ", v " + v.describe() + ", heads " +
           std::to_string(heads) + ")";
  };
  if (q.ndim() != 3) fail(op, "q, k and v must be [N, L, heads * d]" + what());
  if (kt.shape() != q.shape() || v.shape() != q.shape()) fail(op, "q, k and v must have the same shape" + what());
  if (heads < 1 || q.dim(2) % heads != 0)
    fail(op, std::to_string(heads) + " heads do not divide the width " + std::to_string(q.dim(2)) + what());
  k::AttentionDesc d;
  d.n = q.dim(0);
  d.len = q.dim(1);
  d.heads = heads;
  d.head_dim = q.dim(2) / heads;
  const dispatch::Backend& backend = backend_for(op, q, dispatch::DeviceDTypes::f32_bf16);

  const bool need_grad = any_requires_grad({&q, &kt, &v});
  Tensor out = Tensor::empty(q.shape(), q.dtype(), q.device());
  Tensor lse;  // only for a backend that keeps it, and only for a backward
  if (need_grad && backend.attention_keeps_lse()) lse = Tensor::empty({d.n, d.heads, d.len}, DType::f32, q.device());
  backend.attention_forward(d, q, kt, v, out, lse);
  if (need_grad) {
    Tensor sq = q.detach(), sk = kt.detach(), sv = v.detach(), so = out.detach();
    bool need_q = q.requires_grad(), need_k = kt.requires_grad(), need_v = v.requires_grad();
    record(op, {&q, &kt, &v}, {&out},
           [d, sq, sk, sv, so, lse, need_q, need_k, need_v](const TensorList& g) {
             auto grad_if = [&](bool need) {
               return need ? Tensor::empty(sq.shape(), sq.dtype(), sq.device()) : Tensor();
             };
             Tensor gq = grad_if(need_q), gk = grad_if(need_k), gv = grad_if(need_v);
             if (g[0].dtype() != sq.dtype() || g[0].device() != sq.device() || g[0].shape() != sq.shape())
               fail("attention", "output grad " + g[0].describe() + " does not match the output " + so.describe());
             backend_for("attention", sq, dispatch::DeviceDTypes::f32_bf16)
                 .attention_backward(d, sq, sk, sv, so, lse, g[0], gq, gk, gv);
             return TensorList{gq, gk, gv};
           });
  }
  return out;
}

}  // namespace diffuse::ops
