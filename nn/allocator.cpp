// Host allocator (64-byte aligned, for vector loads and cache lines) and the registry through
// which the CUDA backend supplies its device allocator. In a CUDA build the caching allocator
// (nn/cuda/caching_allocator.h, reached through the device seam nn/dispatch.h) registers itself
// on the first request for device memory, if a device exists; nothing touches the CUDA runtime
// before that.
#include "nn/allocator.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <new>
#include <vector>

#include "diffuse/error.h"
#include "nn/dispatch.h"
#include "nn/runtime.h"

namespace diffuse {

const char* device_name(Device d) { return d == Device::cpu ? "cpu" : "cuda"; }

namespace {

// Size classes: exact 64-byte steps up to 64 KiB, then eight per power of two (at most 12.5% of a
// block unused), so a step that asks for the same sizes again is served entirely from the cache.
constexpr size_t kSmallLimit = size_t{64} << 10;
constexpr size_t kSmallClasses = kSmallLimit / 64 + 1;
constexpr size_t kClasses = kSmallClasses + 8 * 48;

struct SizeClass {
  size_t index;
  size_t bytes;
};

SizeClass size_class(size_t bytes) {
  size_t rounded = bytes == 0 ? 64 : (bytes + 63) / 64 * 64;
  if (rounded <= kSmallLimit) return {rounded / 64, rounded};
  int log2 = 63 - __builtin_clzll(rounded);
  size_t step = (size_t{1} << log2) / 8;
  rounded = (rounded + step - 1) / step * step;
  log2 = 63 - __builtin_clzll(rounded);  // rounding up may reach the next power of two
  step = (size_t{1} << log2) / 8;
  return {kSmallClasses + static_cast<size_t>(log2 - 16) * 8 + (rounded / step - 8), rounded};
}

// The bytes of size class `index` (the inverse of size_class).
size_t class_bytes(size_t index) {
  if (index < kSmallClasses) return index * 64;
  const size_t log2 = (index - kSmallClasses) / 8 + 16, eighth = (index - kSmallClasses) % 8;
  return (size_t{8} + eighth) << (log2 - 3);
}

// The cache keeps at most this many times the most bytes ever in use at once (see deallocate).
constexpr size_t kCacheFactor = 2;

struct FreeBlock {
  FreeBlock* next;
};

// DIFFUSE_HOST_CACHE_MB caps the cache below its default bound (0: no cache at all).
size_t cache_cap_from_environment() {
  const char* v = std::getenv("DIFFUSE_HOST_CACHE_MB");
  if (!v || !*v) return SIZE_MAX;
  char* end = nullptr;
  unsigned long long mb = std::strtoull(v, &end, 10);
  if (*end != 0 || !std::isdigit(static_cast<unsigned char>(*v)))  // strtoull takes "-1" (and wraps it)
    throw Error("DIFFUSE_HOST_CACHE_MB must be a whole number of MiB, got '" + std::string(v) + "'", ErrorKind::usage);
  return static_cast<size_t>(mb) << 20;
}

class HostAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes) override {
    const SizeClass c = size_class(bytes);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      last_request_[c.index] = ++requests_;
      if (FreeBlock* b = pop_block(c.index)) {
        stats_.bytes_cached -= c.bytes;
        ++stats_.cache_hits;
        note_in_use(c.bytes);
        return b;
      }
    }
    void* p = std::aligned_alloc(64, c.bytes);
    if (!p) {  // the cache may hold what the C library needs
      release();
      p = std::aligned_alloc(64, c.bytes);
      if (!p) throw Error("out of host memory allocating " + std::to_string(bytes) + " bytes");
    }
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.system_allocations;
    note_in_use(c.bytes);
    return p;
  }

  void deallocate(void* ptr, size_t bytes) override {
    if (!ptr) return;
    const SizeClass c = size_class(bytes);
    FreeBlock* evicted = nullptr;  // blocks to hand back to the C library, outside the lock
    bool cached = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stats_.bytes_in_use -= c.bytes;
      // Bounded by twice the most ever in use at once. A step's phases use different size
      // classes (the forward's activations, the backward's grads), so a cache bounded by the
      // high-water mark itself fills with one phase's blocks and hands the other phase's back to
      // the C library every step (136 misses per steady `tiny` step at batch 32 of 32x32); at
      // twice it both phases' blocks stay.
      const size_t budget = std::min(kCacheFactor * stats_.peak_bytes_in_use, cap_);
      if (stats_.bytes_cached + c.bytes > budget && c.bytes <= budget)
        evicted = evict_staler_than(c.index, stats_.bytes_cached + c.bytes - budget);
      if (stats_.bytes_cached + c.bytes <= budget) {
        push_block(c.index, static_cast<FreeBlock*>(ptr));
        stats_.bytes_cached += c.bytes;
        cached = true;
      }
    }
    if (!cached) std::free(ptr);
    free_list(evicted);
  }

  Device device() const override { return Device::cpu; }
  void copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) override {
    if (dst_dev != Device::cpu || src_dev != Device::cpu)
      throw Error("host allocator asked to copy device memory");
    if (bytes) std::memcpy(dst, src, bytes);
  }

  HostMemoryStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }

  void release() {
    FreeBlock* lists[kClasses];
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (size_t i = 0; i < kClasses; ++i) lists[i] = free_[i], free_[i] = nullptr;
      stats_.bytes_cached = 0;
      cached_count_ = 0;
    }
    for (FreeBlock* b : lists) free_list(b);
  }

 private:
  static void free_list(FreeBlock* b) {
    while (b) {
      FreeBlock* next = b->next;
      std::free(b);
      b = next;
    }
  }

  // Under mutex_: takes cached blocks out of the classes asked for least recently, as long as
  // they were asked for before class `keep` was, until `bytes` are out or no such class is left;
  // returns them as one list for the caller to free. So a full cache makes room for the blocks
  // being used now by dropping those of a workload that has ended (an embedder that trains one
  // model and then samples another, a test binary running many cases) instead of refusing them
  // every step; when every cached class is in use the incoming block goes, as before.
  FreeBlock* evict_staler_than(size_t keep, size_t bytes) {
    FreeBlock* out = nullptr;
    size_t freed = 0;
    while (freed < bytes) {
      size_t victim = kClasses;
      for (size_t k = 0; k < cached_count_; ++k) {
        const size_t i = cached_[k];
        if (i != keep && last_request_[i] < last_request_[keep] &&
            (victim == kClasses || last_request_[i] < last_request_[victim]))
          victim = i;
      }
      if (victim == kClasses) break;
      const size_t block = class_bytes(victim);
      while (freed < bytes) {
        FreeBlock* b = pop_block(victim);
        if (!b) break;
        b->next = out;
        out = b;
        freed += block;
        stats_.bytes_cached -= block;
      }
    }
    return out;
  }

  // Under mutex_: a class's free list, and the list of classes holding blocks (so an eviction
  // looks at the few classes with blocks, not at all kClasses), kept together.
  void push_block(size_t index, FreeBlock* b) {
    if (!free_[index]) {
      slot_[index] = cached_count_;
      cached_[cached_count_++] = static_cast<uint16_t>(index);
    }
    b->next = free_[index];
    free_[index] = b;
  }
  FreeBlock* pop_block(size_t index) {
    FreeBlock* b = free_[index];
    if (!b) return nullptr;
    free_[index] = b->next;
    if (!free_[index]) {  // the class is empty now: the last listed class takes its place
      const uint16_t last = cached_[--cached_count_];
      cached_[slot_[index]] = last;
      slot_[last] = slot_[index];
    }
    return b;
  }

  void note_in_use(size_t bytes) {  // under mutex_
    stats_.bytes_in_use += bytes;
    stats_.peak_bytes_in_use = std::max(stats_.peak_bytes_in_use, stats_.bytes_in_use);
    stats_.peak_bytes_held = std::max(stats_.peak_bytes_held, stats_.bytes_in_use + stats_.bytes_cached);
  }

  std::mutex mutex_;
  FreeBlock* free_[kClasses] = {};
  uint64_t last_request_[kClasses] = {};  // the request count when each class was last asked for
  uint16_t cached_[kClasses] = {};        // the classes whose free list is not empty, in any order
  size_t slot_[kClasses] = {};            // where a class with blocks is listed in cached_
  size_t cached_count_ = 0;
  static_assert(kClasses <= 65536, "class indices are kept in 16 bits");
  uint64_t requests_ = 0;
  HostMemoryStats stats_;
  const size_t cap_ = cache_cap_from_environment();
};

