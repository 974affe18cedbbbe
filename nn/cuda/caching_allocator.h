// The caching CUDA device allocator behind every Device::cuda tensor (docs/design.md §4): freed blocks
// go to size-binned free lists and are handed out again, so a training step that repeats the
// previous step's allocations makes no cudaMalloc calls. One stream orders all device work, which
// is what makes reusing a block right after its host-side free safe.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/gemm.h"
#include "nn/allocator.h"

namespace diffuse::cuda {

struct AllocatorStats {
  size_t allocated_bytes = 0;       // blocks handed out and not yet freed (rounded sizes)
  size_t cached_bytes = 0;          // freed blocks kept for reuse
  size_t peak_allocated_bytes = 0;  // high-water mark of allocated_bytes since the last reset
  uint64_t allocations = 0;         // allocate() calls with a non-zero size
  uint64_t cuda_mallocs = 0;        // cudaMalloc calls (cache misses)
  uint64_t cuda_frees = 0;          // cudaFree calls (only when the cache is emptied)
};

// The process-wide allocator, created on first use (requires a CUDA device). It is never
// destroyed: tensors released during static destruction must still find it.
Allocator& caching_allocator();

AllocatorStats allocator_stats();
void reset_peak_allocated();
// Waits for the stream, then returns every cached block to the driver.
void empty_cache();

// ---- private pools for CUDA graphs (nn/cuda/graph.h) ----
// A graph replays the device addresses its capture used, so those blocks must stay reserved for
// it while it lives: while a pool captures, every block allocated comes from that pool (its own
// free blocks first, then the shared cache; a request neither can serve is an Error that fails the
// capture, never a cudaMalloc) and every block freed goes back to that pool, whoever allocated
// it, since recorded work may still use it. After the capture the pool's free blocks serve only
// later captures into the same pool; blocks freed after the capture return to the pool while it
// lives. Releasing the pool gives its free blocks back to the shared cache (safe: all work is on
// one stream, so later users are ordered after every replay already queued).
using GraphPoolId = uint64_t;
GraphPoolId create_graph_pool();
// Routes allocations and frees into `pool` until end_pool_capture(); one pool captures at a time.
void begin_pool_capture(GraphPoolId pool);
void end_pool_capture();
// The pool's free blocks go back to the shared cache; its live blocks return there when freed.
void release_graph_pool(GraphPoolId pool);
// Bytes the pool holds (free and live), for tests and messages.
size_t graph_pool_bytes(GraphPoolId pool);

// The block size a request of `bytes` is served with: 512-byte steps up to 1 MiB, 2 MiB steps
// above (exposed for tests).
size_t allocator_round_size(size_t bytes);

// The caching allocator as the device-memory provider of the library-backed kernel families
// (kernels/gemm.h's DeviceMemory: cuBLAS/cuDNN workspaces, padded copies, the GEMM ones vectors).
const kernels::cuda::DeviceMemory& device_memory();

// Scratch device memory from the caching allocator,
// returned to it when the buffer goes out of scope. Work queued on the stream that uses it stays
// safe: the block is only reused by later work on the same stream.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return ptr_; }
  size_t size() const { return bytes_; }

 private:
  void release();
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace diffuse::cuda
