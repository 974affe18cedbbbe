// attention ops (kernels/attention.h): q, k, v [N, L, heads * d] -> softmax(q kᵀ / √d) v, as three
// tensors (attention) or packed side by side in one qkv [N, L, 3 · heads * d] (attention_packed:
// the attention block's fused q/k/v projection writes that with one GEMM, and its grad is one
// tensor whose backward is again one GEMM; the kernels read q, k and v with a row stride). The
// backward node keeps q, k, v and the output and recomputes the probabilities (docs/design.md §5); on
// CUDA it also keeps the forward's per-row log-sum-exp [N, heads, L] f32, from which either CUDA
// path (flash kernels or batched GEMMs: kernels/attention.h's rule) rebuilds P without a softmax
// pass (the backend's attention_keeps_lse). CUDA takes f32 or bf16 and any head dim; the kernels
// are reached through the device seam (nn/dispatch.h).
#include "kernels/attention.h"

#include <string>
#include <utility>

#include "nn/autograd.h"
#include "nn/dispatch.h"
#include "nn/op_checks.h"
#include "nn/ops.h"

namespace diffuse::ops {

using namespace detail;
using dispatch::backend_for;
namespace k = diffuse::kernels;

namespace {

// The body of both entries once the operands are checked: q, k and v are three tensors, or, with
// d.packed, one qkv tensor passed three times (the backend offsets k and v within it), whose grad
// is then one tensor that the backward fills part by part.
Tensor run_attention(const char* op, const k::AttentionDesc& d, const Tensor& q, const Tensor& kt, const Tensor& v) {
  const dispatch::Backend& backend = backend_for(op, q, dispatch::DeviceDTypes::f32_bf16);
  const bool need_grad = any_requires_grad({&q, &kt, &v});
  Tensor out = Tensor::empty({d.n, d.len, d.width()}, q.dtype(), q.device());
  Tensor lse;  // only for a backend that keeps it, and only for a backward
  if (need_grad && backend.attention_keeps_lse()) lse = Tensor::empty({d.n, d.heads, d.len}, DType::f32, q.device());
  backend.attention_forward(d, q, kt, v, out, lse);
  if (!need_grad) return out;
  Tensor sq = q.detach(), sk = kt.detach(), sv = v.detach(), so = out.detach();
  bool need_q = q.requires_grad(), need_k = kt.requires_grad(), need_v = v.requires_grad();
  auto backward = [op, d, sq, sk, sv, so, lse, need_q, need_k, need_v](const TensorList& g) {
    if (g[0].dtype() != so.dtype() || g[0].device() != so.device() || g[0].shape() != so.shape())
      fail(op, "output grad " + g[0].describe() + " does not match the output " + so.describe());
    auto grad_if = [&](bool need) { return need ? Tensor::empty(sq.shape(), sq.dtype(), sq.device()) : Tensor(); };
    Tensor gq = grad_if(need_q);
    Tensor gk = d.packed ? gq : grad_if(need_k), gv = d.packed ? gq : grad_if(need_v);
    backend_for(op, sq, dispatch::DeviceDTypes::f32_bf16).attention_backward(d, sq, sk, sv, so, lse, g[0], gq, gk, gv);
    return d.packed ? TensorList{gq} : TensorList{gq, gk, gv};
  };
  if (d.packed)
    record(op, {&q}, {&out}, std::move(backward));
  else
    record(op, {&q, &kt, &v}, {&out}, std::move(backward));
  return out;
}

// The shape of a call on t [N, L, ...] whose q, k and v are `width` wide; `what` builds the
// operands' description for an error (only on failure: no allocation per call).
template <class What>
k::AttentionDesc attention_desc(const char* op, const Tensor& t, int64_t width, int heads, const What& what) {
  if (heads < 1 || width % heads != 0)
    fail(op, std::to_string(heads) + " heads do not divide the width " + std::to_string(width) + what());
  k::AttentionDesc d;
  d.n = t.dim(0);
  d.len = t.dim(1);
  d.heads = heads;
  d.head_dim = width / heads;
  return d;
}

}  // namespace

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
  return run_attention(op, attention_desc(op, q, q.dim(2), heads, what), q, kt, v);
}

Tensor attention_packed(const Tensor& qkv, int heads) {
  const char* op = "attention_packed";
  check_defined(op, qkv, "qkv");
  check_float(op, qkv);
  auto what = [&] { return " (qkv " + qkv.describe() + ", heads " + std::to_string(heads) + ")"; };
  if (qkv.ndim() != 3 || qkv.dim(2) % 3 != 0) fail(op, "qkv must be [N, L, 3 * heads * d]" + what());
  k::AttentionDesc d = attention_desc(op, qkv, qkv.dim(2) / 3, heads, what);
  d.packed = true;
  return run_attention(op, d, qkv, qkv, qkv);
}

}  // namespace diffuse::ops
