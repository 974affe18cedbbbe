// The CUDA caching allocator and host<->device copies: a repeated allocation pattern makes no new
// cudaMalloc, statistics add up, copies round-trip bit-exactly (also through views with odd
// offsets), and running out of memory is one clear diffuse::Error.
#include <catch2/catch.hpp>

#include <cstring>
#include <vector>

#include "cuda_test_util.h"
#include "nn/allocator.h"
#include "nn/cuda/caching_allocator.h"
#include "nn/runtime.h"
#include "nn/tensor.h"

using namespace diffuse;

TEST_CASE("allocator size classes: 512-byte steps up to 1 MiB, 2 MiB steps above", "[cuda][allocator]") {
  CHECK(cuda::allocator_round_size(1) == 512);
  CHECK(cuda::allocator_round_size(512) == 512);
  CHECK(cuda::allocator_round_size(513) == 1024);
  CHECK(cuda::allocator_round_size(size_t(1) << 20) == size_t(1) << 20);
  CHECK(cuda::allocator_round_size((size_t(1) << 20) + 1) == size_t(2) << 20);
  CHECK(cuda::allocator_round_size((size_t(2) << 20) + 1) == size_t(4) << 20);
}

TEST_CASE("the device allocator is registered on first use when a device exists", "[cuda][allocator]") {
  DIFFUSE_CUDA_TEST_GUARD();
  REQUIRE(device_allocator_available());
  CHECK(device_allocator()->device() == Device::cuda);
  Tensor t = Tensor::empty({3}, DType::f32, Device::cuda);
  CHECK(t.device() == Device::cuda);
  CHECK(t.describe() == "f32[3] cuda");
}

TEST_CASE("a repeated allocation pattern makes no new cudaMalloc", "[cuda][allocator]") {
  DIFFUSE_CUDA_TEST_GUARD();
  // Small and large classes, a block freed in the middle and requested again, and a shape that
  // lands in the same class as another (100 and 120 floats both round to 512 bytes).
  auto pattern = [] {
    std::vector<Tensor> live;
    for (int64_t n : {int64_t(1), int64_t(100), int64_t(4096), int64_t(1) << 18, int64_t(3) << 20, int64_t(1000)})
      live.push_back(Tensor::empty({n}, DType::f32, Device::cuda));
    live.erase(live.begin() + 2);
    live.push_back(Tensor::empty({4096}, DType::f32, Device::cuda));
    live.push_back(Tensor::empty({120}, DType::f32, Device::cuda));
    Tensor scratch = Tensor::empty({int64_t(5) << 20}, DType::bf16, Device::cuda);
  };
  pattern();
  const cuda::AllocatorStats before = cuda::allocator_stats();
  pattern();
  const cuda::AllocatorStats after = cuda::allocator_stats();
  CHECK(after.cuda_mallocs == before.cuda_mallocs);
  CHECK(after.allocations == before.allocations + 9);
  CHECK(after.allocated_bytes == before.allocated_bytes);
  CHECK(after.cached_bytes == before.cached_bytes);
}

TEST_CASE("allocator statistics follow allocations, frees and the peak", "[cuda][allocator]") {
  DIFFUSE_CUDA_TEST_GUARD();
  cuda::reset_peak_allocated();
  const cuda::AllocatorStats s0 = cuda::allocator_stats();
  const size_t bytes = 3 * (size_t(1) << 20) + 12;  // a large class: 4 MiB
  {
    Tensor t = Tensor::empty({int64_t(bytes / 4)}, DType::f32, Device::cuda);
    const cuda::AllocatorStats s1 = cuda::allocator_stats();
    CHECK(s1.allocated_bytes == s0.allocated_bytes + cuda::allocator_round_size(bytes));
    CHECK(s1.peak_allocated_bytes >= s1.allocated_bytes);
  }
  const cuda::AllocatorStats s2 = cuda::allocator_stats();
  CHECK(s2.allocated_bytes == s0.allocated_bytes);
  CHECK(s2.peak_allocated_bytes == s0.allocated_bytes + cuda::allocator_round_size(bytes));
  CHECK(s2.cached_bytes >= cuda::allocator_round_size(bytes));
  cuda::empty_cache();
  const cuda::AllocatorStats s3 = cuda::allocator_stats();
  CHECK(s3.cached_bytes == 0);
  CHECK(s3.cuda_frees > s2.cuda_frees);
  CHECK(s3.allocated_bytes == s2.allocated_bytes);
}

TEST_CASE("host-device copies round-trip exactly, through views and device clones", "[cuda][allocator]") {
  DIFFUSE_CUDA_TEST_GUARD();
  for (DType dt : {DType::f32, DType::bf16, DType::f64, DType::i32, DType::i64}) {
    Tensor host = dt == DType::i32 || dt == DType::i64 ? Tensor::from({1, -2, 3, 40000, -5, 6, 7, 8, 9, 10, 11, 12},
                                                                      {4, 3}, dt)
                                                       : Tensor::randn({4, 3}, 7, 0, 0, dt);
    Tensor dev = host.to(Device::cuda);
    CHECK(dev.device() == Device::cuda);
    Tensor back = dev.to(Device::cpu);
    CHECK(std::memcmp(back.raw(), host.raw(), host.nbytes()) == 0);
    // A device-to-device clone, then rows [1, 3) of it: a view at an offset of one 3-element row.
    Tensor rows = dev.clone().slice0(1, 3).to(Device::cpu);
    CHECK(std::memcmp(rows.raw(), host.slice0(1, 3).raw(), rows.nbytes()) == 0);
  }
  // Writing into a device view leaves the rest of the storage alone.
  Tensor dev = Tensor::zeros({3, 2}, DType::f32, Device::cuda);
  dev.slice0(1, 2).copy_from(Tensor::from({5, 6}, {1, 2}));
  CHECK(dev.to_vector() == std::vector<double>{0, 0, 5, 6, 0, 0});
  CHECK(Tensor::full({2}, 2.5, DType::f32, Device::cuda).to_vector() == std::vector<double>{2.5, 2.5});
}

TEST_CASE("running out of device memory is one clear error, and the allocator still works", "[cuda][allocator]") {
  DIFFUSE_CUDA_TEST_GUARD();
  const int64_t huge = int64_t(1) << 48;  // 1 PiB of f32: more than any card
  CHECK_THROWS_WITH(Tensor::empty({huge}, DType::f32, Device::cuda),
                    Catch::Contains("out of device memory allocating 1125899906842624 bytes") &&
                        Catch::Contains("in use") && Catch::Contains("cached"));
  Tensor ok = Tensor::ones({4}, DType::f32, Device::cuda);
  CHECK(ok.to_vector() == std::vector<double>{1, 1, 1, 1});
}
