// CUDA reductions of the element-wise family (kernels/elementwise.h): reduce_to_broadcast (the
// backward of a broadcast add/sub/mul, optionally times w) and sum. Deterministic, no atomics: the
// split count comes from the shape alone; stage 1 writes one partial per (output, split) with
// fixed-order warp/block sums, stage 2 adds the partials in split order.
//  - rows    (b is [N,1,1,1] or a scalar; g viewed as [O, R]): blocks of 256 over (o, split),
//    float4 reads, ~1024 stage-1 blocks when R is large; 4 B (8 with w) read per element.
//  - columns (b is [C] or [N,1,1,C]; g viewed as [O, R, C]): 32x8 blocks, a warp reads 32 (or
//    128 with float4) consecutive channels of one row (coalesced), 8 row phases combined in
//    shared memory; stage 2 is one thread per output, coalesced over c.
//  - any other pattern: one warp per output with index divisions (not used by the UNet).
#include "kernels/compat.cuh"
#include "kernels/cuda/grid_helpers.cuh"
#include "kernels/elementwise.h"

#include <algorithm>
#include <cstdint>

namespace diffuse::kernels::DIFFUSE_DEVICE_NS {
namespace {

using grid::aligned16;
using grid::blocks_for;
using grid::kThreads;
constexpr int R = BroadcastDesc::kMaxRank;
constexpr int64_t kTargetBlocks = 1024;  // stage-1 blocks to aim for (~8 per SM on an H100)
constexpr int64_t kRowSplitMin = 16384;  // elements per row split (64 per thread)
constexpr int64_t kColSplitMin = 64;     // rows per column split (8 per row phase)
constexpr int kColX = 32, kColY = 8;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct ReducePlan {
  enum Kind { zero, copy, rows, columns, general } kind = zero;
  int64_t o = 1, r = 1, c = 1;      // rows: g is [o, r]; columns: g is [o, r, c]
  int64_t splits = 1, span = 1;     // stage-1 splits of r and the length of each
  int64_t workspace = 0;            // floats of partials (0: one split writes the output directly)
};

ReducePlan plan_rows(int64_t o, int64_t r) {
  ReducePlan p;
  p.kind = ReducePlan::rows;
  p.o = o, p.r = r;
  const int64_t s = std::max<int64_t>(1, std::min(ceil_div(r, kRowSplitMin), ceil_div(kTargetBlocks, o)));
  p.span = (ceil_div(r, s) + 3) / 4 * 4;  // a multiple of 4 so every split starts on a float4
  p.splits = ceil_div(r, p.span);
  p.workspace = p.splits > 1 ? o * p.splits : 0;
  return p;
}

ReducePlan plan_columns(int64_t o, int64_t r, int64_t c) {
  ReducePlan p;
  p.kind = ReducePlan::columns;
  p.o = o, p.r = r, p.c = c;
  const int64_t tiles = ceil_div(c, kColX * (c % 4 == 0 ? 4 : 1));
  const int64_t s = std::max<int64_t>(1, std::min(ceil_div(r, kColSplitMin), ceil_div(kTargetBlocks, o * tiles)));
  p.span = ceil_div(r, s);
  p.splits = ceil_div(r, p.span);
  p.workspace = p.splits > 1 ? o * p.splits * c : 0;
  return p;
}

ReducePlan plan(const BroadcastDesc& d) {
  ReducePlan p;
  if (d.numel == 0) return p;  // zero
  if (d.rank == 1) {
    if (d.b_has[0]) {
      p.kind = ReducePlan::copy;
      return p;
    }
    return plan_rows(1, d.size[0]);
  }
  if (d.rank == 2) return d.b_has[0] ? plan_rows(d.size[0], d.size[1]) : plan_columns(1, d.size[0], d.size[1]);
  if (d.rank == 3 && d.b_has[0]) return plan_columns(d.size[0], d.size[1], d.size[2]);
  p.kind = ReducePlan::general;
  return p;
}

template <int V>
__device__ __forceinline__ void load_v(const float* p, float (&x)[V]) {
  if constexpr (V == 4) {
    grid::load4(p, 0, x);
  } else {
    x[0] = *p;
  }
}

// ---- rows: out[o] = sum_r g[o, r] * w[o, r] -------------------------------------------------------

__global__ void __launch_bounds__(kThreads)
    row_partials(int64_t o_count, int64_t r_len, int64_t splits, int64_t span, const float* __restrict__ g,
                 const float* __restrict__ w, float* __restrict__ dst, bool vector) {
  for (int64_t blk = blockIdx.x; blk < o_count * splits; blk += gridDim.x) {  // block-uniform
    const int64_t o = blk / splits, s = blk - o * splits;
    const int64_t begin = o * r_len + s * span, end = o * r_len + grid::min64(r_len, (s + 1) * span);
    float acc = 0.0f;
    if (vector) {
      for (int64_t q = begin / 4 + threadIdx.x; q < end / 4; q += blockDim.x) {
        float x[4], y[4] = {1.0f, 1.0f, 1.0f, 1.0f};
        load_v<4>(g + 4 * q, x);
        if (w) load_v<4>(w + 4 * q, y);
        acc += x[0] * y[0];
        acc += x[1] * y[1];
        acc += x[2] * y[2];
        acc += x[3] * y[3];
      }
    } else {
      for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) acc += w ? g[i] * w[i] : g[i];
    }
    const float total = grid::block_sum<float, kThreads>(acc);
    if (threadIdx.x == 0) dst[blk] = total;
  }
}

// out[o] = the sum of its `splits` partials, one warp per o (lanes stride, then a shuffle tree).
__global__ void __launch_bounds__(kThreads)
    combine_rows(int64_t o_count, int64_t splits, const float* __restrict__ partials, float* __restrict__ out) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = grid::grid_threads() / 32;
  for (int64_t o = grid::global_thread() / 32; o < o_count; o += warps) {  // warp-uniform
    float acc = 0.0f;
    for (int64_t s = lane; s < splits; s += 32) acc += partials[o * splits + s];
    acc = grid::warp_sum(acc);
    if (lane == 0) out[o] = acc;
  }
}

