// See caching_allocator.h. Requests are rounded up to a size class and a free block of exactly
// that class is reused, otherwise cudaMalloc is called. Blocks are never split or merged: a
// training step allocates the same sizes in the same order every step, so after one step the
// cache holds, per class, as many blocks as the step ever had live at once, and the next step
// makes no cudaMalloc at all. cudaFree happens only when the cache is emptied: on an
// out-of-memory retry (memory cached under other classes is returned first) or on request.
//
// Graph pools (caching_allocator.h): while a pool captures, allocations and frees go through it
// and a request that no cached block can serve is an error, not a cudaMalloc. The capture follows
// a warm-up run of the same work (nn/cuda/graph.h), after which the shared cache holds, per size
// class, as many blocks as that work ever has live; so a miss means the captured region allocates
// differently from its warm-up, and failing the capture (its caller then runs eagerly) is safer
// than growing the pool with memory no replay was planned for. This also keeps the allocator out
// of the CUDA runtime while a capture is open.
//
// At exit the cache is returned too (teardown_at_exit): the process must end with no device
// memory of its own still allocated, so that a leak checker (the emulated device's, or
// compute-sanitizer's) reports only real leaks. The allocator object itself is never destroyed.
#include "nn/cuda/caching_allocator.h"

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "diffuse/error.h"
#include "kernels/cuda_status.h"
#include "nn/device_context.h"
#include "nn/runtime.h"

namespace diffuse::cuda {

namespace {

cudaStream_t stream() { return static_cast<cudaStream_t>(current_stream()); }

constexpr size_t kSmallLimit = size_t(1) << 20;  // blocks up to 1 MiB are "small"
constexpr size_t kSmallStep = 512;
constexpr size_t kLargeStep = size_t(2) << 20;

std::string format_bytes(size_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

void teardown_at_exit();

class CachingAllocator final : public Allocator {
 public:
  CachingAllocator() {
    require_cuda_device();
    // cudaFree(nullptr) initialises the runtime now, so that its own exit handlers (the CUDA
    // runtime's teardown, the emulated device's leak check) are registered before ours and
    // therefore run after it: atexit handlers run in reverse order of registration.
    DIFFUSE_CUDA_CHECK(cudaFree(nullptr));
    if (std::atexit(teardown_at_exit) != 0) throw Error("caching allocator: atexit registration failed");
  }

  void* allocate(size_t bytes) override {
    if (bytes == 0) return nullptr;
    const size_t block = allocator_round_size(bytes);
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.allocations;
    void* p = capturing_pool_ ? take_for_capture(block, bytes) : take_cached(block);
    if (!p) p = cuda_malloc(block, bytes);
    live_[p] = {block, capturing_pool_};
    stats_.allocated_bytes += block;
    if (stats_.allocated_bytes > stats_.peak_allocated_bytes) stats_.peak_allocated_bytes = stats_.allocated_bytes;
    return p;
  }

  void deallocate(void* ptr, size_t) override {
    if (!ptr) return;
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = live_.find(ptr);
    if (it == live_.end()) return;  // not ours: a bug elsewhere, but never worth a crash at exit
    const size_t size = it->second.size;
    const GraphPoolId from = it->second.pool;
    live_.erase(it);
    stats_.allocated_bytes -= size;
    if (torn_down_) {
      // A tensor destroyed after the exit teardown (a static one): nothing will reuse the block.
      // Never throws: this runs from destructors during exit.
      const cudaError_t status = cudaFree(ptr);
      if (status == cudaSuccess) {
        ++stats_.cuda_frees;
      } else {
        cudaGetLastError();
        // cudaErrorCudartUnloading: the runtime is gone and has reclaimed everything already.
        if (status != cudaErrorCudartUnloading)
          std::fprintf(stderr, "diffuse: cudaFree at exit failed: %s\n", cudaGetErrorName(status));
      }
      return;
    }
    // Work recorded in a capture may still use a block freed during it: the capturing pool keeps
    // it. A pool block freed later returns to its pool while the pool lives.
    const GraphPoolId to = capturing_pool_ ? capturing_pool_ : (pools_.count(from) ? from : 0);
    if (from != to && pools_.count(from)) pools_[from].bytes -= size;
    if (to) {
      Pool& pool = pools_[to];
      if (from != to) pool.bytes += size;
      pool.free[size].push_back(ptr);
      return;
    }
    stats_.cached_bytes += size;
    free_[size].push_back(ptr);
  }

  GraphPoolId create_pool() {
    std::lock_guard<std::mutex> lock(mutex_);
    const GraphPoolId id = next_pool_++;
    pools_[id];
    return id;
  }

  void begin_capture(GraphPoolId id) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (capturing_pool_) throw Error("caching allocator: graph pool " + std::to_string(capturing_pool_) + " is already capturing");
    if (!pools_.count(id)) throw Error("caching allocator: no graph pool " + std::to_string(id));
    capturing_pool_ = id;
  }

  void end_capture() {
    std::lock_guard<std::mutex> lock(mutex_);
    capturing_pool_ = 0;
  }

  void release_pool(GraphPoolId id) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = pools_.find(id);
    if (it == pools_.end()) return;
    return_free_blocks(it->second);
    pools_.erase(it);
  }

