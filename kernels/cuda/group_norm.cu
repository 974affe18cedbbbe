// CUDA GroupNorm over NHWC (see kernels/group_norm.h), also run by the SIMT emulator. A group is
// the [S, C/G] slab of one image: S rows of a contiguous run of channels, row stride C.
//
// Forward, the bytes it must move: x read, y written (2·NSC elements) plus the small per-channel
// vectors. One read (the slab as f32 plus per-channel scratch fits the block's shared memory: the
// benchmark's [16, 64x64, 256] f32, 128 KiB, and every ddpm-cifar10 / fmnist-small shape): grid (1,
// G/gpb, N), a block over gpb consecutive groups (1, or as many as fill a 32-byte sector when a
// group's channel run is narrower), 32 threads up to 128 channel packs, 64 up to 512 (small slabs:
// many blocks resident, see kTinyThreads), 1024 from 4096 where the slab takes over half the shared
// memory (a block that has the SM to itself), else 256. It reads x once (threads stride the rows
// with a fixed channel pack each), keeps h = x + add_nc in shared memory, reduces per-channel sums
// and then per group the mean, then the squared deviations from shared memory (an exact two-pass in
// f32, like the CPU's double two-pass), and writes y from shared memory: traffic the minimum.
// Forward, chunked (bigger slabs): grid (chunks, G, N), 256 threads, chunk ≈ 4096 elements. Pass
// 1 keeps its chunk in shared memory for an exact per-chunk (mean, M2); pass 2 merges the chunks'
// partials in double (Chan et al., fixed order) and normalises its chunk (in reverse block order,
// for L2): x read twice.
// Backward, the bytes it must move: x and dy read, dx written (3·NSC elements) plus the small
// per-channel vectors. Three paths, then a small kernel that reduces dγ and dβ over N in a fixed
// order from per-(n, c) sums (8 warps a block over every 8th image, then their partials in warp
// order): deterministic, no atomics. The two slab paths take one block per (n, run
// of consecutive groups): one group, or as many as fill a 32-byte sector when a group's channel
// run is narrower (C/G = 4 f32 or 4, 8 bf16: the ddpm-cifar10 shapes), so that no two blocks
// fetch the same sector.
//  - Two slabs (x's and dy's slabs in their storage type plus scratch fit half an SM's shared
//    memory, so two blocks share an SM: every ddpm-cifar10 / fmnist-small shape; bf16 halves the
//    slabs): 32, 64 or 256 threads, as the forward's. The per-channel sums Σ dŷ, Σ dŷ·x̂, Σ x̂
//    (dŷ = dy through the recomputed SiLU; threads stride the rows with a fixed channel each,
//    power-of-two lanes per row, then shuffle + shared-memory reduction) are reduced straight
//    from global memory while both slabs are copied into shared memory; then the group means of
//    dŷ·γ and dŷ·γ·x̂, and dx, dadd_nc (in closed form) and the per-(n, c) sums are written from
//    shared memory. Traffic: the minimum.
//  - dy's slab (fits the whole limit: e.g. the benchmark's [16, 64x64, 256] f32, 128 KiB of dy per
//    (n, g)): 1024 threads, a block may have the SM to itself. The same, but only dy is kept; x is
//    re-read for dx: the block's own slab, read microseconds before, so served by L2 (132 SMs ×
//    128 KiB = 17 MB in flight against a 50 MB L2). HBM traffic: the minimum.
//  - Chunked (bigger slabs): grid (chunks, G, N), 256 threads. Pass 1 reduces the same
//    per-channel sums over its chunk's rows; pass 2 sums the chunk partials and writes dx (chunk 0
//    the per-(n, c) sums and dadd_nc). Traffic 5·NSC: x and dy are read twice. Pass 2 visits the
//    blocks in reverse order so that the chunks pass 1 read last are re-read from L2.
// Every loop keeps four packs' loads in flight per thread (unrolled by 4) and walks its packs'
// (row, channel) without a division per pack (PackWalk).
// All accumulation is f32 per thread and tree-ordered (fixed, so results are reproducible); the
// cross-chunk and per-channel totals are in double. Loads are four-wide when C/G % 4 == 0 and the
// activation pointers are aligned to four elements (float4; 8 bytes of bf16). Group runs narrower than a 32-byte sector (C/G < 8)
// rely on L2 to share sectors between the G blocks of an image.
// Activations (x, y, dy, dx) are a template over the storage type (kernels/cuda/storage.cuh): f32,
// or bf16 read into f32 (the shared slab, the statistics and all math stay f32/f64) and rounded
// once on store; gamma, beta, add_nc and their grads are f32 either way. The plan depends on the
// storage type only in the one-read backward's choice; the workspace sizes are the f32 plan's
// (never smaller); bf16 vector loads need 8-byte alignment.
#include "kernels/compat.cuh"
#include "kernels/cuda/grid_helpers.cuh"
#include "kernels/cuda/storage.cuh"
#include "kernels/group_norm.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

