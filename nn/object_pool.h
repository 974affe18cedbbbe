// A pool for the small objects every op makes — autograd nodes' lists, backward closures, the
// shared_ptr control blocks of storages and autograd metas — so that once a step has run, the
// next one finds every block it needs on a free list and never calls operator new (docs/design.md
// §4). Blocks are kept per 16-byte size class under one lock; a class's free list grows only to
// the most blocks of that size ever live at once, and the whole pool holds at most
// kMaxCachedBytes of free blocks (beyond that a freed block goes straight back to operator
// delete). Blocks over kMaxPooledBytes come from the host allocator's cache (nn/allocator.h).
#pragma once
#include <cstddef>
#include <cstdint>
#include <new>

namespace diffuse {

void* pool_allocate(size_t bytes);                // 16-byte aligned; never null (throws bad_alloc)
void pool_deallocate(void* ptr, size_t bytes);    // bytes: what was asked of pool_allocate

struct ObjectPoolStats {
  uint64_t operator_new_calls = 0;  // blocks the pool had to get from operator new (misses)
  size_t bytes_cached = 0;          // free blocks held for reuse
};
ObjectPoolStats object_pool_stats();
void release_pooled_objects();  // gives every free block back to operator delete

// A standard allocator over the pool, for std::allocate_shared and containers.
template <typename T>
struct PoolAllocator {
  using value_type = T;
  PoolAllocator() = default;
  template <typename U>
  PoolAllocator(const PoolAllocator<U>&) {}  // NOLINT: rebinding is implicit for allocators
  T* allocate(size_t n) { return static_cast<T*>(pool_allocate(n * sizeof(T))); }
  void deallocate(T* p, size_t n) { pool_deallocate(p, n * sizeof(T)); }
  template <typename U>
  bool operator==(const PoolAllocator<U>&) const { return true; }
};

}  // namespace diffuse
