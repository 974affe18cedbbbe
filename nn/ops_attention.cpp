// attention op (kernels/attention.h): q, k, v [N, L, heads * d] -> softmax(q kᵀ / √d) v. The
// backward node keeps q, k, v and the output and recomputes the probabilities (DESIGN.md §5).
#include "kernels/attention.h"

#include "nn/autograd.h"
#include "nn/op_checks.h"
#include "nn/ops.h"

namespace diffuse::ops {

using namespace detail;
namespace k = diffuse::kernels;

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

  Tensor out = Tensor::empty(q.shape(), q.dtype(), q.device());
  dispatch_cpu_float(op, q, [&](auto t) {
    using T = decltype(t);
    k::cpu::attention_forward<T>(d, q.data<T>(), kt.data<T>(), v.data<T>(), out.data<T>());
  });
  if (any_requires_grad({&q, &kt, &v})) {
    Tensor sq = q.detach(), sk = kt.detach(), sv = v.detach(), so = out.detach();
    bool need_q = q.requires_grad(), need_k = kt.requires_grad(), need_v = v.requires_grad();
    record(op, {&q, &kt, &v}, {&out}, [d, sq, sk, sv, so, need_q, need_k, need_v](const std::vector<Tensor>& g) {
      auto grad_if = [&](bool need) { return need ? Tensor::empty(sq.shape(), sq.dtype(), sq.device()) : Tensor(); };
      Tensor gq = grad_if(need_q), gk = grad_if(need_k), gv = grad_if(need_v);
      dispatch_cpu_float("attention", sq, [&](auto t) {
        using T = decltype(t);
        k::cpu::attention_backward<T>(d, sq.data<T>(), sk.data<T>(), sv.data<T>(), so.data<T>(), g[0].data<T>(),
                                      need_q ? gq.data<T>() : nullptr, need_k ? gk.data<T>() : nullptr,
                                      need_v ? gv.data<T>() : nullptr);
      });
      return std::vector<Tensor>{gq, gk, gv};
    });
  }
  return out;
}

}  // namespace diffuse::ops