namespace diffuse::kernels::DIFFUSE_DEVICE_NS {
namespace {

constexpr int kThreads = 256;          // chunked kernels, the two-slab backward
constexpr int kBigThreads = 1024;      // the dy-slab backward: one block may have the SM
// The one-read kernels over small slabs (the 4x4 .. 16x16 levels): a block per (n, group run)
// whose threads do one to eight packs, so that every block is a short chain of barriers and as
// many as possible are resident (the 64-register kernels fit 32 one-warp or 16 two-warp blocks
// an SM; 256-thread blocks only 4, so 4096 small blocks took 8 waves).
constexpr int kTinyThreads = 32;       // up to kTinyPacks packs
constexpr int64_t kTinyPacks = 128;
constexpr int kSmallThreads = 64;      // up to kSmallPacks packs
constexpr int64_t kSmallPacks = 512;
constexpr int kMaxWarps = 32;
constexpr int64_t kChunkElems = 4096;  // elements of an (n, g) slab one chunked block covers
constexpr int64_t kStaticSmem = 1024;  // reserved for the kernels' static shared arrays

// ---- device helpers ----------------------------------------------------------------------------

template <int VEC>
struct Pack {
  float v[VEC];
};

// VEC consecutive elements of p (f32 shared memory or S storage) as floats, and back.
template <int VEC, typename S>
__device__ __forceinline__ Pack<VEC> load_pack(const S* p) {
  Pack<VEC> r;
  if constexpr (VEC == 4) {
    storage::load4(p, 0, r.v);
  } else {
    r.v[0] = storage::load(p, 0);
  }
  return r;
}

template <int VEC, typename S>
__device__ __forceinline__ void store_pack(S* p, const Pack<VEC>& r) {
  if constexpr (VEC == 4)
    storage::store4(p, 0, r.v);
  else
    storage::store(p, 0, r.v[0]);
}

using storage::aligned4;
using grid::min64;
using grid::warp_sum;

__device__ __forceinline__ float sigmoid(float v) { return 1.0f / (1.0f + __expf(-v)); }

// d silu(v) / dv
__device__ __forceinline__ float silu_grad(float v) {
  const float s = sigmoid(v);
  return s * (1.0f + v * (1.0f - s));
}

// The packs e = tid, tid + T, tid + 2T, ... of a [rows, cgv] grid of packs (T = blockDim.x),
// as (row r, pack-in-row cv), stepped without a division: a 64-bit division per pack costs a GPU
// more than the pack's arithmetic.
struct PackWalk {
  int64_t r;
  int cv, dr, dcv, cgv;
  __device__ __forceinline__ PackWalk(int tid, int T, int packs_per_row)
      : r(tid / packs_per_row), cv(tid % packs_per_row), dr(T / packs_per_row), dcv(T % packs_per_row),
        cgv(packs_per_row) {}
  __device__ __forceinline__ void next() {
    r += dr;
    cv += dcv;
    if (cv >= cgv) {
      cv -= cgv;
      ++r;
    }
  }
};

// The block's sum, returned to every thread in the same (fixed) order: the warps' sums added in
// warp order (grid::block_sum instead adds them with a warp tree and needs a compile-time block
// size; group_norm's fused kernel picks its block size at run time). red holds kMaxWarps slots;
// the leading barrier lets a caller reuse red right after a previous call.
template <typename T>
__device__ __forceinline__ T block_sum_to_all(T v, T* red) {
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  T total = 0;
  for (int w = 0; w < warps; ++w) total += red[w];
  return total;
}

// The (chunk, group, image) a second-pass block of a (chunks, G, N) grid works on: the blocks in
// reverse order, so that the chunks the first pass read last (most likely still in L2) are read
// again first. Blocks start in about linear index order on a GPU; either order is correct.
struct ChunkIndex {
  int64_t k, g, n;
};
__device__ __forceinline__ ChunkIndex reversed_chunk() {
  const int64_t X = gridDim.x, Y = gridDim.y, Z = gridDim.z;
  const int64_t lin = X * Y * Z - 1 - (blockIdx.x + X * (blockIdx.y + Y * static_cast<int64_t>(blockIdx.z)));
  return {lin % X, (lin / X) % Y, lin / (X * Y)};
}

// ---- forward -----------------------------------------------------------------------------------

// Chunked pass 1. Grid (chunks, G, N), kThreads. Copies rows [k·chunk_rows, +rows) of the (n, g)
// slab, plus add_nc, into shared memory, reduces their exact (mean, M2) and writes them to the
// chunk's partial. Dynamic shared memory: (chunk_rows + 2) · C/G floats.
template <int VEC, typename S>
__global__ void __launch_bounds__(kThreads)
    gn_forward_stats(GroupNormDesc d, int64_t chunk_rows, const S* __restrict__ x,
                     const float* __restrict__ add_nc, float2* __restrict__ partial) {
  DIFFUSE_SHARED(float, red, kMaxWarps);
  const int64_t C = d.channels, Sp = d.spatial, G = d.groups;
  const int cg = static_cast<int>(C / G), cgv = cg / VEC;
  const int64_t k = blockIdx.x, g = blockIdx.y, n = blockIdx.z;
  const int64_t s0 = k * chunk_rows, rows = min64(chunk_rows, Sp - s0);
  const int tid = threadIdx.x, T = blockDim.x;
  float* slab = dynamic_smem<float>();   // [rows, cg]: h = x + add_nc
  float* chan_a = slab + chunk_rows * cg;  // [cg]: add_nc

  for (int c = tid; c < cg; c += T) chan_a[c] = add_nc ? add_nc[n * C + g * cg + c] : 0.0f;
  __syncthreads();
  const S* xg = x + (n * Sp + s0) * C + g * cg;
  const int64_t packs = rows * cgv;
  float local = 0.0f;
  PackWalk w(tid, T, cgv);
  DIFFUSE_UNROLL_BY(4)
  for (int64_t e = tid; e < packs; e += T, w.next()) {
    const int64_t r = w.r;
    const int cv = w.cv;
    Pack<VEC> h = load_pack<VEC>(xg + r * C + cv * VEC);
    DIFFUSE_UNROLL
    for (int j = 0; j < VEC; ++j) {
      h.v[j] += chan_a[cv * VEC + j];
      local += h.v[j];
    }
    store_pack<VEC>(slab + e * VEC, h);  // row r of the slab starts at r·cg = r·cgv·VEC
  }
  const float count = static_cast<float>(rows * cg);
  const float sum = block_sum_to_all(local, red);
  const float mean = rows > 0 ? sum / count : 0.0f;
  // Each thread revisits the packs it wrote, so no barrier is needed before this pass.
  local = 0.0f;
  DIFFUSE_UNROLL_BY(4)
  for (int64_t e = tid; e < packs; e += T) {
    const Pack<VEC> h = load_pack<VEC>(slab + e * VEC);
    DIFFUSE_UNROLL
    for (int j = 0; j < VEC; ++j) {
      const float dev = h.v[j] - mean;
      local += dev * dev;
    }
  }
  const float m2 = block_sum_to_all(local, red);
  if (tid == 0) partial[(n * G + g) * gridDim.x + k] = make_float2(mean, m2);
}

// Grid (chunks, G, N), kThreads. Warp 0 merges the chunk partials of (n, g) in double (every
// block of the group computes the same values in the same order); the block normalises its
// chunk, re-reading x. Chunk 0 writes mean/rstd. Dynamic shared memory: 3 · C/G floats.
template <int VEC, typename S>
__global__ void __launch_bounds__(kThreads)
    gn_forward_apply(GroupNormDesc d, int64_t chunk_rows, const S* __restrict__ x,
                     const float* __restrict__ add_nc, const float* __restrict__ gamma,
                     const float* __restrict__ beta, const float2* __restrict__ partial, S* __restrict__ y,
                     double* __restrict__ mean_out, double* __restrict__ rstd_out) {
  DIFFUSE_SHARED(double, stat, 2);
  const int64_t C = d.channels, Sp = d.spatial, G = d.groups;
  const int cg = static_cast<int>(C / G), cgv = cg / VEC;
  const ChunkIndex at = reversed_chunk();
  const int64_t k = at.k, g = at.g, n = at.n, chunks = gridDim.x;
  const int64_t s0 = k * chunk_rows, rows = min64(chunk_rows, Sp - s0);
  const int tid = threadIdx.x, T = blockDim.x;
  float* chan_add = dynamic_smem<float>();  // [cg] each
  float* chan_gamma = chan_add + cg;
  float* chan_beta = chan_gamma + cg;

  if (tid < 32) {
    const float2* pg = partial + (n * G + g) * chunks;
    const double total = static_cast<double>(Sp * cg);
    double weighted = 0.0;
    for (int64_t q = tid; q < chunks; q += 32)
      weighted += static_cast<double>(min64(chunk_rows, Sp - q * chunk_rows) * cg) * pg[q].x;
    weighted = warp_sum(weighted);
    const double mean = total > 0 ? weighted / total : 0.0;
    double m2 = 0.0;
    for (int64_t q = tid; q < chunks; q += 32) {
      const double nq = static_cast<double>(min64(chunk_rows, Sp - q * chunk_rows) * cg), dm = pg[q].x - mean;
      m2 += pg[q].y + nq * dm * dm;
    }
    m2 = warp_sum(m2);
    if (tid == 0) {
      stat[0] = mean;
      stat[1] = 1.0 / sqrt((total > 0 ? m2 / total : 0.0) + d.eps);
      if (k == 0) {
        mean_out[n * G + g] = stat[0];
        rstd_out[n * G + g] = stat[1];
      }
    }
  }
  for (int c = tid; c < cg; c += T) {
    chan_add[c] = add_nc ? add_nc[n * C + g * cg + c] : 0.0f;
    chan_gamma[c] = gamma[g * cg + c];
    chan_beta[c] = beta[g * cg + c];
  }
  __syncthreads();
  const float mean = static_cast<float>(stat[0]), rstd = static_cast<float>(stat[1]);
  const S* xg = x + (n * Sp + s0) * C + g * cg;
  S* yg = y + (n * Sp + s0) * C + g * cg;
  PackWalk w(tid, T, cgv);
  DIFFUSE_UNROLL_BY(4)
  for (int64_t e = tid; e < rows * cgv; e += T, w.next()) {
    const int64_t r = w.r;
    const int cv = w.cv;
    Pack<VEC> v = load_pack<VEC>(xg + r * C + cv * VEC);
    DIFFUSE_UNROLL
    for (int j = 0; j < VEC; ++j) {
      const int c = cv * VEC + j;
      const float a = (v.v[j] + chan_add[c] - mean) * rstd * chan_gamma[c] + chan_beta[c];
      v.v[j] = d.silu ? a * sigmoid(a) : a;
    }
    store_pack<VEC>(yg + r * C + cv * VEC, v);
  }
}

// ---- backward ----------------------------------------------------------------------------------

// dx for the VEC channels of pack cv, in place of dy's pack gp: rstd · (dŷ·γ − m1 − x̂·m2), with
// x̂ and the SiLU (for dŷ) recomputed from x's pack xp and the group's per-channel add, γ, β.
template <int VEC>
__device__ __forceinline__ void dx_pack(bool silu, int cv, const Pack<VEC>& xp, const float* chan_add,
                                        const float* chan_gamma, const float* chan_beta, float mean, float rstd,
                                        float m1, float m2, Pack<VEC>& gp) {
  DIFFUSE_UNROLL
  for (int j = 0; j < VEC; ++j) {
    const int c = cv * VEC + j;
    const float xh = (xp.v[j] + chan_add[c] - mean) * rstd;
    const float gv = silu ? gp.v[j] * silu_grad(xh * chan_gamma[c] + chan_beta[c]) : gp.v[j];
    gp.v[j] = rstd * (gv * chan_gamma[c] - m1 - xh * m2);
  }
}

// Slots per sum of channel_sums' shared scratch for a block of `block` threads and `lanes` lanes.
__host__ __device__ inline int reduce_slots(int block, int lanes) { return lanes < 32 ? block / 32 * lanes : block; }

// Lanes per row for a group of `packs` channel packs in a block of `block` threads: a power of
// two <= min(block, kThreads), >= packs where possible.
inline int lanes_for(int64_t packs, int block = kThreads) {
  int lanes = 1;
  while (lanes < packs && lanes < std::min(block, kThreads)) lanes *= 2;
  return lanes;
}

// The tail of a per-channel reduction over a channel tile (packs c0 .. c0 + lanes − 1 of cgv,
// lanes `L`, kBlock / L row-groups): thread t holds acc[q][j] for quantity q of channel
// (c0 + t % L)·VEC + j over its rows. Sums them over the row-groups — shuffled within a warp, then
// added across warps in order: a fixed tree — into out[q · width + channel] (threads 0..L-1
// write; the caller's barrier publishes). red: Q · VEC · reduce_slots(kBlock, L) floats.
template <int VEC, int kBlock, int Q>
__device__ __forceinline__ void reduce_columns(const float (&acc)[Q][VEC], int L, int c0, int cgv, int width,
                                               float* red, float* out) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, slots = reduce_slots(kBlock, L);
  // The previous tile's reads of red are done. (Several tiles occur only with lanes == kThreads,
  // where each thread reads back just its own slots, but the barrier keeps that from mattering.)
  __syncthreads();
  DIFFUSE_UNROLL
  for (int q = 0; q < Q; ++q)
    DIFFUSE_UNROLL
    for (int j = 0; j < VEC; ++j) {
      float v = acc[q][j];
      float* slot = red + (q * VEC + j) * slots;
      if (L < 32) {  // lanes l, l + L, l + 2L, ... of a warp share a channel
        for (int off = L; off < 32; off <<= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
        if (lane < L) slot[warp * L + lane] = v;
      } else {
        slot[tid] = v;
      }
    }
  __syncthreads();
  const int parts = L < 32 ? kBlock / 32 : kBlock / L;
  if (tid < L && c0 + tid < cgv) {
    DIFFUSE_UNROLL
    for (int q = 0; q < Q; ++q)
      DIFFUSE_UNROLL
      for (int j = 0; j < VEC; ++j) {
        const float* slot = red + (q * VEC + j) * slots;
        float s = 0.0f;
        for (int p = 0; p < parts; ++p) s += slot[p * L + tid];
        out[q * width + (c0 + tid) * VEC + j] = s;
      }
  }
}

// Per channel of `width` consecutive channels (one group, or several whole groups), over `rows`
// rows of x and dy (row strides x_stride, dy_stride elements; xg, dyg at the first channel):
// Σ dŷ, Σ dŷ·x̂ and Σ x̂ into out[3 · width] (written by threads 0..lanes-1; the caller's barrier
// publishes them). A source is global storage (stride C). gamma_w, beta_w, add_w: those channels'
// (add_w may be null); grp_mean, grp_rstd: their groups' statistics, group k = channel / (C/G).
// `lanes` (lanes_for) threads cover one row's packs; the kBlock / lanes row-groups stride the rows
// (four rows in flight per thread). Each sum is first shuffled across the row-groups of a warp,
// then added across warps in order: a fixed tree. red: 3 · VEC · reduce_slots(kBlock, lanes)
// floats of shared memory. Block of kBlock threads. x_copy, dy_copy (may be null): [rows, width]
// receive every pack read (the slab kernel's shared copies, made on the way).
template <int VEC, int kBlock, typename S>
__device__ __forceinline__ void channel_sums(const GroupNormDesc& d, int64_t rows, int width, int64_t x_stride,
                                             int64_t dy_stride, int lanes, const S* xg, const S* dyg,
                                             const float* gamma_g, const float* beta_g, const float* add_g,
                                             const float* grp_mean, const float* grp_rstd, float* red, float* out,
                                             S* x_copy, S* dy_copy) {
  const int group_size = static_cast<int>(d.channels / d.groups), cg = width, cgv = cg / VEC;
  const int tid = threadIdx.x;
  const int L = lanes, row_groups = kBlock / L, r0 = tid / L;
  for (int c0 = 0; c0 < cgv; c0 += L) {  // channel tiles (one unless the group is very wide)
    const int cv = c0 + tid % L;
    float acc[3][VEC];
    DIFFUSE_UNROLL
    for (int j = 0; j < VEC; ++j) acc[0][j] = acc[1][j] = acc[2][j] = 0.0f;
    if (cv < cgv) {
      float ga[VEC], be[VEC], ad[VEC];
      DIFFUSE_UNROLL
      for (int j = 0; j < VEC; ++j) {
        const int c = cv * VEC + j;
        ga[j] = gamma_g[c];
        be[j] = beta_g[c];
        ad[j] = add_g ? add_g[c] : 0.0f;
      }
      const int k = cv * VEC / group_size;  // a pack lies in one group (C/G % VEC == 0)
      const float mean = grp_mean[k], rstd = grp_rstd[k];
      DIFFUSE_UNROLL_BY(4)
      for (int64_t r = r0; r < rows; r += row_groups) {
        const Pack<VEC> xp = load_pack<VEC>(xg + r * x_stride + cv * VEC);
        const Pack<VEC> dp = load_pack<VEC>(dyg + r * dy_stride + cv * VEC);
        if (x_copy) store_pack<VEC>(x_copy + r * cg + cv * VEC, xp);
        if (dy_copy) store_pack<VEC>(dy_copy + r * cg + cv * VEC, dp);
        DIFFUSE_UNROLL
        for (int j = 0; j < VEC; ++j) {
          const float xh = (xp.v[j] + ad[j] - mean) * rstd;
          const float gv = d.silu ? dp.v[j] * silu_grad(xh * ga[j] + be[j]) : dp.v[j];
          acc[0][j] += gv;
          acc[1][j] += gv * xh;
          acc[2][j] += xh;
        }
      }
    }
    reduce_columns<VEC, kBlock, 3>(acc, L, c0, cgv, cg, red, out);
  }
}

// Forward, one read. Grid (1, G / gpb, N), kBlock threads; a block covers gpb consecutive groups
// (W = gpb · C/G channels: as the slab backwards choose them). Pass 1 reads x once (threads stride
// the rows with a fixed channel pack each, `lanes` per row, four rows in flight), keeps h = x +
// add_nc in shared memory as f32 and sums it per channel (reduce_columns); one thread per group
// adds its channels in order for the mean. Pass 2 sums (h − mean)² per channel from shared memory
// the same way (an exact two-pass, like the CPU's double one); rstd in double. Then y from shared
// memory: x read once, y written once. Dynamic shared memory: 4 · gpb + 4 · W + red_floats
// floats (red_floats = VEC · reduce_slots(kBlock, lanes)), then the slab, S · W floats.
template <int VEC, int kBlock, typename S>
__global__ void __launch_bounds__(kBlock, kBigThreads / kBlock)  // 64 registers a thread
    gn_forward_slab(GroupNormDesc d, int gpb, int lanes, int red_floats, const S* __restrict__ x,
                    const float* __restrict__ add_nc, const float* __restrict__ gamma,
                    const float* __restrict__ beta, S* __restrict__ y, double* __restrict__ mean_out,
                    double* __restrict__ rstd_out) {
  const int64_t C = d.channels, Sp = d.spatial, G = d.groups;
  const int cg = static_cast<int>(C / G), W = gpb * cg, Wv = W / VEC;
  const int64_t g0 = static_cast<int64_t>(blockIdx.y) * gpb, n = blockIdx.z, c_first = g0 * cg;
  const int tid = threadIdx.x, T = blockDim.x;
  const int L = lanes, row_groups = kBlock / L, r0 = tid / L;
  float* grp = dynamic_smem<float>();  // [4, gpb]: mean, rstd (f32), two spare rows for alignment
  float* colsum = grp + 4 * gpb;       // [W]: per-channel sums of pass 1, then of pass 2
  float* chan_add = colsum + W;        // [W] each
  float* chan_gamma = chan_add + W;
  float* chan_beta = chan_gamma + W;
  float* red = chan_beta + W;          // [red_floats]
  float* slab = red + red_floats;      // [Sp, W]: h = x + add_nc
  for (int c = tid; c < W; c += T) {
    chan_add[c] = add_nc ? add_nc[n * C + c_first + c] : 0.0f;
    chan_gamma[c] = gamma[c_first + c];
    chan_beta[c] = beta[c_first + c];
  }
  __syncthreads();
  const S* xg = x + n * Sp * C + c_first;
  for (int c0 = 0; c0 < Wv; c0 += L) {  // channel tiles (one unless the run is very wide)
    const int cv = c0 + tid % L;
    float acc[1][VEC];
    DIFFUSE_UNROLL
    for (int j = 0; j < VEC; ++j) acc[0][j] = 0.0f;
    if (cv < Wv) {
      DIFFUSE_UNROLL_BY(4)
      for (int64_t r = r0; r < Sp; r += row_groups) {
        Pack<VEC> h = load_pack<VEC>(xg + r * C + cv * VEC);
        DIFFUSE_UNROLL
        for (int j = 0; j < VEC; ++j) {
          h.v[j] += chan_add[cv * VEC + j];
          acc[0][j] += h.v[j];
        }
        store_pack<VEC>(slab + r * W + cv * VEC, h);
      }
    }
    reduce_columns<VEC, kBlock, 1>(acc, L, c0, Wv, W, red, colsum);
  }
  __syncthreads();  // publishes colsum and the slab
  const float count = static_cast<float>(Sp * cg);
  for (int k = tid; k < gpb; k += T) {
    float sum = 0.0f;
    for (int c = k * cg; c < (k + 1) * cg; ++c) sum += colsum[c];
    grp[k] = Sp > 0 ? sum / count : 0.0f;
  }
  __syncthreads();  // publishes the means (and every read of colsum is done)
  for (int c0 = 0; c0 < Wv; c0 += L) {
    const int cv = c0 + tid % L;
    float acc[1][VEC];
    DIFFUSE_UNROLL
    for (int j = 0; j < VEC; ++j) acc[0][j] = 0.0f;
    if (cv < Wv) {
      const float mean = grp[cv * VEC / cg];
      DIFFUSE_UNROLL_BY(4)
      for (int64_t r = r0; r < Sp; r += row_groups) {
        const Pack<VEC> h = load_pack<VEC>(slab + r * W + cv * VEC);
        DIFFUSE_UNROLL
        for (int j = 0; j < VEC; ++j) {
          const float dev = h.v[j] - mean;
          acc[0][j] += dev * dev;
        }
      }
    }
    reduce_columns<VEC, kBlock, 1>(acc, L, c0, Wv, W, red, colsum);
  }
  __syncthreads();
  for (int k = tid; k < gpb; k += T) {
    float m2 = 0.0f;
    for (int c = k * cg; c < (k + 1) * cg; ++c) m2 += colsum[c];
    const double var = Sp > 0 ? static_cast<double>(m2) / static_cast<double>(count) : 0.0;
    const double rstd_d = 1.0 / sqrt(var + d.eps);
    grp[gpb + k] = static_cast<float>(rstd_d);
    mean_out[n * G + g0 + k] = grp[k];
    rstd_out[n * G + g0 + k] = rstd_d;
  }
  __syncthreads();
  S* yg = y + n * Sp * C + c_first;
  const int packs = static_cast<int>(Sp * Wv);  // fits shared memory
  PackWalk wo(tid, T, Wv);
  DIFFUSE_UNROLL_BY(4)
  for (int e = tid; e < packs; e += T, wo.next()) {
    const int64_t r = wo.r;
    const int cv = wo.cv, k = cv * VEC / cg;
    const float mean = grp[k], rstd = grp[gpb + k];
    Pack<VEC> v = load_pack<VEC>(slab + static_cast<int64_t>(e) * VEC);
    DIFFUSE_UNROLL
    for (int j = 0; j < VEC; ++j) {
      const float a = (v.v[j] - mean) * rstd * chan_gamma[cv * VEC + j] + chan_beta[cv * VEC + j];
      v.v[j] = d.silu ? a * sigmoid(a) : a;
    }
    store_pack<VEC>(yg + r * C + cv * VEC, v);
  }
}

// Chunked pass 1. Grid (chunks, G, N), kThreads: the chunk's per-channel sums (channel_sums) into
// partial[n, g, k, 3, cg].
template <int VEC, typename S>
__global__ void __launch_bounds__(kThreads)
    gn_backward_partial(GroupNormDesc d, int64_t chunk_rows, int lanes, const S* __restrict__ x,
                        const float* __restrict__ add_nc, const float* __restrict__ gamma,
                        const float* __restrict__ beta, const double* __restrict__ mean_in,
                        const double* __restrict__ rstd_in, const S* __restrict__ dy,
                        float* __restrict__ partial) {
  DIFFUSE_SHARED(float, red, 3 * VEC * kThreads);
  const int64_t C = d.channels, Sp = d.spatial, G = d.groups, cg = C / G;
  const int64_t k = blockIdx.x, g = blockIdx.y, n = blockIdx.z, chunks = gridDim.x;
  const int64_t s0 = k * chunk_rows, rows = min64(chunk_rows, Sp - s0);
  const float mean = static_cast<float>(mean_in[n * G + g]), rstd = static_cast<float>(rstd_in[n * G + g]);
  channel_sums<VEC, kThreads>(d, rows, static_cast<int>(cg), C, C, lanes, x + (n * Sp + s0) * C + g * cg,
                              dy + (n * Sp + s0) * C + g * cg, gamma + g * cg, beta + g * cg,
                              add_nc ? add_nc + n * C + g * cg : nullptr, &mean, &rstd, red,
                              partial + ((n * G + g) * chunks + k) * 3 * cg, static_cast<S*>(nullptr),
                              static_cast<S*>(nullptr));
}

// One block per (n, run of gpb consecutive groups): grid (1, G / gpb, N), kBlock threads. gpb > 1
// when a group's channel run is narrower than a 32-byte sector (C/G · element size < 32), so that
// the block's row segments cover whole sectors instead of sharing them with other blocks through
// L2. The per-channel sums are reduced from global memory (channel_sums), which on the way copies
// dy's slab, and x's when kXInSmem, into shared memory in their storage type (bf16 stays bf16);
// then per group m1 = mean(dŷ·γ), m2 = mean(dŷ·γ·x̂) (one thread a group, channels in order,
// double), and nc_sums, dadd_nc and dx as gn_backward_apply writes them, x again from shared
// memory, or re-read from global memory: the block's own slab, read microseconds before, so from
// L2. Either way HBM sees x and dy read once and dx written once. Dynamic shared memory:
// 4 · gpb doubles, then 4 · gpb + 6 · W + red_floats floats (W = gpb · C/G, red_floats =
// 3 · VEC · reduce_slots(kBlock, lanes)), then the slabs, S · W elements of S each.
template <int VEC, int kBlock, bool kXInSmem, typename S>
__global__ void __launch_bounds__(kBlock, kBigThreads / kBlock)  // 64 registers a thread
    gn_backward_slab(GroupNormDesc d, int gpb, int lanes, int red_floats, const S* __restrict__ x,
                     const float* __restrict__ add_nc, const float* __restrict__ gamma,
                     const float* __restrict__ beta, const double* __restrict__ mean_in,
                     const double* __restrict__ rstd_in, const S* __restrict__ dy, S* __restrict__ dx,
                     float* __restrict__ nc_sums, float* __restrict__ dadd_nc) {
  const int64_t N = d.n, C = d.channels, Sp = d.spatial, G = d.groups;
  const int cg = static_cast<int>(C / G), W = gpb * cg, Wv = W / VEC;
  const int64_t g0 = static_cast<int64_t>(blockIdx.y) * gpb, n = blockIdx.z, c_first = g0 * cg;
  const int tid = threadIdx.x, T = blockDim.x;
  double* grp_d = dynamic_smem<double>();       // [4, gpb]: mean, rstd, m1, m2
  float* grp_f = reinterpret_cast<float*>(grp_d + 4 * gpb);  // [4, gpb]: the same in f32
  float* sums = grp_f + 4 * gpb;                 // [3, W]: Σ dŷ, Σ dŷ·x̂, Σ x̂
  float* chan_gamma = sums + 3 * W;              // [W] each
  float* chan_beta = chan_gamma + W;
  float* chan_add = chan_beta + W;
  float* red = chan_add + W;                        // [red_floats]: channel_sums' scratch
  S* dys = reinterpret_cast<S*>(red + red_floats);  // [Sp, W]: 16-byte aligned when C/G % 4 == 0
  S* xs = dys + Sp * W;                             // [Sp, W] when kXInSmem
  for (int k = tid; k < gpb; k += T) {
    grp_d[k] = mean_in[n * G + g0 + k];
    grp_d[gpb + k] = rstd_in[n * G + g0 + k];
    grp_f[k] = static_cast<float>(grp_d[k]);
    grp_f[gpb + k] = static_cast<float>(grp_d[gpb + k]);
  }
  for (int c = tid; c < W; c += T) {
    chan_gamma[c] = gamma[c_first + c];
    chan_beta[c] = beta[c_first + c];
    chan_add[c] = add_nc ? add_nc[n * C + c_first + c] : 0.0f;
  }
  __syncthreads();  // publishes the statistics and chan_*
  const S* xg = x + n * Sp * C + c_first;
  const S* dyg = dy + n * Sp * C + c_first;
  const int packs = static_cast<int>(Sp * Wv);  // fits shared memory, so far below 2^31
  channel_sums<VEC, kBlock>(d, Sp, W, C, C, lanes, xg, dyg, chan_gamma, chan_beta, chan_add, grp_f, grp_f + gpb,
                            red, sums, kXInSmem ? xs : static_cast<S*>(nullptr), dys);
  __syncthreads();  // publishes sums and the slabs

  const double count = static_cast<double>(Sp * cg);
  for (int k = tid; k < gpb; k += T) {  // the group means, channels in order
    double l1 = 0.0, l2 = 0.0;
    for (int c = k * cg; c < (k + 1) * cg; ++c) {
      l1 += chan_gamma[c] * static_cast<double>(sums[c]);
      l2 += chan_gamma[c] * static_cast<double>(sums[W + c]);
    }
    grp_d[2 * gpb + k] = count > 0 ? l1 / count : 0.0;
    grp_d[3 * gpb + k] = count > 0 ? l2 / count : 0.0;
    grp_f[2 * gpb + k] = static_cast<float>(grp_d[2 * gpb + k]);
    grp_f[3 * gpb + k] = static_cast<float>(grp_d[3 * gpb + k]);
  }
  for (int c = tid; c < W; c += T) {
    nc_sums[n * C + c_first + c] = sums[c];
    nc_sums[(N + n) * C + c_first + c] = sums[W + c];
  }
  __syncthreads();  // publishes m1, m2
  if (dadd_nc)
    for (int c = tid; c < W; c += T) {
      const int k = c / cg;
      dadd_nc[n * C + c_first + c] = static_cast<float>(
          grp_d[gpb + k] * (chan_gamma[c] * static_cast<double>(sums[c]) - static_cast<double>(Sp) * grp_d[2 * gpb + k] -
                            grp_d[3 * gpb + k] * static_cast<double>(sums[2 * W + c])));
    }
  S* dxg = dx + n * Sp * C + c_first;
  PackWalk wo(tid, T, Wv);
  DIFFUSE_UNROLL_BY(4)
  for (int e = tid; e < packs; e += T, wo.next()) {
    const int64_t r = wo.r;
    const int cv = wo.cv, k = cv * VEC / cg;
    const Pack<VEC> xp = kXInSmem ? load_pack<VEC>(xs + static_cast<int64_t>(e) * VEC)
                                  : load_pack<VEC>(xg + r * C + cv * VEC);
    Pack<VEC> gp = load_pack<VEC>(dys + static_cast<int64_t>(e) * VEC);
    dx_pack(d.silu, cv, xp, chan_add, chan_gamma, chan_beta, grp_f[k], grp_f[gpb + k], grp_f[2 * gpb + k],
            grp_f[3 * gpb + k], gp);
    store_pack<VEC>(dxg + r * C + cv * VEC, gp);
  }
}

// Grid (chunks, G, N), kThreads. Totals the chunk partials per channel (double, chunk order),
// m1 = mean over the group of dŷ·γ, m2 = mean of dŷ·γ·x̂, then for the chunk's rows
// dx = rstd · (dŷ·γ − m1 − x̂·m2). Chunk 0 writes nc_sums [2, N, C] (Σ dŷ, Σ dŷ·x̂ per (n, c))
// and dadd_nc = Σ_s dx = rstd · (γ·Σdŷ − S·m1 − m2·Σx̂). Dynamic shared memory: 3 · C/G floats.
template <int VEC, typename S>
__global__ void __launch_bounds__(kThreads)
    gn_backward_apply(GroupNormDesc d, int64_t chunk_rows, const S* __restrict__ x,
                      const float* __restrict__ add_nc, const float* __restrict__ gamma,
                      const float* __restrict__ beta, const double* __restrict__ mean_in,
                      const double* __restrict__ rstd_in, const S* __restrict__ dy,
                      const float* __restrict__ partial, S* __restrict__ dx, float* __restrict__ nc_sums,
                      float* __restrict__ dadd_nc) {
  DIFFUSE_SHARED(double, red, kMaxWarps);
  const int64_t N = d.n, C = d.channels, Sp = d.spatial, G = d.groups;
  const int cg = static_cast<int>(C / G), cgv = cg / VEC;
  const ChunkIndex at = reversed_chunk();
  const int64_t k = at.k, g = at.g, n = at.n, chunks = gridDim.x;
  const int64_t s0 = k * chunk_rows, rows = min64(chunk_rows, Sp - s0);
  const int tid = threadIdx.x, T = blockDim.x;
  float* chan_add = dynamic_smem<float>();  // [cg] each
  float* chan_gamma = chan_add + cg;
  float* chan_beta = chan_gamma + cg;
  const double mean_d = mean_in[n * G + g], rstd_d = rstd_in[n * G + g];
  const float* pg = partial + (n * G + g) * chunks * 3 * cg;

  double l1 = 0.0, l2 = 0.0;
  for (int c = tid; c < cg; c += T) {
    const int64_t gc = g * cg + c;
    const float ga = gamma[gc];
    chan_add[c] = add_nc ? add_nc[n * C + gc] : 0.0f;
    chan_gamma[c] = ga;
    chan_beta[c] = beta[gc];
    double sdy = 0.0, sdyx = 0.0;
    for (int64_t q = 0; q < chunks; ++q) {
      sdy += pg[(q * 3 + 0) * cg + c];
      sdyx += pg[(q * 3 + 1) * cg + c];
    }
    l1 += ga * sdy;
    l2 += ga * sdyx;
    if (k == 0) {
      nc_sums[n * C + gc] = static_cast<float>(sdy);
      nc_sums[(N + n) * C + gc] = static_cast<float>(sdyx);
    }
  }
  const double count = static_cast<double>(Sp * cg);
  const double s1 = block_sum_to_all(l1, red), s2 = block_sum_to_all(l2, red);  // their barriers publish chan_*
  const double m1_d = count > 0 ? s1 / count : 0.0, m2_d = count > 0 ? s2 / count : 0.0;
  if (k == 0 && dadd_nc) {
    for (int c = tid; c < cg; c += T) {
      double sdy = 0.0, sx = 0.0;
      for (int64_t q = 0; q < chunks; ++q) {
        sdy += pg[(q * 3 + 0) * cg + c];
        sx += pg[(q * 3 + 2) * cg + c];
      }
      dadd_nc[n * C + g * cg + c] =
          static_cast<float>(rstd_d * (chan_gamma[c] * sdy - static_cast<double>(Sp) * m1_d - m2_d * sx));
    }
  }
  const float mean = static_cast<float>(mean_d), rstd = static_cast<float>(rstd_d);
  const float m1 = static_cast<float>(m1_d), m2 = static_cast<float>(m2_d);
  const S* xg = x + (n * Sp + s0) * C + g * cg;
  const S* dyg = dy + (n * Sp + s0) * C + g * cg;
  S* dxg = dx + (n * Sp + s0) * C + g * cg;
  PackWalk w(tid, T, cgv);
  DIFFUSE_UNROLL_BY(4)
  for (int64_t e = tid; e < rows * cgv; e += T, w.next()) {
    const int64_t r = w.r;
    const int cv = w.cv;
    const Pack<VEC> xp = load_pack<VEC>(xg + r * C + cv * VEC);
    Pack<VEC> gp = load_pack<VEC>(dyg + r * C + cv * VEC);
    dx_pack(d.silu, cv, xp, chan_add, chan_gamma, chan_beta, mean, rstd, m1, m2, gp);
    store_pack<VEC>(dxg + r * C + cv * VEC, gp);
  }
}

// dβ = Σ_n Σdŷ, dγ = Σ_n Σdŷ·x̂ per channel, from the per-(n, c) sums [2, N, C]. Grid ⌈C / 32⌉,
// kThreads: lane l of warp w takes channel 32·blockIdx.x + l over the images n ≡ w (mod 8), in
// order, four images' loads in flight; then warp 0 adds the 8 partials in warp order. A fixed
// order (deterministic), and N / 8 loads a thread instead of N: at [128, ·, 256] one thread a
// channel waited out 128 L2 round trips in a row (~20 µs); now 8 blocks of 16 loads a thread.
constexpr int kParamSlices = kThreads / 32;
__global__ void __launch_bounds__(kThreads)
    gn_backward_params(int64_t N, int64_t C, const float* __restrict__ nc_sums, float* __restrict__ dgamma,
                       float* __restrict__ dbeta) {
  DIFFUSE_SHARED_2D(double, part, 2 * kParamSlices, 32);  // [q · slices + slice][lane]
  const int lane = threadIdx.x & 31, slice = threadIdx.x >> 5;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + lane;
  double sb = 0.0, sg = 0.0;
  if (c < C) {
    DIFFUSE_UNROLL_BY(4)
    for (int64_t n = slice; n < N; n += kParamSlices) {
      sb += nc_sums[n * C + c];
      sg += nc_sums[(N + n) * C + c];
    }
  }
  part[slice][lane] = sb;
  part[kParamSlices + slice][lane] = sg;
  __syncthreads();
  if (slice != 0 || c >= C) return;
  sb = 0.0, sg = 0.0;
  for (int w = 0; w < kParamSlices; ++w) {
    sb += part[w][lane];
    sg += part[kParamSlices + w][lane];
  }
  if (dgamma) dgamma[c] = static_cast<float>(sg);
  if (dbeta) dbeta[c] = static_cast<float>(sb);
}

// gn_backward_params over the descriptor's channels (nc_sums null when N = 0: zeros).
void launch_backward_params(const GroupNormDesc& d, const float* nc_sums, float* dgamma, float* dbeta,
                            Stream stream) {
  if (!dgamma && !dbeta) return;
  DIFFUSE_LAUNCH(gn_backward_params, static_cast<unsigned>((d.channels + 31) / 32), kThreads, 0, stream, d.n,
                 d.channels, nc_sums, dgamma, dbeta);
}

// ---- host side ---------------------------------------------------------------------------------

int64_t device_smem_limit() {
#if defined(__CUDACC__)
  int device = 0, bytes = 0;
  DIFFUSE_CUDA_CHECK(cudaGetDevice(&device));
  DIFFUSE_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return bytes;
#elif defined(DIFFUSE_EMULATED_DEVICE)
  return emulated_device::max_dynamic_smem_optin();  // the virtual sm_90 card: 227 KiB, as on a GPU
#else
  return 48 * 1024;  // the emulator: what every device grants without opting in
#endif
}

// The backward's three paths (GroupNormDesc::backward_path numbers them 1, 2, 3 for the tests).
enum class BackwardPath { slabs = 1, dy_slab = 2, chunked = 3 };

// Dynamic shared memory of gn_backward_slab over gpb groups (W = gpb·C/G channels): the groups'
// statistics, per-channel floats, channel_sums' scratch, `slabs` slabs of S·W elements of
// elem_bytes each.
// Dynamic shared memory sizes are rounded up to 16 bytes. A GPU starts the buffer 16-byte aligned
// whatever its size; the SIMT emulator aligns its start only as far as the size allows (so that an
// overrun faults at once), and the layouts below need 8 bytes (the doubles) and 16 (vector loads).
int64_t round_up_16(int64_t bytes) { return (bytes + 15) / 16 * 16; }

int64_t backward_slab_smem(const GroupNormDesc& d, int gpb, int vec, int block, int slabs, int64_t elem_bytes) {
  const int64_t W = gpb * d.group_size();
  const int64_t red = 3 * vec * reduce_slots(block, lanes_for(W / vec, block));
  return round_up_16(4 * gpb * static_cast<int64_t>(sizeof(double)) +
                     (4 * gpb + 6 * W + red) * static_cast<int64_t>(sizeof(float)) + slabs * d.spatial * W * elem_bytes);
}

// Groups per slab block: the fewest consecutive groups (a divisor of G) whose channel run fills a
// 32-byte sector, or all G.
int groups_per_block(const GroupNormDesc& d, int64_t elem_bytes) {
  for (int64_t k = 1; k < d.groups; ++k)
    if (d.groups % k == 0 && k * d.group_size() * elem_bytes >= 32) return static_cast<int>(k);
  return static_cast<int>(d.groups);
}

// The two-slab backward's block for a slab of `packs` packs: 32 or 64 threads for the small ones
// (see kTinyThreads), else 256.
int backward_slabs_block(int64_t packs) {
  return packs <= kTinyPacks ? kTinyThreads : packs <= kSmallPacks ? kSmallThreads : kThreads;
}

// The shared memory a block may use: the device's opt-in less the static arrays, or
// d.smem_limit_bytes (tests) where lower.
int64_t smem_limit(const GroupNormDesc& d) {
  const int64_t device_limit = device_smem_limit() - kStaticSmem;
  return d.smem_limit_bytes > 0 ? std::min(device_limit, d.smem_limit_bytes) : device_limit;
}

// The one-read forward's block over gpb groups (`packs` packs): as the backward's, but 1024
// threads from 4096 packs when the f32 slab takes over half the limit, so that a block has the SM
// to itself anyway (the `large` [16, 64x64, 256] f32: 128 KiB). Where two or more fit (bf16
// [128, 32x32, 128]: 64 KiB slabs over 4 groups), 256-thread blocks: at 64 registers a thread an
// SM holds 4 of them against one 1024-thread block, so 3 slabs share it instead of 1 (1024 such
// blocks took 8 waves of one block an SM).
int forward_block(const GroupNormDesc& d, int gpb, int64_t packs) {
  const int64_t slab_bytes = d.spatial * gpb * d.group_size() * static_cast<int64_t>(sizeof(float));
  return packs >= 4096 && slab_bytes > smem_limit(d) / 2 ? kBigThreads : backward_slabs_block(packs);
}

// Dynamic shared memory of gn_forward_slab over gpb groups (W = gpb·C/G channels) in layout vec.
int64_t forward_slab_smem(const GroupNormDesc& d, int gpb, int vec) {
  const int64_t W = gpb * d.group_size(), Wv = W / vec;
  const int block = forward_block(d, gpb, d.spatial * Wv);
  const int64_t red = vec * reduce_slots(block, lanes_for(Wv, block));
  return round_up_16((4 * gpb + 4 * W + red + d.spatial * W) * static_cast<int64_t>(sizeof(float)));
}

// How a descriptor is split into blocks; a pure function of d and the device, so the workspace
// sizes agree with the launches.
struct Plan {
  bool fused = false;      // forward: the whole slab in one block's shared memory
  int fwd_gpb = 1;         // groups per block of the one-read forward
  int64_t chunk_rows = 1;  // rows per block of the chunked kernels
  int64_t chunks = 1;      // chunked blocks per (n, g)
  BackwardPath bwd = BackwardPath::chunked;
  int gpb = 1;  // groups per block of the slab backwards
};

void check_desc(const GroupNormDesc& d) {
  require(d.n >= 0 && d.spatial >= 0 && d.channels >= 0 && d.groups >= 1 && d.channels % d.groups == 0,
          "group_norm: bad descriptor (n " + std::to_string(d.n) + ", spatial " + std::to_string(d.spatial) +
              ", channels " + std::to_string(d.channels) + ", groups " + std::to_string(d.groups) + ")");
  require(d.n <= 65535 && d.groups <= 65535 && d.channels <= INT_MAX,
          "group_norm: the CUDA kernels take at most 65535 images and groups, got n " + std::to_string(d.n) +
              ", groups " + std::to_string(d.groups));
  require(d.eps >= 0, "group_norm: eps must be >= 0");
}

// elem_bytes: the activations' storage (4 f32, 2 bf16) and vec: the launch's pack width (4 or 1;
// 0: the larger of the two layouts' needs); the groups per block and the paths depend on them.
// The workspace sizes take the f32, vec 0 plan: a launch's plan never needs more (more groups a
// block fall back to one where they would not fit, and one group needs the least).
Plan make_plan(const GroupNormDesc& d, int64_t elem_bytes = 4, int vec = 0) {
  const int64_t device_limit = device_smem_limit() - kStaticSmem, limit = smem_limit(d);
  const int64_t cg = d.group_size(), S = d.spatial;
  require((cg + 2 * cg) * static_cast<int64_t>(sizeof(float)) <= device_limit,
          "group_norm: a group of " + std::to_string(cg) + " channels is too wide for the CUDA kernels");
  Plan p;
  // One-read forward: over the groups a block covers (as many as fill a sector), or one group if
  // those do not fit; the bytes of the given layout (vec), or the larger of both (vec 0).
  const auto fwd_bytes = [&](int gpb) {
    if (vec != 0) return forward_slab_smem(d, gpb, vec);
    int64_t b = forward_slab_smem(d, gpb, 1);
    if (cg % 4 == 0) b = std::max(b, forward_slab_smem(d, gpb, 4));
    return b;
  };
  p.fwd_gpb = groups_per_block(d, elem_bytes);
  if (fwd_bytes(p.fwd_gpb) > limit) p.fwd_gpb = 1;
  p.fused = S * cg * p.fwd_gpb <= INT_MAX && fwd_bytes(p.fwd_gpb) <= limit;
  const int64_t chunk_elems = std::clamp<int64_t>(limit / static_cast<int64_t>(sizeof(float)), 1, kChunkElems);
  p.chunk_rows = std::max<int64_t>(1, chunk_elems / std::max<int64_t>(cg, 1));
  p.chunks = std::max<int64_t>(1, (S + p.chunk_rows - 1) / p.chunk_rows);
  require(p.chunks <= INT_MAX, "group_norm: too many positions for the CUDA kernels");
  // Backward: both slabs in shared memory when such a block leaves room for a second one on the
  // SM (a block that has the SM to itself alternates between loading and reducing); else dy's
  // slab alone, in a 1024-thread block that may have the SM to itself (its x re-read is served by
  // L2); else chunked.
  // Several groups a block when a group's run is narrower than a sector, if that still fits.
  const auto slab_bytes = [&](int block, int slabs) {
    if (vec != 0) return backward_slab_smem(d, p.gpb, vec, block, slabs, elem_bytes);
    int64_t b = backward_slab_smem(d, p.gpb, 1, block, slabs, elem_bytes);
    if (cg % 4 == 0) b = std::max(b, backward_slab_smem(d, p.gpb, 4, block, slabs, elem_bytes));
    return b;
  };
  p.gpb = groups_per_block(d, elem_bytes);
  if (slab_bytes(kBigThreads, 1) > limit) p.gpb = 1;
  const bool packs_fit = S * cg * p.gpb <= INT_MAX;
  const bool slabs = packs_fit && slab_bytes(kThreads, 2) <= limit / 2;
  const bool dy_slab = packs_fit && slab_bytes(kBigThreads, 1) <= limit;
  switch (d.backward_path) {
    case 0:
      p.bwd = slabs ? BackwardPath::slabs : dy_slab ? BackwardPath::dy_slab : BackwardPath::chunked;
      break;
    case 1:  // a forced path is checked where the launch knows its layout (vec != 0)
      require(vec == 0 || (packs_fit && slab_bytes(kThreads, 2) <= limit),
              "group_norm: the forced one-read backward does not fit");
      p.bwd = BackwardPath::slabs;
      break;
    case 2:
      require(vec == 0 || dy_slab, "group_norm: the forced dy-slab backward does not fit");
      p.bwd = BackwardPath::dy_slab;
      break;
    case 3:
      p.bwd = BackwardPath::chunked;
      break;
    default:
      require(false, "group_norm: backward_path must be 0..3, got " + std::to_string(d.backward_path));
  }
  return p;
}

// gn_forward_slab over gpb groups a block in blocks of kBlock threads: grid (1, G / gpb, N).
template <int VEC, int kBlock, typename S>
void launch_forward_slab(const GroupNormDesc& d, int gpb, const S* x, const float* add_nc, const float* gamma,
                         const float* beta, S* y, double* mean, double* rstd, Stream stream) {
  const int lanes = lanes_for(gpb * d.group_size() / VEC, kBlock), red = VEC * reduce_slots(kBlock, lanes);
  const dim3 runs_images(1, static_cast<unsigned>(d.groups / gpb), static_cast<unsigned>(d.n));
  DIFFUSE_LAUNCH((gn_forward_slab<VEC, kBlock, S>), runs_images, kBlock,
                 static_cast<size_t>(forward_slab_smem(d, gpb, VEC)), stream, d, gpb, lanes, red, x, add_nc, gamma,
                 beta, y, mean, rstd);
}

// gn_backward_slab over gpb groups a block in blocks of kBlock threads: grid (1, G / gpb, N); x's
// slab in shared memory too, except in the 1024-thread dy-slab block.
template <int VEC, int kBlock, typename S>
void launch_backward_slab(const GroupNormDesc& d, int gpb, const S* x, const float* add_nc, const float* gamma,
                          const float* beta, const double* mean, const double* rstd, const S* dy, S* dx,
                          float* nc_sums, float* dadd_nc, Stream stream) {
  constexpr bool kXInSmem = kBlock != kBigThreads;
  const int lanes = lanes_for(gpb * d.group_size() / VEC, kBlock), red = 3 * VEC * reduce_slots(kBlock, lanes);
  const dim3 runs_images(1, static_cast<unsigned>(d.groups / gpb), static_cast<unsigned>(d.n));
  const size_t smem =
      static_cast<size_t>(backward_slab_smem(d, gpb, VEC, kBlock, kXInSmem ? 2 : 1, static_cast<int64_t>(sizeof(S))));
  DIFFUSE_LAUNCH((gn_backward_slab<VEC, kBlock, kXInSmem, S>), runs_images, kBlock, smem, stream, d, gpb, lanes, red,
                 x, add_nc, gamma, beta, mean, rstd, dy, dx, nc_sums, dadd_nc);
}

template <int VEC, typename S>
void forward_impl(const GroupNormDesc& d, const Plan& p, const S* x, const float* add_nc, const float* gamma,
                  const float* beta, S* y, double* mean, double* rstd, void* workspace, Stream stream) {
  const int64_t cg = d.group_size();
  if (p.fused) {
    const int gpb = p.fwd_gpb;
    switch (forward_block(d, gpb, d.spatial * (gpb * cg / VEC))) {
      case kTinyThreads:
        launch_forward_slab<VEC, kTinyThreads>(d, gpb, x, add_nc, gamma, beta, y, mean, rstd, stream);
        break;
      case kSmallThreads:
        launch_forward_slab<VEC, kSmallThreads>(d, gpb, x, add_nc, gamma, beta, y, mean, rstd, stream);
        break;
      case kThreads:
        launch_forward_slab<VEC, kThreads>(d, gpb, x, add_nc, gamma, beta, y, mean, rstd, stream);
        break;
      default:
        launch_forward_slab<VEC, kBigThreads>(d, gpb, x, add_nc, gamma, beta, y, mean, rstd, stream);
    }
    return;
  }
  const dim3 grid(static_cast<unsigned>(p.chunks), static_cast<unsigned>(d.groups), static_cast<unsigned>(d.n));
  float2* partial = static_cast<float2*>(workspace);
  DIFFUSE_LAUNCH((gn_forward_stats<VEC, S>), grid, kThreads,
                 static_cast<size_t>((p.chunk_rows + 2) * cg) * sizeof(float), stream, d, p.chunk_rows, x, add_nc,
                 partial);
  DIFFUSE_LAUNCH((gn_forward_apply<VEC, S>), grid, kThreads, static_cast<size_t>(3 * cg) * sizeof(float), stream, d,
                 p.chunk_rows, x, add_nc, gamma, beta, static_cast<const float2*>(partial), y, mean, rstd);
}

template <int VEC, typename S>
void backward_impl(const GroupNormDesc& d, const Plan& p, const S* x, const float* add_nc, const float* gamma,
                   const float* beta, const double* mean, const double* rstd, const S* dy, S* dx,
                   float* dgamma, float* dbeta, float* dadd_nc, void* workspace, Stream stream) {
  const int64_t cg = d.group_size();
  if (p.bwd != BackwardPath::chunked) {
    float* nc_sums = static_cast<float*>(workspace);  // [2, N, C]
    const int64_t packs = d.spatial * (p.gpb * cg / VEC);
    switch (p.bwd == BackwardPath::slabs ? backward_slabs_block(packs) : kBigThreads) {
      case kTinyThreads:
        launch_backward_slab<VEC, kTinyThreads>(d, p.gpb, x, add_nc, gamma, beta, mean, rstd, dy, dx, nc_sums,
                                                dadd_nc, stream);
        break;
      case kSmallThreads:
        launch_backward_slab<VEC, kSmallThreads>(d, p.gpb, x, add_nc, gamma, beta, mean, rstd, dy, dx, nc_sums,
                                                 dadd_nc, stream);
        break;
      case kThreads:
        launch_backward_slab<VEC, kThreads>(d, p.gpb, x, add_nc, gamma, beta, mean, rstd, dy, dx, nc_sums, dadd_nc,
                                            stream);
        break;
      default:
        launch_backward_slab<VEC, kBigThreads>(d, p.gpb, x, add_nc, gamma, beta, mean, rstd, dy, dx, nc_sums,
                                               dadd_nc, stream);
    }
    launch_backward_params(d, nc_sums, dgamma, dbeta, stream);
    return;
  }
  float* partial = static_cast<float*>(workspace);  // [N, G, chunks, 3, cg]
  float* nc_sums = partial + d.n * d.channels * p.chunks * 3;  // [2, N, C]
  const dim3 grid(static_cast<unsigned>(p.chunks), static_cast<unsigned>(d.groups), static_cast<unsigned>(d.n));
  DIFFUSE_LAUNCH((gn_backward_partial<VEC, S>), grid, kThreads, 0, stream, d, p.chunk_rows, lanes_for(cg / VEC), x,
                 add_nc, gamma,
                 beta, mean, rstd, dy, partial);
  DIFFUSE_LAUNCH((gn_backward_apply<VEC, S>), grid, kThreads, static_cast<size_t>(3 * cg) * sizeof(float), stream, d,
                 p.chunk_rows, x, add_nc, gamma, beta, mean, rstd, dy, static_cast<const float*>(partial), dx,
                 nc_sums, dadd_nc);
  launch_backward_params(d, nc_sums, dgamma, dbeta, stream);
}

template <typename S>
void forward_entry(const GroupNormDesc& d, const S* x, const float* add_nc, const float* gamma, const float* beta,
                   S* y, double* mean, double* rstd, void* workspace, Stream stream) {
  check_desc(d);
  if (d.n == 0 || d.channels == 0) return;
  require(gamma && beta && mean && rstd && (d.spatial == 0 || (x && y)), "group_norm: null buffer");
  const int64_t elem = static_cast<int64_t>(sizeof(S));
  const bool four = d.group_size() % 4 == 0 && aligned4(x) && aligned4(y);
  const Plan p = make_plan(d, elem, four ? 4 : 1);
  require(p.fused || workspace, "group_norm: the chunked forward needs its workspace");
  if (four)
    forward_impl<4>(d, p, x, add_nc, gamma, beta, y, mean, rstd, workspace, stream);
  else
    forward_impl<1>(d, p, x, add_nc, gamma, beta, y, mean, rstd, workspace, stream);
}

template <typename S>
void backward_entry(const GroupNormDesc& d, const S* x, const float* add_nc, const float* gamma, const float* beta,
                    const double* mean, const double* rstd, const S* dy, S* dx, float* dgamma, float* dbeta,
                    float* dadd_nc, void* workspace, Stream stream) {
  check_desc(d);
  if (d.channels == 0) return;
  if (d.n == 0) {  // nothing to reduce: the parameter grads are zeros
    launch_backward_params(d, nullptr, dgamma, dbeta, stream);
    return;
  }
  require(gamma && beta && mean && rstd && workspace && (d.spatial == 0 || (x && dy && dx)),
          "group_norm backward: null buffer");
  const int64_t elem = static_cast<int64_t>(sizeof(S));
  if (d.group_size() % 4 == 0 && aligned4(x) && aligned4(dy) && aligned4(dx))
    backward_impl<4>(d, make_plan(d, elem, 4), x, add_nc, gamma, beta, mean, rstd, dy, dx, dgamma, dbeta, dadd_nc,
                     workspace, stream);
  else
    backward_impl<1>(d, make_plan(d, elem, 1), x, add_nc, gamma, beta, mean, rstd, dy, dx, dgamma, dbeta, dadd_nc,
                     workspace, stream);
}

}  // namespace

size_t group_norm_forward_workspace_bytes(const GroupNormDesc& d) {
  check_desc(d);
  const Plan p = make_plan(d);
  return p.fused ? 0 : static_cast<size_t>(d.n * d.groups * p.chunks) * 2 * sizeof(float);
}

size_t group_norm_backward_workspace_bytes(const GroupNormDesc& d) {
  check_desc(d);
  const Plan p = make_plan(d);
  return static_cast<size_t>(d.n * d.channels * (p.bwd != BackwardPath::chunked ? 2 : 3 * p.chunks + 2)) *
         sizeof(float);
}

void group_norm_forward(const GroupNormDesc& d, const float* x, const float* add_nc, const float* gamma,
                        const float* beta, float* y, double* mean, double* rstd, void* workspace, Stream stream) {
  forward_entry(d, x, add_nc, gamma, beta, y, mean, rstd, workspace, stream);
}

void group_norm_forward(const GroupNormDesc& d, const uint16_t* x, const float* add_nc, const float* gamma,
                        const float* beta, uint16_t* y, double* mean, double* rstd, void* workspace, Stream stream) {
  forward_entry(d, storage::dev(x), add_nc, gamma, beta, storage::dev(y), mean, rstd, workspace, stream);
}

void group_norm_backward(const GroupNormDesc& d, const float* x, const float* add_nc, const float* gamma,
                         const float* beta, const double* mean, const double* rstd, const float* dy, float* dx,
                         float* dgamma, float* dbeta, float* dadd_nc, void* workspace, Stream stream) {
  backward_entry(d, x, add_nc, gamma, beta, mean, rstd, dy, dx, dgamma, dbeta, dadd_nc, workspace, stream);
}

void group_norm_backward(const GroupNormDesc& d, const uint16_t* x, const float* add_nc, const float* gamma,
                         const float* beta, const double* mean, const double* rstd, const uint16_t* dy, uint16_t* dx,
                         float* dgamma, float* dbeta, float* dadd_nc, void* workspace, Stream stream) {
  backward_entry(d, storage::dev(x), add_nc, gamma, beta, mean, rstd, storage::dev(dy), storage::dev(dx), dgamma,
                 dbeta, dadd_nc, workspace, stream);
}

}  // namespace diffuse::kernels::DIFFUSE_DEVICE_NS