void launch_rows(const ReducePlan& p, const float* g, const float* w, float* out, float* workspace, Stream stream) {
  const bool vector = p.r % 4 == 0 && aligned16(g) && (!w || aligned16(w));
  float* dst = p.splits > 1 ? workspace : out;
  DIFFUSE_LAUNCH(row_partials, blocks_for(p.o * p.splits, 1), kThreads, 0, stream, p.o, p.r, p.splits, p.span, g, w,
                 dst, vector);
  if (p.splits > 1)
    DIFFUSE_LAUNCH(combine_rows, blocks_for(32 * p.o), kThreads, 0, stream, p.o, p.splits, workspace, out);
}

// ---- columns: out[o, c] = sum_r g[o, r, c] * w[o, r, c] --------------------------------------------

// Block (32, 8): x picks V consecutive channels of a tile of 32*V, y a row phase of the split.
template <int V>
__global__ void __launch_bounds__(kColX* kColY)
    column_partials(int64_t o_count, int64_t r_len, int64_t c_len, int64_t splits, int64_t span,
                    const float* __restrict__ g, const float* __restrict__ w, float* __restrict__ dst) {
  DIFFUSE_SHARED_2D(float, part, kColY, kColX * V);  // [phase][j * 32 + x]: conflict-free
  const int64_t tiles = (c_len + kColX * V - 1) / (kColX * V);
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (int64_t blk = blockIdx.x; blk < o_count * splits * tiles; blk += gridDim.x) {  // block-uniform
    const int64_t tile = blk % tiles, os = blk / tiles, s = os % splits, o = os / splits;
    const int64_t c0 = (tile * kColX + tx) * V;  // V == 4 only when c_len % 4 == 0: all 4 valid
    const int64_t r1 = grid::min64(r_len, (s + 1) * span);
    float acc[V];
    DIFFUSE_UNROLL
    for (int j = 0; j < V; ++j) acc[j] = 0.0f;
    if (c0 < c_len) {
      for (int64_t r = s * span + ty; r < r1; r += kColY) {
        const int64_t off = (o * r_len + r) * c_len + c0;
        float x[V], y[V];
        load_v<V>(g + off, x);
        if (w) {
          load_v<V>(w + off, y);
          DIFFUSE_UNROLL
          for (int j = 0; j < V; ++j) acc[j] += x[j] * y[j];
        } else {
          DIFFUSE_UNROLL
          for (int j = 0; j < V; ++j) acc[j] += x[j];
        }
      }
    }
    DIFFUSE_UNROLL
    for (int j = 0; j < V; ++j) part[ty][j * kColX + tx] = acc[j];
    __syncthreads();
    if (ty == 0 && c0 < c_len) {
      DIFFUSE_UNROLL
      for (int j = 0; j < V; ++j) {
        float t = part[0][j * kColX + tx];
        for (int y = 1; y < kColY; ++y) t += part[y][j * kColX + tx];
        dst[(o * splits + s) * c_len + c0 + j] = t;
      }
    }
    __syncthreads();  // part[] is rewritten by the next block-iteration
  }
}

