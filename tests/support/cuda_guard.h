// For the `cuda` tests: the guard every case opens with, and NaN-poisoning of device allocations.
// Without a CUDA device a case prints "no CUDA device: test not run" as a Catch2 warning and
// returns, so the binary passes on CI machines while saying plainly that nothing ran (docs/design.md
// §5 item 4). Include only from tests/cuda/: this header needs the CUDA runtime.
#pragma once
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include "nn/allocator.h"
#include "nn/device_context.h"
#include "nn/runtime.h"

#define DIFFUSE_CUDA_TEST_GUARD()                                        \
  do {                                                                   \
    if (::diffuse::cuda_device_count() == 0) {                           \
      WARN("no CUDA device: test not run");                              \
      return;                                                            \
    }                                                                    \
  } while (0)

namespace diffuse::test {

// Wraps the registered device allocator and fills every block it hands out with 0xFF bytes (NaN
// in f32 and bf16) on the stream all device work runs on, so an output element an op never
// writes, or a buffer it reads before initialising, shows up as NaN (docs/design.md §11). One
// instance lives for the whole process: storage allocated through it returns to it at any time.
class PoisoningAllocator final : public Allocator {
 public:
  explicit PoisoningAllocator(Allocator* inner) : inner_(inner) {}
  void* allocate(size_t bytes) override {
    void* p = inner_->allocate(bytes);
    if (p && cudaMemsetAsync(p, 0xFF, bytes, static_cast<cudaStream_t>(current_stream())) != cudaSuccess)
      FAIL("cudaMemsetAsync failed while poisoning a device allocation of " << bytes << " bytes");
    return p;
  }
  void deallocate(void* ptr, size_t bytes) override { inner_->deallocate(ptr, bytes); }
  Device device() const override { return inner_->device(); }
  void copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) override {
    inner_->copy(dst, dst_dev, src, src_dev, bytes);
  }
  void zero(void* dst, size_t bytes) override { inner_->zero(dst, bytes); }
  Allocator* inner() const { return inner_; }

 private:
  Allocator* inner_;
};

// While alive, device tensors come from a PoisoningAllocator over the allocator that was
// registered before; the destructor puts that one back. Construct after the device guard.
class PoisonDeviceAllocations {
 public:
  PoisonDeviceAllocations() : previous_(device_allocator()) {
    static PoisoningAllocator* poisoning = new PoisoningAllocator(previous_);  // never destroyed
    REQUIRE(poisoning->inner() == previous_);
    register_device_allocator(poisoning);
  }
  ~PoisonDeviceAllocations() { register_device_allocator(previous_); }
  PoisonDeviceAllocations(const PoisonDeviceAllocations&) = delete;
  PoisonDeviceAllocations& operator=(const PoisonDeviceAllocations&) = delete;

 private:
  Allocator* previous_;
};

}  // namespace diffuse::test
