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

}  // namespace diffuse::kernels
