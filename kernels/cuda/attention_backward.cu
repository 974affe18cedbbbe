// Flash-style attention backward by recomputation (FlashAttention-2's math), also run by the SIMT
// emulator. P is rebuilt tile by tile as exp(S − LSE) from the forward's per-row log-sum-exp;
// dS = P ∘ (dP − D) with dP = dO Vᵀ and D = rowsum(dO ∘ O). Two passes, no atomics, so the
// result is deterministic (bit-identical run to run, which `--resume` relies on):
//  1. query pass, grid (⌈L/Br⌉, heads, N): per query tile, D for its rows (written to `delta`),
//     then a loop over key tiles of 32: dQ = scale · Σ dS K. Q and dO stay in shared memory.
//  2. key pass, grid (⌈L/Bk⌉, heads, N): per key tile, a loop over query tiles of 32:
//     dV = Σ Pᵀ dO, dK = scale · Σ dSᵀ Q. K and V stay in shared memory.
// The price of determinism is recomputing S and dP in both passes (7 tile GEMMs instead of 5).
// Warps own 8 rows (Br = Bk = 64 with 8 warps for d ≤ 64; 32 with 4 warps at d = 128) or 4
// (32 with 8 warps at d = 256); shared memory (query/key pass) 56.3/64.5 KiB at d = 64,
// 68.3/72.5 KiB at d = 128 (3 blocks per H100 SM as far as shared memory goes), 132.3/136.5 KiB
// at d = 256 (one). Global traffic per pass: its own side once, the streamed side
// once per own tile (mostly L2 hits).
#include "kernels/compat.cuh"
#include "kernels/attention.h"
#include "kernels/cuda/attention_tiles.cuh"

#include <cmath>
#include <cstdint>

