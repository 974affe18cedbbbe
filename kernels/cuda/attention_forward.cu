// Flash-style attention forward (see kernels/attention.h), also run by the SIMT emulator: one
// block per (Br-query tile, head, n) keeps its Q tile in shared memory and streams K/V tiles of
// Bc keys (64; 32 at d ≥ 128) through it with an online softmax, so no L×L matrix exists.
//
// Launch: grid (⌈L/Br⌉, heads, N), 256 threads = 8 warps × 8 query rows (4 at d = 256, so Br is
// 64, or 32 at d = 256). Lane l scores keys l and l+32 (only l at d ≥ 128) for its warp's rows
// and accumulates output columns l, l+32, ... .
// Shared memory (f32 whatever the input): Q Br×d, K and V Bc×(d+1) (odd stride: conflict-free
// per-lane rows), P Br×Bc; 40.5/64.5/72.3/100.3 KiB for d = 32/64/128/256. Global traffic: Q, O once; K, V
// once per query tile (⌈L/Br⌉ times, mostly from L2). SIMT f32 FMAs only (no tensor cores yet):
// each K/V element read from shared memory feeds the warp's 8 rows, about one shared load per
// 3-5 FMAs.
#include "kernels/compat.cuh"
#include "kernels/attention.h"
#include "kernels/cuda/attention_tiles.cuh"

#include <cmath>
#include <cstdint>

namespace diffuse::kernels::DIFFUSE_DEVICE_NS {
namespace {

using namespace attention_tiles;

template <int kD>
struct ForwardTiles {
  // d = 256 (ddpm-cifar10's one head) owns 4 rows a warp, so its 8 accumulators a row still fit.
  static constexpr int kWarps = 8, kRowsPerWarp = kD == 256 ? 4 : 8, kBr = kWarps * kRowsPerWarp;
  static constexpr int kKeysPerLane = kD >= 128 ? 1 : 2, kBc = 32 * kKeysPerLane;
  static constexpr int kThreads = 32 * kWarps;
  // Two blocks (16 warps) per SM: caps registers at 128 (d = 128 would otherwise take ~170 and
  // run one block per SM; ptxas reports 40 spilled bytes for it under the cap).
  static constexpr int kMinBlocksPerSm = 2;
  // Shared floats, in this order (each a multiple of 4, so every part stays 16-byte aligned).
  static constexpr int kQ = kBr * kD, kKV = kBc * (kD + 1), kP = kBr * kBc;
  static constexpr size_t kSmemBytes = sizeof(float) * (kQ + 2 * kKV + kP);
};

template <typename T, int kD>
__global__ void __launch_bounds__(ForwardTiles<kD>::kThreads, ForwardTiles<kD>::kMinBlocksPerSm)
    attention_forward_kernel(int len, int heads, int64_t qkv_stride, float scale, const T* __restrict__ q,
                             const T* __restrict__ k,
                             const T* __restrict__ v, T* __restrict__ out, float* __restrict__ lse) {
  using C = ForwardTiles<kD>;
  constexpr int kR = C::kRowsPerWarp, kCols = C::kKeysPerLane, kU = kD / 32;
  float* q_s = dynamic_smem<float>();
  float* k_s = q_s + C::kQ;
  float* v_s = k_s + C::kKV;
  float* p_s = v_s + C::kKV;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int n = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * C::kBr;
  const int64_t row_stride = static_cast<int64_t>(heads) * kD;
  const int64_t head_offset = static_cast<int64_t>(n) * len * row_stride + static_cast<int64_t>(h) * kD;
  // q, k and v: rows qkv_stride apart (3 · row_stride when packed, AttentionDesc::packed).
  const int64_t in_offset = static_cast<int64_t>(n) * len * qkv_stride + static_cast<int64_t>(h) * kD;

  load_tile<kD, C::kBr, C::kThreads>(q_s, kD, q + in_offset, qkv_stride, q0, len);
  const float* q_own = q_s + warp * kR * kD;  // this warp's query rows
  float* p_own = p_s + warp * kR * C::kBc;   // and its slice of probabilities

  // Per owned row: running max m, this lane's share of the running sum l, the output columns.
  float m[kR], l_part[kR], acc[kR][kU];
  DIFFUSE_UNROLL
  for (int r = 0; r < kR; ++r) {
    m[r] = -INFINITY;
    l_part[r] = 0.0f;
    DIFFUSE_UNROLL
    for (int u = 0; u < kU; ++u) acc[r][u] = 0.0f;
  }

  for (int k0 = 0; k0 < len; k0 += C::kBc) {
    __syncthreads();  // the previous tile's K/V/P are consumed (and, at first, Q is stored)
    load_tile<kD, C::kBc, C::kThreads>(k_s, kD + 1, k + in_offset, qkv_stride, k0, len);
    load_tile<kD, C::kBc, C::kThreads>(v_s, kD + 1, v + in_offset, qkv_stride, k0, len);
    __syncthreads();

    float s[kR][kCols];
    warp_dots<kD, kR, kCols>(q_own, k_s, lane, s);
    DIFFUSE_UNROLL
    for (int r = 0; r < kR; ++r) {
      float tile_max = -INFINITY;
      DIFFUSE_UNROLL
      for (int t = 0; t < kCols; ++t) {
        s[r][t] = k0 + lane + 32 * t < len ? s[r][t] * scale : -INFINITY;
        tile_max = fmaxf(tile_max, s[r][t]);
      }
      // Key k0 < len is valid, so m_new is finite; on the first tile alpha = exp(-inf) = 0.
      const float m_new = fmaxf(m[r], warp_max(tile_max));
      const float alpha = __expf(m[r] - m_new);
      m[r] = m_new;
      l_part[r] *= alpha;
      DIFFUSE_UNROLL
      for (int u = 0; u < kU; ++u) acc[r][u] *= alpha;
      DIFFUSE_UNROLL
      for (int t = 0; t < kCols; ++t) {
        const float p = __expf(s[r][t] - m_new);  // 0 for masked keys
        l_part[r] += p;
        p_own[r * C::kBc + lane + 32 * t] = p;
      }
    }
    __syncwarp();  // the warp's P row slice is written before its lanes read each other's entries
    warp_accumulate<kD, kR, kCols>(p_own, v_s, lane, acc);
  }

  DIFFUSE_UNROLL
  for (int r = 0; r < kR; ++r) {
    const float l = warp_sum(l_part[r]);
    const int row = q0 + warp * kR + r;
    if (row >= len) continue;
    const float inv = 1.0f / l;
    T* o = out + head_offset + row * row_stride;
    DIFFUSE_UNROLL
    for (int u = 0; u < kU; ++u) store(o + lane + 32 * u, acc[r][u] * inv);
    if (lse != nullptr && lane == 0) lse[(static_cast<int64_t>(n) * heads + h) * len + row] = m[r] + logf(l);
  }
}

template <typename T, int kD>
void launch_forward(const AttentionDesc& d, const T* q, const T* k, const T* v, T* out, float* lse, Stream stream) {
  using C = ForwardTiles<kD>;
  const dim3 grid(static_cast<unsigned>((d.len + C::kBr - 1) / C::kBr), static_cast<unsigned>(d.heads),
                  static_cast<unsigned>(d.n));
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(kD)));  // as the CPU twin
  DIFFUSE_LAUNCH((attention_forward_kernel<T, kD>), grid, C::kThreads, C::kSmemBytes, stream,
                 static_cast<int>(d.len), static_cast<int>(d.heads), d.qkv_ld(), scale, q, k, v, out, lse);
}