// out[o, c] = sum over s of partials[o, s, c], in split order.
__global__ void __launch_bounds__(kThreads)
    combine_columns(int64_t o_count, int64_t splits, int64_t c_len, const float* __restrict__ partials,
                    float* __restrict__ out) {
  const int64_t stride = grid::grid_threads();
  for (int64_t e = grid::global_thread(); e < o_count * c_len; e += stride) {
    const int64_t o = e / c_len, c = e - o * c_len;
    float acc = 0.0f;
    for (int64_t s = 0; s < splits; ++s) acc += partials[(o * splits + s) * c_len + c];
    out[e] = acc;
  }
}

void launch_columns(const ReducePlan& p, const float* g, const float* w, float* out, float* workspace, Stream stream) {
  const bool vector = p.c % 4 == 0 && aligned16(g) && (!w || aligned16(w));
  const int64_t tiles = ceil_div(p.c, kColX * (vector ? 4 : 1));
  const int blocks = blocks_for(p.o * p.splits * tiles, 1);
  float* dst = p.splits > 1 ? workspace : out;
  const dim3 block(kColX, kColY);
  if (vector)
    DIFFUSE_LAUNCH((column_partials<4>), blocks, block, 0, stream, p.o, p.r, p.c, p.splits, p.span, g, w, dst);
  else
    DIFFUSE_LAUNCH((column_partials<1>), blocks, block, 0, stream, p.o, p.r, p.c, p.splits, p.span, g, w, dst);
  if (p.splits > 1)
    DIFFUSE_LAUNCH(combine_columns, blocks_for(p.o * p.c), kThreads, 0, stream, p.o, p.splits, p.c, workspace, out);
}

// ---- any other pattern: one warp per output, index divisions ----------------------------------

struct GeneralReduce {
  int kept = 0, reduced = 0;        // dims of each kind, innermost first
  int64_t k_size[R], k_stride[R];   // kept dims and a's strides along them
  int64_t r_size[R], r_stride[R];   // reduced dims
  int64_t outputs = 0, per_output = 0;
};

GeneralReduce make_general(const BroadcastDesc& d) {
  GeneralReduce gr;
  int64_t stride = 1;
  for (int k = d.rank - 1; k >= 0; --k) {
    if (d.b_has[k]) {
      gr.k_size[gr.kept] = d.size[k], gr.k_stride[gr.kept++] = stride;
    } else {
      gr.r_size[gr.reduced] = d.size[k], gr.r_stride[gr.reduced++] = stride;
    }
    stride *= d.size[k];
  }
  gr.outputs = d.b_numel;
  gr.per_output = d.numel / d.b_numel;
  return gr;
}

