// See object_pool.h. Free blocks are linked through their own first bytes, so the free lists need
// no memory of their own.
#include "nn/object_pool.h"

#include <mutex>

#include "nn/allocator.h"

namespace diffuse {

namespace {

constexpr size_t kGranule = 16;
constexpr size_t kMaxPooledBytes = 4096;
constexpr size_t kClasses = kMaxPooledBytes / kGranule + 1;
constexpr size_t kMaxCachedBytes = size_t{64} << 20;

struct FreeBlock {
  FreeBlock* next;
};

struct Pool {
  std::mutex mutex;
  FreeBlock* free_list[kClasses] = {};
  ObjectPoolStats stats;
};

// Never destroyed: tensors in static objects may be released after every destructor has run.
Pool& pool() {
  static Pool* p = new Pool;
  return *p;
}

size_t class_of(size_t bytes) { return (bytes + kGranule - 1) / kGranule; }

}  // namespace

void* pool_allocate(size_t bytes) {
  if (bytes == 0) bytes = 1;
  if (bytes > kMaxPooledBytes) return host_allocator().allocate(bytes);
  const size_t c = class_of(bytes);
  Pool& p = pool();
  {
    std::lock_guard<std::mutex> lock(p.mutex);
    if (FreeBlock* b = p.free_list[c]) {
      p.free_list[c] = b->next;
      p.stats.bytes_cached -= c * kGranule;
      return b;
    }
    ++p.stats.operator_new_calls;
  }
  return ::operator new(c * kGranule);
}

void pool_deallocate(void* ptr, size_t bytes) {
  if (!ptr) return;
  if (bytes == 0) bytes = 1;
  if (bytes > kMaxPooledBytes) return host_allocator().deallocate(ptr, bytes);
  const size_t c = class_of(bytes);
  Pool& p = pool();
  {
    std::lock_guard<std::mutex> lock(p.mutex);
    if (p.stats.bytes_cached + c * kGranule <= kMaxCachedBytes) {
      auto* b = static_cast<FreeBlock*>(ptr);
      b->next = p.free_list[c];
      p.free_list[c] = b;
      p.stats.bytes_cached += c * kGranule;
      return;
    }
  }
  ::operator delete(ptr);
}

ObjectPoolStats object_pool_stats() {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mutex);
  return p.stats;
}

void release_pooled_objects() {
  Pool& p = pool();
  FreeBlock* lists[kClasses];
  {
    std::lock_guard<std::mutex> lock(p.mutex);
    for (size_t c = 0; c < kClasses; ++c) lists[c] = p.free_list[c], p.free_list[c] = nullptr;
    p.stats.bytes_cached = 0;
  }
  for (FreeBlock* b : lists)
    while (b) {
      FreeBlock* next = b->next;
      ::operator delete(b);
      b = next;
    }
}

}  // namespace diffuse