  size_t pool_bytes(GraphPoolId id) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = pools_.find(id);
    return it == pools_.end() ? 0 : it->second.bytes;
  }

  Device device() const override { return Device::cuda; }

  // Host memory is pageable, so host<->device copies are followed by a stream synchronisation:
  // the host buffer may be freed or read as soon as this returns. Device-to-device stays async.
  void copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) override {
    if (bytes == 0) return;
    if (dst_dev == Device::cpu && src_dev == Device::cpu) {
      std::memcpy(dst, src, bytes);
      return;
    }
    cudaMemcpyKind kind = dst_dev == Device::cuda
                              ? (src_dev == Device::cuda ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                              : cudaMemcpyDeviceToHost;
    DIFFUSE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, stream()));
    if (kind != cudaMemcpyDeviceToDevice) DIFFUSE_CUDA_CHECK(cudaStreamSynchronize(stream()));
  }

  void zero(void* dst, size_t bytes) override {
    if (bytes) DIFFUSE_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, stream()));
  }

  AllocatorStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }

  void reset_peak() {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.peak_allocated_bytes = stats_.allocated_bytes;
  }

  void empty() {
    std::lock_guard<std::mutex> lock(mutex_);
    release_cached();
  }

  // The exit teardown: waits for all queued work, then frees every cached block. Blocks still
  // handed out are left alone (they are leaks, for a leak checker to report), and blocks freed
  // later go straight back to the device. Never throws (it runs from atexit).
  void teardown() noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    torn_down_ = true;
    // A graph still alive at exit: its pool's free blocks are returned like cached ones.
    for (auto& [id, pool] : pools_) return_free_blocks(pool);
    pools_.clear();
    if (stats_.cached_bytes == 0) return;
    cudaError_t status = cudaDeviceSynchronize();
    for (auto& [size, blocks] : free_) {
      while (status == cudaSuccess && !blocks.empty()) {
        status = cudaFree(blocks.back());
        if (status != cudaSuccess) break;
        blocks.pop_back();
        ++stats_.cuda_frees;
        stats_.cached_bytes -= size;
      }
    }
    if (status != cudaSuccess) {
      cudaGetLastError();
      // A device that already failed has reported why; say only what is left behind.
      std::fprintf(stderr, "diffuse: %zu bytes of cached device memory not returned at exit: CUDA error %s\n",
                   stats_.cached_bytes, cudaGetErrorName(status));
    }
  }

 private:
  struct Pool;  // defined with the other members below
  // A pool's free blocks join the shared cache.
  void return_free_blocks(Pool& pool) {
    for (auto& [size, blocks] : pool.free) {
      stats_.cached_bytes += size * blocks.size();
      std::vector<void*>& shared = free_[size];
      shared.insert(shared.end(), blocks.begin(), blocks.end());
    }
    pool.free.clear();
  }

  // During a capture: the pool's own free block, else one from the shared cache (now the pool's).
  void* take_for_capture(size_t block, size_t requested) {
    Pool& pool = pools_[capturing_pool_];
    auto it = pool.free.find(block);
    if (it != pool.free.end() && !it->second.empty()) {
      void* p = it->second.back();
      it->second.pop_back();
      return p;
    }
    void* p = take_cached(block);
    if (!p)
      throw Error("caching allocator: " + std::to_string(requested) +
                  " bytes requested during CUDA graph capture and no cached block fits (the captured work "
                  "allocates differently from its warm-up run)");
    pool.bytes += block;
    return p;
  }

  void* take_cached(size_t block) {
    auto it = free_.find(block);
    if (it == free_.end() || it->second.empty()) return nullptr;
    void* p = it->second.back();
    it->second.pop_back();
    stats_.cached_bytes -= block;
    return p;
  }

  void* cuda_malloc(size_t block, size_t requested) {
    void* p = nullptr;
    cudaError_t status = cudaMalloc(&p, block);
    if (status == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      const size_t cached_at_failure = stats_.cached_bytes;
      release_cached();
      status = cudaMalloc(&p, block);
      if (status == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        throw Error("out of device memory allocating " + std::to_string(requested) + " bytes (" +
                    format_bytes(stats_.allocated_bytes) + " in use, " + format_bytes(cached_at_failure) + " cached)");
      }
    }
    kernels::cuda_check(status, "cudaMalloc", __FILE__, __LINE__);
    ++stats_.cuda_mallocs;
    return p;
  }

  // Cached blocks may still be read or written by queued work until the stream drains.
  void release_cached() {
    if (stats_.cached_bytes == 0) return;
    DIFFUSE_CUDA_CHECK(cudaStreamSynchronize(stream()));
    for (auto& [size, blocks] : free_) {
      while (!blocks.empty()) {
        DIFFUSE_CUDA_CHECK(cudaFree(blocks.back()));
        blocks.pop_back();
        ++stats_.cuda_frees;
        stats_.cached_bytes -= size;
      }
    }
    free_.clear();
  }

  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;  // size class -> cached blocks
  struct Live {
    size_t size;       // its size class
    GraphPoolId pool;  // the graph pool it was taken for, 0: the shared cache
  };
  struct Pool {
    std::unordered_map<size_t, std::vector<void*>> free;  // size class -> the pool's free blocks
    size_t bytes = 0;                                     // free and live blocks of the pool
  };
  std::unordered_map<void*, Live> live_;  // block handed out -> where it came from
  std::unordered_map<GraphPoolId, Pool> pools_;
  GraphPoolId next_pool_ = 1;
  GraphPoolId capturing_pool_ = 0;  // 0: no capture
  AllocatorStats stats_;
  bool torn_down_ = false;  // teardown() has run: freed blocks are no longer cached
};

