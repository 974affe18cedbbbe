// Warp-level tile pieces shared by attention_forward.cu and attention_backward.cu (included after
// kernels/compat.cuh; the warp sum and the f32 float4 load are grid_helpers.cuh's). Every pass has
// the same shape: a warp OWNS kRows rows of one side (their vectors sit in shared memory, read as
// broadcasts) and STREAMS a tile of 32·kCols rows of the other side, lane l taking rows l, l+32,
// ... (stored with an odd leading dimension kD+1, so the 32 lanes of a warp hit 32 different
// banks). All tiles are f32 in shared memory, whatever the
// input type; dot products accumulate in the same order in every pass, so the backward's S is
// bit-identical to the forward's.
#pragma once
#include "kernels/cuda/grid_helpers.cuh"

namespace diffuse::kernels::DIFFUSE_DEVICE_NS::attention_tiles {

using grid::kFullMask;
using grid::warp_sum;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ void store(float* p, float x) { *p = x; }
__device__ __forceinline__ void store(__nv_bfloat16* p, float x) { *p = __float2bfloat16_rn(x); }

// Four consecutive elements as floats (16-byte aligned for f32, 8-byte for bf16: the launchers
// check the base pointers, and every row of a head starts at a multiple of 32 elements).
__device__ __forceinline__ float4 load4(const float* p) { return grid::load4(p, 0); }
__device__ __forceinline__ float4 load4(const __nv_bfloat16* p) {
  const uint2 raw = *reinterpret_cast<const uint2*>(p);  // bf16 -> f32 is a 16-bit shift, exact
  return make_float4(__uint_as_float(raw.x << 16), __uint_as_float(raw.x & 0xffff0000u),
                     __uint_as_float(raw.y << 16), __uint_as_float(raw.y & 0xffff0000u));
}

// The max over the warp of a non-NaN float, as one redux.sync (sm_80+) on an order-preserving
// integer image of it: non-negative floats order like their bits, negative ones reversed.
__device__ __forceinline__ int ordered_bits(float x) {
  const int i = __float_as_int(x);
  return i >= 0 ? i : i ^ 0x7fffffff;
}
__device__ __forceinline__ float warp_max(float x) {
  const int m = __reduce_max_sync(kFullMask, ordered_bits(x));
  return __int_as_float(m >= 0 ? m : m ^ 0x7fffffff);
}

// Copies rows [row0, row0 + kTileRows) of one head into tile[r * ld + c] as f32, zero-filling
// rows at or past `len` (a zero row contributes nothing and never meets NaN poison). `head` points
// at element (row 0, this head, column 0); rows are `row_stride` elements apart. Whole block.
template <int kD, int kTileRows, int kThreads, typename T>
__device__ __forceinline__ void load_tile(float* tile, int ld, const T* head, int64_t row_stride, int row0,
                                          int len) {
  constexpr int kQuads = kD / 4;
  for (int idx = threadIdx.x; idx < kTileRows * kQuads; idx += kThreads) {
    const int r = idx / kQuads, c = (idx % kQuads) * 4;
    const int row = row0 + r;
    const float4 x = row < len ? load4(head + row * row_stride + c) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    float* dst = tile + r * ld + c;
    dst[0] = x.x, dst[1] = x.y, dst[2] = x.z, dst[3] = x.w;
  }
}

// out[r][t] = Σ_c own[r·kD + c] · streamed[(lane + 32t)·(kD+1) + c] for the warp's kRows owned
// rows (unpadded, 16-byte aligned: float4 broadcasts) against its lane's streamed rows.
template <int kD, int kRows, int kCols>
__device__ __forceinline__ void warp_dots(const float* own, const float* streamed, int lane,
                                          float (&out)[kRows][kCols]) {
  DIFFUSE_UNROLL
  for (int r = 0; r < kRows; ++r)
    DIFFUSE_UNROLL
    for (int t = 0; t < kCols; ++t) out[r][t] = 0.0f;
  DIFFUSE_UNROLL_BY(2)
  for (int c = 0; c < kD; c += 4) {
    float b[kCols][4];
    DIFFUSE_UNROLL
    for (int t = 0; t < kCols; ++t)
      DIFFUSE_UNROLL
      for (int e = 0; e < 4; ++e) b[t][e] = streamed[(lane + 32 * t) * (kD + 1) + c + e];
    DIFFUSE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      const float4 a = *reinterpret_cast<const float4*>(own + r * kD + c);
      DIFFUSE_UNROLL
      for (int t = 0; t < kCols; ++t) {
        float s = out[r][t];
        s += a.x * b[t][0];
        s += a.y * b[t][1];
        s += a.z * b[t][2];
        s += a.w * b[t][3];
        out[r][t] = s;
      }
    }
  }
}

// acc[r][u] += Σ_j weight[r·32kCols + j] · streamed[j·(kD+1) + lane + 32u]: the warp's kRows rows
// of weights (P or dS, in the warp's own shared slice) times the streamed tile; lane owns output
// columns lane, lane+32, ... (coalesced stores later).
template <int kD, int kRows, int kCols>
__device__ __forceinline__ void warp_accumulate(const float* weight, const float* streamed, int lane,
                                                float (&acc)[kRows][kD / 32]) {
  constexpr int kJ = 32 * kCols, kU = kD / 32;
  DIFFUSE_UNROLL_BY(2)
  for (int j = 0; j < kJ; j += 4) {
    float b[4][kU];
    DIFFUSE_UNROLL
    for (int e = 0; e < 4; ++e)
      DIFFUSE_UNROLL
      for (int u = 0; u < kU; ++u) b[e][u] = streamed[(j + e) * (kD + 1) + lane + 32 * u];
    DIFFUSE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      const float4 w = *reinterpret_cast<const float4*>(weight + r * kJ + j);
      DIFFUSE_UNROLL
      for (int u = 0; u < kU; ++u) {
        float s = acc[r][u];
        s += w.x * b[0][u];
        s += w.y * b[1][u];
        s += w.z * b[2][u];
        s += w.w * b[3][u];
        acc[r][u] = s;
      }
    }
  }
}

}  // namespace diffuse::kernels::DIFFUSE_DEVICE_NS::attention_tiles
