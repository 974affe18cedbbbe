// Multi-head self-attention: q, k, v [N, L, heads * d] read as [N, L, heads, d] (no transpose:
// a head is a strided GEMM operand with leading dimension heads * d); out = softmax(q kᵀ / √d) v
// in the same layout. The CPU path materialises the L×L probabilities per (n, head) and its
// backward recomputes them; the flash-style kernel that never stores them is CUDA's.
#pragma once
#include <cstdint>

#include "kernels/common.h"

namespace diffuse::kernels {

struct AttentionDesc {
  int64_t n = 0, len = 0, heads = 1, head_dim = 0;
  int64_t width() const { return heads * head_dim; }
};

namespace cpu {
template <typename T>
void attention_forward(const AttentionDesc& d, const T* q, const T* k, const T* v, T* out);
// out is the forward's output; dout its grad. Any of dq, dk, dv may be null (not wanted).
template <typename T>
void attention_backward(const AttentionDesc& d, const T* q, const T* k, const T* v, const T* out, const T* dout,
                        T* dq, T* dk, T* dv);
}  // namespace cpu

}  // namespace diffuse::kernels
