// Host allocator (64-byte aligned, for vector loads and cache lines) and the registry through
// which the CUDA backend supplies its device allocator. In a CUDA build the caching allocator
// (nn/cuda/caching_allocator.h, reached through the device seam nn/dispatch.h) registers itself
// on the first request for device memory, if a device exists; nothing touches the CUDA runtime
// before that.
#include "nn/allocator.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include "diffuse/error.h"
#include "nn/dispatch.h"
#include "nn/runtime.h"

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

Allocator& host_allocator() {
  static HostAllocator alloc;
  return alloc;
}

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
