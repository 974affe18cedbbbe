// The small CUDA device helpers every kernel family shares, defined once here: launch sizing (a
// capped block count, or one full wave of a grid-stride kernel), the
// grid-stride float4-with-scalar-tail loop, aligned float4 loads and stores, and deterministic warp
// and block sums. Include after kernels/compat.cuh. Every sum here adds in a fixed order that depends
// only on the block shape, never on scheduling, so a reduction gives the same bits on every run.
#pragma once
#include <algorithm>
#include <cstdint>
#include <mutex>
#include <vector>

namespace diffuse::kernels::DIFFUSE_DEVICE_NS::grid {

constexpr int kThreads = 256;          // threads per block for 1-D launches
constexpr int64_t kMaxBlocks = 4096;   // ~31 blocks per SM on a 132-SM H100; the rest grid-strides
constexpr unsigned kFullMask = 0xffffffffu;

#if defined(DIFFUSE_EMULATOR)
// Emulator tests lower the block cap so that tiny shapes still run every grid-stride and
// block-loop path more than once (a real launch of kMaxBlocks blocks would be far too slow here).
inline int64_t& test_block_cap() {
  static int64_t cap = 0;  // 0: no override
  return cap;
}
struct ScopedBlockCap {
  int64_t saved;
  explicit ScopedBlockCap(int64_t cap) : saved(test_block_cap()) { test_block_cap() = cap; }
  ~ScopedBlockCap() { test_block_cap() = saved; }
};
#endif

// Blocks for `items` work items of `per_block` each, capped (grid-stride loops do the rest).
inline int blocks_for(int64_t items, int64_t per_block = kThreads, int64_t cap = kMaxBlocks) {
  if (items <= 0) return 0;
#if defined(DIFFUSE_EMULATOR)
  if (test_block_cap() > 0) cap = std::min(cap, test_block_cap());
#endif
  return static_cast<int>(std::min<int64_t>((items + per_block - 1) / per_block, cap));
}

#if defined(__CUDACC__)
// One wave of `kernel` at `threads` a block on the current device: SMs × its resident blocks per
// SM. Asked of the runtime once per (kernel, threads, device) and remembered: the occupancy query
// costs microseconds, and an eager step launches these kernels hundreds of times.
template <typename Kernel>
inline int64_t wave_size(Kernel kernel, int threads) {
  int device = 0;
  DIFFUSE_CUDA_CHECK(cudaGetDevice(&device));
  struct Entry {
    const void* kernel;
    int threads, device;
    int64_t wave;
  };
  static std::mutex mutex;
  static std::vector<Entry> known;
  const void* key = reinterpret_cast<const void*>(kernel);
  std::lock_guard<std::mutex> lock(mutex);
  for (const Entry& e : known)
    if (e.kernel == key && e.threads == threads && e.device == device) return e.wave;
  int sms = 0, per_sm = 0;
  DIFFUSE_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  DIFFUSE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0));
  const int64_t wave = static_cast<int64_t>(sms) * std::max(per_sm, 1);
  known.push_back({key, threads, device, wave});
  return wave;
}
#endif

// Blocks for a grid-stride kernel that covers `items` work items of `per_block` each: on a GPU,
// as many as the device holds at once (wave_size), so the grid is exactly one wave and every
// thread strides the same number of times (no partly filled last wave); fewer when the items need
// fewer. Under the emulator: blocks_for(items, per_block, emu_cap).
template <typename Kernel>
inline int wave_blocks(Kernel kernel, int threads, int64_t items, int64_t per_block, int64_t emu_cap = kMaxBlocks) {
#if defined(__CUDACC__)
  (void)emu_cap;
  if (items <= 0) return 0;
  return static_cast<int>(std::min<int64_t>((items + per_block - 1) / per_block, wave_size(kernel, threads)));
#else
  (void)kernel;
  (void)threads;
  return blocks_for(items, per_block, emu_cap);
#endif
}

__host__ __device__ inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// std::min is host-only under nvcc (without --expt-relaxed-constexpr).
__device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

__device__ __forceinline__ int64_t global_thread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_threads() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// Element q of p seen as float4s: elements 4q..4q+3, p 16-byte aligned (callers check aligned16).
// As a float4, or unpacked into / packed from four floats.
__device__ __forceinline__ float4 load4(const float* p, int64_t q) { return reinterpret_cast<const float4*>(p)[q]; }
__device__ __forceinline__ void store4(float* p, int64_t q, float4 v) { reinterpret_cast<float4*>(p)[q] = v; }
__device__ __forceinline__ void load4(const float* p, int64_t q, float (&x)[4]) {
  const float4 v = load4(p, q);
  x[0] = v.x, x[1] = v.y, x[2] = v.z, x[3] = v.w;
}
__device__ __forceinline__ void store4(float* p, int64_t q, const float (&x)[4]) {
  store4(p, q, make_float4(x[0], x[1], x[2], x[3]));
}

// Grid-stride over n elements: f4(q) for each whole float4 q (elements 4q..4q+3) when `vector`,
// then f1(i) for the scalar tail (or for every element when not `vector`).
template <typename F4, typename F1>
__device__ __forceinline__ void for_each_element(int64_t n, bool vector, F4&& f4, F1&& f1) {
  const int64_t stride = grid_threads(), first = global_thread();
  const int64_t n4 = vector ? n / 4 : 0;
  for (int64_t q = first; q < n4; q += stride) f4(q);
  for (int64_t i = 4 * n4 + first; i < n; i += stride) f1(i);
}

// Sum over the 32 lanes of a full warp: a fixed butterfly (xor) tree, so every lane gets the total
// with the same bits (each lane adds the same pairs, only the operands of some additions swapped,
// and float addition is commutative). Lane 0's additions are exactly a shuffle-down tree's.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  DIFFUSE_UNROLL
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

// Sum over a 1-D block of exactly kBlock threads (a multiple of 32): warp sums, one partial per
// warp in shared memory, then warp 0 adds the partials in warp order. The result is valid in
// thread 0. Every thread must call it (it has barriers); it may be called again in the same kernel.
template <typename T, int kBlock>
__device__ __forceinline__ T block_sum(T v) {
  static_assert(kBlock % 32 == 0 && kBlock <= 1024, "block_sum: the block is whole warps");
  DIFFUSE_SHARED(T, partial, kBlock / 32);
  v = warp_sum(v);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  T total = T(0);
  if (warp == 0) {
    total = lane < kBlock / 32 ? partial[lane] : T(0);
    total = warp_sum(total);
  }
  __syncthreads();  // partial[] may be reused by a later call
  return total;
}

}  // namespace diffuse::kernels::DIFFUSE_DEVICE_NS::grid
