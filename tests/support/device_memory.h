// Device memory for tests that call the CUDA runtime directly (the emulated device's own tests in
// tests/emulated_device/): a status check, a scoped allocation, copies to and from it, and a
// scoped stream, defined once instead of in each test file. Include only where cuda_runtime.h is
// available (a CUDA or -DDIFFUSE_CUDA=EMULATED build).
#pragma once
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <cstddef>
#include <vector>

// Fails the test case, naming the call, unless it returned cudaSuccess. (The same definition as
// tests/cuda/cuda_test_util.h's, so the two headers may meet in one file.)
#define REQUIRE_CUDA_OK(call) REQUIRE((call) == cudaSuccess)

namespace diffuse::test {

// `bytes` bytes of device memory from cudaMalloc, freed on scope exit. On the emulated device
// cudaMalloc fills it with NaN, so an output never written shows up.
struct DeviceBuffer {
  void* p = nullptr;
  size_t bytes = 0;

  explicit DeviceBuffer(size_t size) : bytes(size) { REQUIRE_CUDA_OK(cudaMalloc(&p, size)); }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(DeviceBuffer&& other) noexcept : p(other.p), bytes(other.bytes) { other.p = nullptr; }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(DeviceBuffer&&) = delete;

  // A buffer holding a copy of `values`.
  template <typename T>
  static DeviceBuffer from(const std::vector<T>& values) {
    DeviceBuffer d(values.size() * sizeof(T));
    REQUIRE_CUDA_OK(cudaMemcpy(d.p, values.data(), d.bytes, cudaMemcpyHostToDevice));
    return d;
  }
  // The whole buffer copied back as T values.
  template <typename T>
  std::vector<T> get() const {
    std::vector<T> values(bytes / sizeof(T));
    REQUIRE_CUDA_OK(cudaMemcpy(values.data(), p, values.size() * sizeof(T), cudaMemcpyDeviceToHost));
    return values;
  }
  // The address `byte_offset` bytes in, typed.
  template <typename T>
  T* as(size_t byte_offset = 0) const {
    return reinterpret_cast<T*>(static_cast<char*>(p) + byte_offset);
  }
  // Every byte 0xFF: NaN in f32 and bf16.
  void poison() const { REQUIRE_CUDA_OK(cudaMemset(p, 0xff, bytes)); }
};

template <typename T>
void upload(void* dst, const std::vector<T>& src) {
  REQUIRE_CUDA_OK(cudaMemcpy(dst, src.data(), src.size() * sizeof(T), cudaMemcpyHostToDevice));
}

template <typename T>
std::vector<T> download(const void* src, size_t count) {
  std::vector<T> out(count);
  REQUIRE_CUDA_OK(cudaMemcpy(out.data(), src, count * sizeof(T), cudaMemcpyDeviceToHost));
  return out;
}

// A stream created with `flags`, destroyed on scope exit.
struct DeviceStream {
  cudaStream_t s = nullptr;
  explicit DeviceStream(unsigned flags = cudaStreamNonBlocking) {
    REQUIRE_CUDA_OK(cudaStreamCreateWithFlags(&s, flags));
  }
  ~DeviceStream() { cudaStreamDestroy(s); }
  DeviceStream(const DeviceStream&) = delete;
  DeviceStream& operator=(const DeviceStream&) = delete;
};

}  // namespace diffuse::test
