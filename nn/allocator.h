// Allocators behind tensor storage. The host allocator hands out 64-byte aligned blocks from a
// cache of freed ones (so a training step reuses the previous step's buffers instead of mapping and
// page-faulting them again); a device allocator (the caching CUDA allocator, registered by the
// CUDA backend) implements the same interface, so Tensor never calls cudaMalloc itself.
#pragma once
#include <cstddef>
#include <cstdint>

#include "diffuse/device.h"

namespace diffuse {

const char* device_name(Device d);

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* ptr, size_t bytes) = 0;
  virtual Device device() const = 0;
  // Copies between host and this allocator's memory (identity memcpy for the host).
  virtual void copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) = 0;
  // Sets `bytes` of this allocator's memory to zero bits (0 in every dtype diffuse stores). The
  // default copies from a zeroed host buffer; the CUDA allocator queues a memset on the stream
  // (no host round trip, and capturable in a graph).
  virtual void zero(void* dst, size_t bytes);
};

Allocator& host_allocator();

// The host allocator's cache. A freed block is kept on the free list of its size class (64-byte
// steps up to 64 KiB, then eight classes per power of two) and handed out again only for a
// request of that same class. The cache never holds more free bytes than twice the most bytes
// ever in use at once (nor more than DIFFUSE_HOST_CACHE_MB when that is set): a freed block beyond
// that bound goes back to the C library at once.
struct HostMemoryStats {
  size_t bytes_in_use = 0;           // in blocks handed out (rounded to their class)
  size_t peak_bytes_in_use = 0;
  size_t bytes_cached = 0;           // in free blocks kept for reuse
  size_t peak_bytes_held = 0;        // the most of in_use + cached at once
  uint64_t system_allocations = 0;   // blocks taken from the C library: cache misses
  uint64_t cache_hits = 0;
};
HostMemoryStats host_memory_stats();
// Gives every cached block back to the C library (e.g. after training, before sampling).
void release_cached_host_memory();

// The device allocator. A CUDA build registers its caching allocator on the first call to either
// query below when a device is present; register_device_allocator replaces it (tests, embedders).
void register_device_allocator(Allocator* alloc);
bool device_allocator_available();
Allocator* device_allocator();  // throws "no CUDA device: <why>" when there is none

}  // namespace diffuse