HostAllocator& the_host_allocator() {
  // Never destroyed: tensors in static objects may be freed after every destructor has run.
  static HostAllocator* alloc = new HostAllocator;
  return *alloc;
}

std::atomic<Allocator*> g_device_allocator{nullptr};

// Registers the CUDA caching allocator when this build has CUDA and the machine a device.
void register_cuda_allocator_if_possible() {
  if (g_device_allocator.load()) return;
  if (Allocator* cuda = dispatch::cuda_device_allocator_if_available()) {
    Allocator* expected = nullptr;
    g_device_allocator.compare_exchange_strong(expected, cuda);
  }
}

}  // namespace

void Allocator::zero(void* dst, size_t bytes) {
  if (bytes == 0) return;
  if (device() == Device::cpu) {
    std::memset(dst, 0, bytes);
    return;
  }
  const std::vector<unsigned char> zeros(bytes, 0);
  copy(dst, device(), zeros.data(), Device::cpu, bytes);
}

Allocator& host_allocator() { return the_host_allocator(); }
HostMemoryStats host_memory_stats() { return the_host_allocator().stats(); }
void release_cached_host_memory() { the_host_allocator().release(); }

void register_device_allocator(Allocator* alloc) { g_device_allocator = alloc; }

bool device_allocator_available() {
  register_cuda_allocator_if_possible();
  return g_device_allocator.load() != nullptr;
}

Allocator* device_allocator() {
  register_cuda_allocator_if_possible();
  Allocator* alloc = g_device_allocator.load();
  if (!alloc) require_cuda_device();  // throws "no CUDA device: <why>"
  if (!alloc) throw Error("no CUDA device", ErrorKind::device_unavailable);
  return alloc;
}

}  // namespace diffuse
