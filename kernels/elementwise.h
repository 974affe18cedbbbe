// Element-wise kernels: binary ops with b broadcast over a, SiLU, scaling, and the reductions
// their backward passes need. A broadcast is described once, on the host, as a short list of
// collapsed dims (adjacent dims that broadcast alike are merged), so the inner loop is either a
// contiguous stream (b has that dim) or a scalar (b is broadcast there).
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/common.h"

namespace diffuse::kernels {

enum class BinaryOp : int { add, sub, mul };

struct BroadcastDesc {
  static constexpr int kMaxRank = 8;
  int rank = 0;                 // collapsed rank (>= 1)
  int64_t size[kMaxRank] = {};  // collapsed dims of a (and of the output)
  bool b_has[kMaxRank] = {};    // whether b varies along that dim
  int64_t numel = 0;            // elements of a
  int64_t b_numel = 0;          // elements of b
};

// Validates that b's shape (right-aligned) has each dim equal to a's or 1; throws otherwise.
BroadcastDesc make_broadcast(const std::vector<int64_t>& a, const std::vector<int64_t>& b, const char* op);

namespace cpu {
template <typename T>
void binary(BinaryOp op, const BroadcastDesc& d, const T* a, const T* b, T* out);
// out[b-shaped] = sum of g[a-shaped] over the broadcast dims (times w[a-shaped] when w != null).
template <typename T>
void reduce_to_broadcast(const BroadcastDesc& d, const T* g, const T* w, T* out);
template <typename T>
void scale(int64_t n, T s, const T* x, T* out);
template <typename T>
void silu_forward(int64_t n, const T* x, T* y);
template <typename T>
void silu_backward(int64_t n, const T* x, const T* gy, T* gx);
template <typename T>
T sum(int64_t n, const T* x);  // pairwise-blocked, f64 accumulation for f32
template <typename T>
void fill(int64_t n, T value, T* out);
}  // namespace cpu

// Device launchers (kernels/cuda/elementwise.cu), f32: cuda:: takes device pointers, emu:: host
// pointers. binary, scale and SiLU also take bf16 storage (uint16_t bits; every input and the
// output bf16, f32 math, one rounding per stored value): what bf16 autocast runs between layers. The reductions are deterministic two-stage sums (no float atomics): the caller
// passes a scratch buffer of the *_workspace() floats, a count decided by the shape alone.
// `sum` writes its result to out[0] on the device; `fill` reads its value from memory (a device
// scalar such as an upstream grad), so neither needs a host round trip.
// add_bias_residual is the epilogue of cuDNN's conv and of the cuBLAS linear when a residual is
// fused (kernels/conv2d.h, kernels/linear.h): y[r, c] = (y[r, c] + bias[c]) + residual[r, c] in
// f32 math, one rounding per stored value; bias may be null. The casts
// (kernels/cuda/elementwise_cast.cu) move storage between f32 and bf16 (uint16_t bits): round to
// nearest even one way, exact the other; the CPU does the same with kernels/bf16.h.
#define DIFFUSE_ELEMENTWISE_LAUNCHERS                                                                   \
  void binary(BinaryOp op, const BroadcastDesc& d, const float* a, const float* b, float* out,         \
              Stream stream);                                                                           \
  void binary(BinaryOp op, const BroadcastDesc& d, const uint16_t* a, const uint16_t* b, uint16_t* out, \
              Stream stream);                                                                           \
  int64_t reduce_to_broadcast_workspace(const BroadcastDesc& d);                                        \
  void reduce_to_broadcast(const BroadcastDesc& d, const float* g, const float* w, float* out,          \
                           float* workspace, Stream stream);                                            \
  void add_bias_residual(int64_t rows, int64_t cols, const float* bias, const float* residual, float* y, \
                         Stream stream);                                                                \
  void add_bias_residual(int64_t rows, int64_t cols, const uint16_t* bias, const uint16_t* residual,    \
                         uint16_t* y, Stream stream);                                                   \
  void scale(int64_t n, float s, const float* x, float* out, Stream stream);                           \
  void scale(int64_t n, float s, const uint16_t* x, uint16_t* out, Stream stream);                     \
  void silu_forward(int64_t n, const float* x, float* y, Stream stream);                               \
  void silu_forward(int64_t n, const uint16_t* x, uint16_t* y, Stream stream);                         \
  void silu_backward(int64_t n, const float* x, const float* gy, float* gx, Stream stream);            \
  void silu_backward(int64_t n, const uint16_t* x, const uint16_t* gy, uint16_t* gx, Stream stream);   \
  int64_t sum_workspace(int64_t n);                                                                     \
  void sum(int64_t n, const float* x, float* out, float* workspace, Stream stream);                    \
  void fill(int64_t n, const float* value, float* out, Stream stream);                                 \
  void cast_f32_to_bf16(int64_t n, const float* x, uint16_t* y, Stream stream);                        \
  void cast_bf16_to_f32(int64_t n, const uint16_t* x, float* y, Stream stream);
namespace cuda {
DIFFUSE_ELEMENTWISE_LAUNCHERS
}
namespace emu {
DIFFUSE_ELEMENTWISE_LAUNCHERS
}
#undef DIFFUSE_ELEMENTWISE_LAUNCHERS

}  // namespace diffuse::kernels
