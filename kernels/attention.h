// Multi-head self-attention: q, k, v [N, L, heads * d] read as [N, L, heads, d] (no transpose:
// a head is a strided GEMM operand with leading dimension heads * d); out = softmax(q kᵀ / √d) v
// in the same layout. The CPU path works on tiles of query rows, holding the probabilities of one
// tile at a time (kernels/cpu/attention.cpp), and its backward recomputes them; CUDA's flash-style
// kernel never stores them: its forward also writes the per-row log-sum-exp [N, heads, L] f32,
// from which the backward rebuilds P.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>

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

// What the device kernels accept (kernels/cuda/attention_*.cu): head dims 32, 64, 128, 256 (tiles
// are compiled per dim), grid limits, and 16-byte aligned buffers (the tile loads are vectorised).
inline bool attention_device_head_dim(int64_t head_dim) {
  return head_dim == 32 || head_dim == 64 || head_dim == 128 || head_dim == 256;
}
inline void check_attention_device(const AttentionDesc& d, std::initializer_list<const void*> buffers) {
  auto what = [&](const char* problem) {
    return "attention: N " + std::to_string(d.n) + ", L " + std::to_string(d.len) + ", heads " +
           std::to_string(d.heads) + ", head dim " + std::to_string(d.head_dim) + ": " + problem;
  };
  require(attention_device_head_dim(d.head_dim), [&] { return what("the CUDA kernels support head dims 32, 64, 128 and 256"); });
  require(d.n >= 0 && d.n <= 65535 && d.heads >= 1 && d.heads <= 65535 && d.len >= 0 && d.len <= (int64_t{1} << 30),
          [&] { return what("outside the kernels' grid limits (N and heads at most 65535, L at most 2^30)"); });
  for (const void* p : buffers)
    require(reinterpret_cast<uintptr_t>(p) % 16 == 0, [&] { return what("device buffers must be 16-byte aligned"); });
}

// Device launchers: cuda:: takes device pointers, emu:: host pointers (the SIMT emulator). bf16
// tensors are passed as their uint16_t bit patterns; arithmetic is f32 either way.
//  forward: out [N, L, heads*d] in the input type; lse [N, heads, L] f32 = log Σ_j exp(s_ij), or
//    null when no backward will run.
//  backward: out and lse from the forward, dout the output's grad; delta is f32 scratch
//    [N, heads, L] (it receives rowsum(dout ∘ out)). Any of dq, dk, dv may be null (not wanted).
//    Deterministic: no atomics; dq comes from its own pass over the keys.
#define DIFFUSE_ATTENTION_LAUNCHERS_FOR(T)                                                                    \
  void attention_forward(const AttentionDesc& d, const T* q, const T* k, const T* v, T* out, float* lse,     \
                         Stream stream);                                                                     \
  void attention_backward(const AttentionDesc& d, const T* q, const T* k, const T* v, const T* out,          \
                          const T* dout, const float* lse, float* delta, T* dq, T* dk, T* dv, Stream stream);
#define DIFFUSE_ATTENTION_LAUNCHERS         \
  DIFFUSE_ATTENTION_LAUNCHERS_FOR(float)    \
  DIFFUSE_ATTENTION_LAUNCHERS_FOR(uint16_t)
namespace cuda {
DIFFUSE_ATTENTION_LAUNCHERS
}
namespace emu {
DIFFUSE_ATTENTION_LAUNCHERS
}
#undef DIFFUSE_ATTENTION_LAUNCHERS
#undef DIFFUSE_ATTENTION_LAUNCHERS_FOR

}  // namespace diffuse::kernels