template <typename T>
void forward(const AttentionDesc& d, const T* q, const T* k, const T* v, T* out, float* lse, Stream stream) {
  check_attention_device(d, {q, k, v, out, lse});
  if (d.n * d.len == 0) return;
  require(q && k && v && out, "attention_forward: null buffer");
  switch (d.head_dim) {
    case 32: return launch_forward<T, 32>(d, q, k, v, out, lse, stream);
    case 64: return launch_forward<T, 64>(d, q, k, v, out, lse, stream);
    case 128: return launch_forward<T, 128>(d, q, k, v, out, lse, stream);
    default: return launch_forward<T, 256>(d, q, k, v, out, lse, stream);
  }
}

}  // namespace

void attention_forward(const AttentionDesc& d, const float* q, const float* k, const float* v, float* out,
                       float* lse, Stream stream) {
  forward(d, q, k, v, out, lse, stream);
}

void attention_forward(const AttentionDesc& d, const uint16_t* q, const uint16_t* k, const uint16_t* v,
                       uint16_t* out, float* lse, Stream stream) {
  forward(d, reinterpret_cast<const __nv_bfloat16*>(q), reinterpret_cast<const __nv_bfloat16*>(k),
          reinterpret_cast<const __nv_bfloat16*>(v), reinterpret_cast<__nv_bfloat16*>(out), lse, stream);
}

}  // namespace diffuse::kernels::DIFFUSE_DEVICE_NS
