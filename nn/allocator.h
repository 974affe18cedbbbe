// Allocators behind tensor storage. The host allocator hands out 64-byte aligned blocks; a device
// allocator (the caching CUDA allocator, registered by the CUDA backend) implements the same
// interface, so Tensor never calls cudaMalloc itself.
#pragma once
#include <cstddef>

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
};

Allocator& host_allocator();

// The device allocator. A CUDA build registers its caching allocator on the first call to either
// query below when a device is present; register_device_allocator replaces it (tests, embedders).
void register_device_allocator(Allocator* alloc);
bool device_allocator_available();
Allocator* device_allocator();  // throws "no CUDA device: <why>" when there is none

}  // namespace diffuse
