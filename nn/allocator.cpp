// Host allocator (64-byte aligned, for vector loads and cache lines) and the registry through
// which the CUDA backend supplies its device allocator.
#include "nn/allocator.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "diffuse/error.h"

namespace diffuse {

const char* device_name(Device d) { return d == Device::cpu ? "cpu" : "cuda"; }

namespace {

class HostAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes) override {
    size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
    if (!p) throw Error("out of host memory allocating " + std::to_string(bytes) + " bytes");
    return p;
  }
  void deallocate(void* ptr, size_t) override { std::free(ptr); }
  Device device() const override { return Device::cpu; }
  void copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) override {
    if (dst_dev != Device::cpu || src_dev != Device::cpu)
      throw Error("host allocator asked to copy device memory");
    if (bytes) std::memcpy(dst, src, bytes);
  }
};

Allocator* g_device_allocator = nullptr;

}  // namespace

Allocator& host_allocator() {
  static HostAllocator alloc;
  return alloc;
}

void register_device_allocator(Allocator* alloc) { g_device_allocator = alloc; }

bool device_allocator_available() { return g_device_allocator != nullptr; }

Allocator* device_allocator() {
  if (!g_device_allocator) throw Error("no CUDA device");
  return g_device_allocator;
}

}  // namespace diffuse