namespace diffuse::kernels::DIFFUSE_DEVICE_NS {
namespace {

using namespace attention_tiles;

// Both passes: warps own kRowsPerWarp rows of their side and stream tiles of 32 of the other.
template <int kD>
struct BackwardTiles {
  static constexpr int kWarps = kD == 128 ? 4 : 8, kRowsPerWarp = kD == 256 ? 4 : 8, kOwn = kWarps * kRowsPerWarp;
  static constexpr int kStream = 32, kThreads = 32 * kWarps;
  // Resident blocks per SM the register budget must allow: 2 × 8 warps (≤ 128 registers), or
  // 3 × 4 warps at d = 128, where shared memory allows 3 and the dK/dV accumulators need ~166;
  // at d = 256 shared memory (133/137 KiB a block) allows one block, which may take 255.
  static constexpr int kMinBlocksPerSm = kD == 256 ? 1 : kD == 128 ? 3 : 2;
  static constexpr int kOwnFloats = kOwn * kD, kStreamFloats = kStream * (kD + 1), kWeightFloats = kOwn * kStream;
  // query pass: Q, dO (owned); K, V (streamed); dS
  static constexpr size_t kQueryPassSmem = sizeof(float) * (2 * kOwnFloats + 2 * kStreamFloats + kWeightFloats);
  // key pass: K, V (owned); Q, dO (streamed); P, dS; LSE and D of the streamed queries
  static constexpr size_t kKeyPassSmem =
      sizeof(float) * (2 * kOwnFloats + 2 * kStreamFloats + 2 * kWeightFloats + 2 * kStream);
};

struct PassShape {
  int len, heads;
  float scale;
  int64_t qkv_stride;  // row stride of q, k, v and their grads (3 · heads · d when packed)
};

template <typename T, int kD>
__global__ void __launch_bounds__(BackwardTiles<kD>::kThreads, BackwardTiles<kD>::kMinBlocksPerSm)
    attention_backward_query_pass(PassShape sh, const T* __restrict__ q, const T* __restrict__ k,
                                  const T* __restrict__ v, const T* __restrict__ out, const T* __restrict__ dout,
                                  const float* __restrict__ lse, float* __restrict__ delta, T* __restrict__ dq) {
  using C = BackwardTiles<kD>;
  constexpr int kR = C::kRowsPerWarp, kU = kD / 32;
  float* q_s = dynamic_smem<float>();
  float* do_s = q_s + C::kOwnFloats;
  float* k_s = do_s + C::kOwnFloats;
  float* v_s = k_s + C::kStreamFloats;
  float* ds_s = v_s + C::kStreamFloats;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int len = sh.len, n = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * C::kOwn;
  const int64_t row_stride = static_cast<int64_t>(sh.heads) * kD;
  const int64_t head_offset = static_cast<int64_t>(n) * len * row_stride + static_cast<int64_t>(h) * kD;
  const int64_t in_offset = static_cast<int64_t>(n) * len * sh.qkv_stride + static_cast<int64_t>(h) * kD;
  const int64_t stat_offset = (static_cast<int64_t>(n) * sh.heads + h) * len;  // into lse / delta

  load_tile<kD, C::kOwn, C::kThreads>(q_s, kD, q + in_offset, sh.qkv_stride, q0, len);
  load_tile<kD, C::kOwn, C::kThreads>(do_s, kD, dout + head_offset, row_stride, q0, len);
  __syncthreads();
  const float* q_own = q_s + warp * kR * kD;
  const float* do_own = do_s + warp * kR * kD;
  float* ds_own = ds_s + warp * kR * C::kStream;

  // D = dO·O and the LSE of each owned row (zeros past the end: P there is masked anyway).
  float row_lse[kR], row_d[kR];
  DIFFUSE_UNROLL
  for (int r = 0; r < kR; ++r) {
    const int row = q0 + warp * kR + r;
    float part = 0.0f;
    if (row < len) {
      const T* o = out + head_offset + row * row_stride;
      DIFFUSE_UNROLL
      for (int u = 0; u < kU; ++u) part += do_own[r * kD + lane + 32 * u] * to_float(o[lane + 32 * u]);
    }
    row_d[r] = warp_sum(part);
    row_lse[r] = row < len ? lse[stat_offset + row] : 0.0f;
    if (row < len && lane == 0) delta[stat_offset + row] = row_d[r];
  }
  if (dq == nullptr) return;  // block-uniform: only D was wanted

  float acc[kR][kU];
  DIFFUSE_UNROLL
  for (int r = 0; r < kR; ++r)
    DIFFUSE_UNROLL
    for (int u = 0; u < kU; ++u) acc[r][u] = 0.0f;

  for (int k0 = 0; k0 < len; k0 += C::kStream) {
    __syncthreads();  // the previous K/V/dS tile is consumed
    load_tile<kD, C::kStream, C::kThreads>(k_s, kD + 1, k + in_offset, sh.qkv_stride, k0, len);
    load_tile<kD, C::kStream, C::kThreads>(v_s, kD + 1, v + in_offset, sh.qkv_stride, k0, len);
    __syncthreads();
    float s[kR][1], dp[kR][1];
    warp_dots<kD, kR, 1>(q_own, k_s, lane, s);
    warp_dots<kD, kR, 1>(do_own, v_s, lane, dp);
    const bool key_ok = k0 + lane < len;
    DIFFUSE_UNROLL
    for (int r = 0; r < kR; ++r) {
      const float p = key_ok ? __expf(s[r][0] * sh.scale - row_lse[r]) : 0.0f;
      ds_own[r * C::kStream + lane] = p * (dp[r][0] - row_d[r]);
    }
    __syncwarp();
    warp_accumulate<kD, kR, 1>(ds_own, k_s, lane, acc);
  }

  DIFFUSE_UNROLL
  for (int r = 0; r < kR; ++r) {
    const int row = q0 + warp * kR + r;
    if (row >= len) continue;
    T* g = dq + in_offset + row * sh.qkv_stride;
    DIFFUSE_UNROLL
    for (int u = 0; u < kU; ++u) store(g + lane + 32 * u, acc[r][u] * sh.scale);
  }
}

template <typename T, int kD>
__global__ void __launch_bounds__(BackwardTiles<kD>::kThreads, BackwardTiles<kD>::kMinBlocksPerSm)
    attention_backward_key_pass(PassShape sh, const T* __restrict__ q, const T* __restrict__ k,
                                const T* __restrict__ v, const T* __restrict__ dout, const float* __restrict__ lse,
                                const float* __restrict__ delta, T* __restrict__ dk, T* __restrict__ dv) {
  using C = BackwardTiles<kD>;
  constexpr int kR = C::kRowsPerWarp, kU = kD / 32;
  float* k_s = dynamic_smem<float>();
  float* v_s = k_s + C::kOwnFloats;
  float* q_s = v_s + C::kOwnFloats;
  float* do_s = q_s + C::kStreamFloats;
  float* p_s = do_s + C::kStreamFloats;
  float* ds_s = p_s + C::kWeightFloats;
  float* lse_s = ds_s + C::kWeightFloats;
  float* d_s = lse_s + C::kStream;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int len = sh.len, n = blockIdx.z, h = blockIdx.y, k0 = blockIdx.x * C::kOwn;
  const int64_t row_stride = static_cast<int64_t>(sh.heads) * kD;
  const int64_t head_offset = static_cast<int64_t>(n) * len * row_stride + static_cast<int64_t>(h) * kD;
  const int64_t in_offset = static_cast<int64_t>(n) * len * sh.qkv_stride + static_cast<int64_t>(h) * kD;
  const int64_t stat_offset = (static_cast<int64_t>(n) * sh.heads + h) * len;

  load_tile<kD, C::kOwn, C::kThreads>(k_s, kD, k + in_offset, sh.qkv_stride, k0, len);
  load_tile<kD, C::kOwn, C::kThreads>(v_s, kD, v + in_offset, sh.qkv_stride, k0, len);
  const float* k_own = k_s + warp * kR * kD;
  const float* v_own = v_s + warp * kR * kD;
  float* p_own = p_s + warp * kR * C::kStream;
  float* ds_own = ds_s + warp * kR * C::kStream;

  float dk_acc[kR][kU], dv_acc[kR][kU];
  DIFFUSE_UNROLL
  for (int r = 0; r < kR; ++r)
    DIFFUSE_UNROLL
    for (int u = 0; u < kU; ++u) dk_acc[r][u] = dv_acc[r][u] = 0.0f;

  for (int q0 = 0; q0 < len; q0 += C::kStream) {
    __syncthreads();  // the previous Q/dO/P/dS tile is consumed (and, at first, K and V are stored)
    load_tile<kD, C::kStream, C::kThreads>(q_s, kD + 1, q + in_offset, sh.qkv_stride, q0, len);
    load_tile<kD, C::kStream, C::kThreads>(do_s, kD + 1, dout + head_offset, row_stride, q0, len);
    if (threadIdx.x < C::kStream) {
      const int row = q0 + threadIdx.x;
      lse_s[threadIdx.x] = row < len ? lse[stat_offset + row] : 0.0f;
      d_s[threadIdx.x] = row < len ? delta[stat_offset + row] : 0.0f;
    }
    __syncthreads();
    // Row r of the warp is key k_own[r]; lane is query q0 + lane: s = k·q, dp = v·dO.
    float s[kR][1], dp[kR][1];
    warp_dots<kD, kR, 1>(k_own, q_s, lane, s);
    warp_dots<kD, kR, 1>(v_own, do_s, lane, dp);
    const bool query_ok = q0 + lane < len;
    const float query_lse = lse_s[lane], query_d = d_s[lane];
    DIFFUSE_UNROLL
    for (int r = 0; r < kR; ++r) {
      const float p = query_ok ? __expf(s[r][0] * sh.scale - query_lse) : 0.0f;
      p_own[r * C::kStream + lane] = p;
      ds_own[r * C::kStream + lane] = p * (dp[r][0] - query_d);
    }
    __syncwarp();
    warp_accumulate<kD, kR, 1>(p_own, do_s, lane, dv_acc);
    warp_accumulate<kD, kR, 1>(ds_own, q_s, lane, dk_acc);
  }

  DIFFUSE_UNROLL
  for (int r = 0; r < kR; ++r) {
    const int row = k0 + warp * kR + r;
    if (row >= len) continue;
    const int64_t at = in_offset + row * sh.qkv_stride;
    DIFFUSE_UNROLL
    for (int u = 0; u < kU; ++u) {
      if (dk != nullptr) store(dk + at + lane + 32 * u, dk_acc[r][u] * sh.scale);
      if (dv != nullptr) store(dv + at + lane + 32 * u, dv_acc[r][u]);
    }
  }
}

template <typename T, int kD>
void launch_backward(const AttentionDesc& d, const T* q, const T* k, const T* v, const T* out, const T* dout,
                     const float* lse, float* delta, T* dq, T* dk, T* dv, Stream stream) {
  using C = BackwardTiles<kD>;
  const PassShape sh{static_cast<int>(d.len), static_cast<int>(d.heads),
                     static_cast<float>(1.0 / std::sqrt(static_cast<double>(kD))), d.qkv_ld()};
  const dim3 grid(static_cast<unsigned>((d.len + C::kOwn - 1) / C::kOwn), static_cast<unsigned>(d.heads),
                  static_cast<unsigned>(d.n));
  DIFFUSE_LAUNCH((attention_backward_query_pass<T, kD>), grid, C::kThreads, C::kQueryPassSmem, stream, sh, q, k, v,
                 out, dout, lse, delta, dq);
  if (dk != nullptr || dv != nullptr)
    DIFFUSE_LAUNCH((attention_backward_key_pass<T, kD>), grid, C::kThreads, C::kKeyPassSmem, stream, sh, q, k, v,
                   dout, lse, delta, dk, dv);
}

template <typename T>
void backward(const AttentionDesc& d, const T* q, const T* k, const T* v, const T* out, const T* dout,
              const float* lse, float* delta, T* dq, T* dk, T* dv, Stream stream) {
  check_attention_device(d, {q, k, v, out, dout, lse, delta, dq, dk, dv});
  if (d.n * d.len == 0 || (dq == nullptr && dk == nullptr && dv == nullptr)) return;
  require(q && k && v && out && dout && lse && delta, "attention_backward: null buffer");
  switch (d.head_dim) {
    case 32: return launch_backward<T, 32>(d, q, k, v, out, dout, lse, delta, dq, dk, dv, stream);
    case 64: return launch_backward<T, 64>(d, q, k, v, out, dout, lse, delta, dq, dk, dv, stream);
    case 128: return launch_backward<T, 128>(d, q, k, v, out, dout, lse, delta, dq, dk, dv, stream);
    default: return launch_backward<T, 256>(d, q, k, v, out, dout, lse, delta, dq, dk, dv, stream);
  }
}

}  // namespace

void attention_backward(const AttentionDesc& d, const float* q, const float* k, const float* v, const float* out,
                        const float* dout, const float* lse, float* delta, float* dq, float* dk, float* dv,
                        Stream stream) {
  backward(d, q, k, v, out, dout, lse, delta, dq, dk, dv, stream);
}

void attention_backward(const AttentionDesc& d, const uint16_t* q, const uint16_t* k, const uint16_t* v,
                        const uint16_t* out, const uint16_t* dout, const float* lse, float* delta, uint16_t* dq,
                        uint16_t* dk, uint16_t* dv, Stream stream) {
  using B = __nv_bfloat16;
  backward(d, reinterpret_cast<const B*>(q), reinterpret_cast<const B*>(k), reinterpret_cast<const B*>(v),
           reinterpret_cast<const B*>(out), reinterpret_cast<const B*>(dout), lse, delta, reinterpret_cast<B*>(dq),
           reinterpret_cast<B*>(dk), reinterpret_cast<B*>(dv), stream);
}

}  // namespace diffuse::kernels::DIFFUSE_DEVICE_NS