CachingAllocator& instance() {
  // Deliberately leaked (see caching_allocator.h): tensors released during static destruction
  // must still find it. Its memory is returned by teardown_at_exit instead.
  static CachingAllocator* alloc = new CachingAllocator();
  return *alloc;
}

// Registered by the allocator's constructor. Process-lifetime buffers (the cuBLAS workspace, the
// GEMM ones vectors in kernels/cuda/) are static buffers constructed after the allocator, so their
// destructors run before this (static destruction and atexit handlers interleave in reverse
// order of construction/registration) and their blocks are in the cache by now.
void teardown_at_exit() { instance().teardown(); }

}  // namespace

size_t allocator_round_size(size_t bytes) {
  if (bytes <= kSmallLimit) return (bytes + kSmallStep - 1) / kSmallStep * kSmallStep;
  return (bytes + kLargeStep - 1) / kLargeStep * kLargeStep;
}

Allocator& caching_allocator() { return instance(); }
GraphPoolId create_graph_pool() { return instance().create_pool(); }
void begin_pool_capture(GraphPoolId pool) { instance().begin_capture(pool); }
void end_pool_capture() { instance().end_capture(); }
void release_graph_pool(GraphPoolId pool) { instance().release_pool(pool); }
size_t graph_pool_bytes(GraphPoolId pool) { return instance().pool_bytes(pool); }
AllocatorStats allocator_stats() { return instance().stats(); }
void reset_peak_allocated() { instance().reset_peak(); }
void empty_cache() { instance().empty(); }

const kernels::cuda::DeviceMemory& device_memory() {
  static const kernels::cuda::DeviceMemory memory{[](size_t bytes) { return instance().allocate(bytes); },
                                                  [](void* ptr, size_t bytes) { instance().deallocate(ptr, bytes); },
                                                  [] { instance().empty(); }};
  return memory;
}

DeviceBuffer::DeviceBuffer(size_t bytes) : ptr_(instance().allocate(bytes)), bytes_(bytes) {}
DeviceBuffer::~DeviceBuffer() { release(); }
DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) {
  o.ptr_ = nullptr;
  o.bytes_ = 0;
}
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    release();
    ptr_ = o.ptr_;
    bytes_ = o.bytes_;
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}
void DeviceBuffer::release() {
  if (ptr_) instance().deallocate(ptr_, bytes_);
  ptr_ = nullptr;
  bytes_ = 0;
}

}  // namespace diffuse::cuda