__global__ void __launch_bounds__(kThreads)
    reduce_general(GeneralReduce gr, const float* __restrict__ g, const float* __restrict__ w, float* __restrict__ out) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = grid::grid_threads() / 32;
  for (int64_t j = grid::global_thread() / 32; j < gr.outputs; j += warps) {  // warp-uniform
    int64_t base = 0, rem = j;
    for (int k = 0; k < gr.kept; ++k) {
      base += (rem % gr.k_size[k]) * gr.k_stride[k];
      rem /= gr.k_size[k];
    }
    float acc = 0.0f;
    for (int64_t m = lane; m < gr.per_output; m += 32) {
      int64_t off = base;
      rem = m;
      for (int k = 0; k < gr.reduced; ++k) {
        off += (rem % gr.r_size[k]) * gr.r_stride[k];
        rem /= gr.r_size[k];
      }
      acc += w ? g[off] * w[off] : g[off];
    }
    acc = grid::warp_sum(acc);
    if (lane == 0) out[j] = acc;
  }
}

// ---- the trivial cases ---------------------------------------------------------------------------

// out = g * w (w may be null; g null writes zeros).
__global__ void __launch_bounds__(kThreads)
    product_kernel(int64_t n, const float* __restrict__ g, const float* __restrict__ w, float* __restrict__ out,
                   bool vector) {
  grid::for_each_element(
      n, vector,
      [&](int64_t q) {
        float x[4] = {0.0f, 0.0f, 0.0f, 0.0f}, y[4] = {1.0f, 1.0f, 1.0f, 1.0f};
        if (g) load_v<4>(g + 4 * q, x);
        if (w) load_v<4>(w + 4 * q, y);
        grid::store4(out, q, make_float4(x[0] * y[0], x[1] * y[1], x[2] * y[2], x[3] * y[3]));
      },
      [&](int64_t i) { out[i] = !g ? 0.0f : w ? g[i] * w[i] : g[i]; });
}

void launch_product(int64_t n, const float* g, const float* w, float* out, Stream stream) {
  const bool vector = aligned16(out) && (!g || aligned16(g)) && (!w || aligned16(w));
  DIFFUSE_LAUNCH(product_kernel, blocks_for(vector ? (n + 3) / 4 : n), kThreads, 0, stream, n, g, w, out, vector);
}

}  // namespace

int64_t reduce_to_broadcast_workspace(const BroadcastDesc& d) { return plan(d).workspace; }

void reduce_to_broadcast(const BroadcastDesc& d, const float* g, const float* w, float* out, float* workspace,
                         Stream stream) {
  if (d.b_numel == 0) return;
  const ReducePlan p = plan(d);
  require(out && (d.numel == 0 || g), "reduce_to_broadcast: null buffer");
  require(p.workspace == 0 || workspace, [&] {
    return "reduce_to_broadcast: the shape needs a workspace of " + std::to_string(p.workspace) + " floats, got none";
  });
  switch (p.kind) {
    case ReducePlan::zero: launch_product(d.b_numel, nullptr, nullptr, out, stream); break;
    case ReducePlan::copy: launch_product(d.numel, g, w, out, stream); break;
    case ReducePlan::rows: launch_rows(p, g, w, out, workspace, stream); break;
    case ReducePlan::columns: launch_columns(p, g, w, out, workspace, stream); break;
    case ReducePlan::general:
      DIFFUSE_LAUNCH(reduce_general, blocks_for(32 * d.b_numel), kThreads, 0, stream, make_general(d), g, w, out);
      break;
  }
}

int64_t sum_workspace(int64_t n) { return n > 0 ? plan_rows(1, n).workspace : 0; }

void sum(int64_t n, const float* x, float* out, float* workspace, Stream stream) {
  require(out && (n == 0 || x), "sum: null buffer");
  if (n == 0) return launch_product(1, nullptr, nullptr, out, stream);
  const ReducePlan p = plan_rows(1, n);
  require(p.workspace == 0 || workspace, [&] {
    return "sum: " + std::to_string(n) + " elements need a workspace of " + std::to_string(p.workspace) + " floats";
  });
  launch_rows(p, x, nullptr, out, workspace, stream);
}

}  // namespace diffuse::kernels::DIFFUSE_DEVICE_NS
