// What the two halves of the CUDA GroupNorm over NHWC share (see kernels/group_norm.h; the forward
// in group_norm_forward.cu, the backward in group_norm_backward.cu; both also run by the SIMT
// emulator): the block sizes, the pack loads and walks, the fixed-order reductions, and the launch
// plan — a pure function of the descriptor and the device, so that the workspace sizes either half
// reports agree with its launches. A group is the [S, C/G] slab of one image: S rows of a contiguous
// run of channels, row stride C.
//
// Every loop keeps four packs' loads in flight per thread (unrolled by 4) and walks its packs'
// (row, channel) without a division per pack (PackWalk).
// All accumulation is f32 per thread and tree-ordered (fixed, so results are reproducible); the
// cross-chunk and per-channel totals are in double. Loads are four-wide when C/G % 4 == 0 and the
// activation pointers are aligned to four elements (float4; 8 bytes of bf16). Group runs narrower
// than a 32-byte sector (C/G < 8) rely on L2 to share sectors between the G blocks of an image.
// Activations (x, y, dy, dx) are a template over the storage type (kernels/cuda/storage.cuh): f32,
// or bf16 read into f32 (the shared slab, the statistics and all math stay f32/f64) and rounded
// once on store; gamma, beta, add_nc and their grads are f32 either way. The plan depends on the
// storage type only in the one-read backward's choice; the workspace sizes are the f32 plan's
// (never smaller); bf16 vector loads need 8-byte alignment.
// Everything here has internal linkage (an anonymous namespace): each half compiles its own copy.
#pragma once
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

// What a second-pass block of a (chunks, G, N) grid works on, for both directions: its chunk k of
// `chunks`, group g and image n, taken in reverse block order so that the chunks the first pass
// read last (most likely still in L2) are read again first (blocks start in about linear index
// order on a GPU; either order is correct); the chunk's rows [s0, s0 + rows) of the slab; and the
// group's per-channel add_nc, γ and β, [cg] floats each at the start of dynamic shared memory.
struct ChunkBlock {
  int64_t k, g, n, chunks, s0, rows;
  float *chan_add, *chan_gamma, *chan_beta;
};
__device__ __forceinline__ ChunkBlock second_pass_block(int64_t chunk_rows, int64_t spatial, int cg) {
  const int64_t X = gridDim.x, Y = gridDim.y, Z = gridDim.z;
  const int64_t lin = X * Y * Z - 1 - (blockIdx.x + X * (blockIdx.y + Y * static_cast<int64_t>(blockIdx.z)));
  const int64_t k = lin % X, s0 = k * chunk_rows;
  float* chan = dynamic_smem<float>();
  return {k, (lin / X) % Y, lin / (X * Y), X, s0, min64(chunk_rows, spatial - s0), chan, chan + cg, chan + 2 * cg};
}

// ---- reductions (the one-read forward and the backward) ---------------------------------------

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

// ---- host side ---------------------------------------------------------------------------------

inline int64_t device_smem_limit() {
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
inline int64_t round_up_16(int64_t bytes) { return (bytes + 15) / 16 * 16; }

inline int64_t backward_slab_smem(const GroupNormDesc& d, int gpb, int vec, int block, int slabs, int64_t elem_bytes) {
  const int64_t W = gpb * d.group_size();
  const int64_t red = 3 * vec * reduce_slots(block, lanes_for(W / vec, block));
  return round_up_16(4 * gpb * static_cast<int64_t>(sizeof(double)) +
                     (4 * gpb + 6 * W + red) * static_cast<int64_t>(sizeof(float)) + slabs * d.spatial * W * elem_bytes);
}

// Groups per slab block: the fewest consecutive groups (a divisor of G) whose channel run fills a
// 32-byte sector, or all G.
inline int groups_per_block(const GroupNormDesc& d, int64_t elem_bytes) {
  for (int64_t k = 1; k < d.groups; ++k)
    if (d.groups % k == 0 && k * d.group_size() * elem_bytes >= 32) return static_cast<int>(k);
  return static_cast<int>(d.groups);
}

// The two-slab backward's block for a slab of `packs` packs: 32 or 64 threads for the small ones
// (see kTinyThreads), else 256.
inline int backward_slabs_block(int64_t packs) {
  return packs <= kTinyPacks ? kTinyThreads : packs <= kSmallPacks ? kSmallThreads : kThreads;
}

// The shared memory a block may use: the device's opt-in less the static arrays, or
// d.smem_limit_bytes (tests) where lower.
inline int64_t smem_limit(const GroupNormDesc& d) {
  const int64_t device_limit = device_smem_limit() - kStaticSmem;
  return d.smem_limit_bytes > 0 ? std::min(device_limit, d.smem_limit_bytes) : device_limit;
}

// The one-read forward's block over gpb groups (`packs` packs): as the backward's, but 1024
// threads from 4096 packs when the f32 slab takes over half the limit, so that a block has the SM
// to itself anyway (the `large` [16, 64x64, 256] f32: 128 KiB). Where two or more fit (bf16
// [128, 32x32, 128]: 64 KiB slabs over 4 groups), 256-thread blocks: at 64 registers a thread an
// SM holds 4 of them against one 1024-thread block, so 3 slabs share it instead of 1 (1024 such
// blocks took 8 waves of one block an SM).
inline int forward_block(const GroupNormDesc& d, int gpb, int64_t packs) {
  const int64_t slab_bytes = d.spatial * gpb * d.group_size() * static_cast<int64_t>(sizeof(float));
  return packs >= 4096 && slab_bytes > smem_limit(d) / 2 ? kBigThreads : backward_slabs_block(packs);
}

// Dynamic shared memory of gn_forward_slab over gpb groups (W = gpb·C/G channels) in layout vec.
inline int64_t forward_slab_smem(const GroupNormDesc& d, int gpb, int vec) {
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

inline void check_desc(const GroupNormDesc& d) {
  require(d.n >= 0 && d.spatial >= 0 && d.channels >= 0 && d.groups >= 1 && d.channels % d.groups == 0, [&] {
    return "group_norm: bad descriptor (n " + std::to_string(d.n) + ", spatial " + std::to_string(d.spatial) +
           ", channels " + std::to_string(d.channels) + ", groups " + std::to_string(d.groups) + ")";
  });
  require(d.n <= 65535 && d.groups <= 65535 && d.channels <= INT_MAX, [&] {
    return "group_norm: the CUDA kernels take at most 65535 images and groups, got n " + std::to_string(d.n) +
           ", groups " + std::to_string(d.groups);
  });
  require(d.eps >= 0, "group_norm: eps must be >= 0");
}

// elem_bytes: the activations' storage (4 f32, 2 bf16) and vec: the launch's pack width (4 or 1;
// 0: the larger of the two layouts' needs); the groups per block and the paths depend on them.
// The workspace sizes take the f32, vec 0 plan: a launch's plan never needs more (more groups a
// block fall back to one where they would not fit, and one group needs the least).
inline Plan make_plan(const GroupNormDesc& d, int64_t elem_bytes = 4, int vec = 0) {
  const int64_t device_limit = device_smem_limit() - kStaticSmem, limit = smem_limit(d);
  const int64_t cg = d.group_size(), S = d.spatial;
  require((cg + 2 * cg) * static_cast<int64_t>(sizeof(float)) <= device_limit, [&] {
    return "group_norm: a group of " + std::to_string(cg) + " channels is too wide for the CUDA kernels";
  });
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

}  // namespace
}  // namespace diffuse::kernels::DIFFUSE_DEVICE_NS
