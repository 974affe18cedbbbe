// The CUDA caching allocator and host<->device copies: a repeated allocation pattern makes no new
// cudaMalloc, the cache grows by exactly the blocks a pattern needs, statistics add up, scratch
// buffers return to the cache, copies round-trip bit-exactly (also through views with odd
// offsets), and running out of memory is one clear diffuse::Error naming the size: for an
// impossible request, and on a small card (a child process with DIFFUSE_EMU_DEVICE_MEMORY) after
// filling it, where the allocator first returns its cache to the device and retries.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "cuda_test_util.h"
#include "nn/allocator.h"
#include "nn/cuda/caching_allocator.h"
#include "nn/runtime.h"
#include "nn/tensor.h"
#include "support/process.h"

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

TEST_CASE("the cache grows by one block per size class and per block live at once, then reuses them",
          "[cuda][allocator]") {
  DIFFUSE_CUDA_TEST_GUARD();
  cuda::empty_cache();
  const cuda::AllocatorStats s0 = cuda::allocator_stats();
  REQUIRE(s0.cached_bytes == 0);
  const size_t small = cuda::allocator_round_size(1000 * 4), large = cuda::allocator_round_size(size_t(3) << 20);
  auto mallocs = [&] { return cuda::allocator_stats().cuda_mallocs - s0.cuda_mallocs; };
  { Tensor a = Tensor::empty({1000}, DType::f32, Device::cuda); }
  CHECK(mallocs() == 1);
  CHECK(cuda::allocator_stats().cached_bytes == small);
  { Tensor a = Tensor::empty({1000}, DType::f32, Device::cuda); }  // the cached block again
  CHECK(mallocs() == 1);
  {
    // Two live at once in one class: the cache grows by one; 990 floats share the class.
    Tensor a = Tensor::empty({1000}, DType::f32, Device::cuda), b = Tensor::empty({990}, DType::f32, Device::cuda);
    CHECK(mallocs() == 2);
    CHECK(a.raw() != b.raw());
    CHECK(cuda::allocator_stats().allocated_bytes == s0.allocated_bytes + 2 * small);
  }
  CHECK(cuda::allocator_stats().cached_bytes == 2 * small);
  { Tensor c = Tensor::empty({int64_t(3) << 18}, DType::f32, Device::cuda); }  // a new (large) class
  CHECK(mallocs() == 3);
  CHECK(cuda::allocator_stats().cached_bytes == 2 * small + large);
  for (int round = 0; round < 3; ++round) {  // the same pattern again: all from the cache
    Tensor a = Tensor::empty({1000}, DType::f32, Device::cuda), b = Tensor::empty({1000}, DType::f32, Device::cuda);
    Tensor c = Tensor::empty({int64_t(3) << 18}, DType::f32, Device::cuda);
  }
  CHECK(mallocs() == 3);
  // A larger class is not served from a smaller one, nor a smaller request from a larger block.
  { Tensor d = Tensor::empty({int64_t(5) << 18}, DType::f32, Device::cuda); }
  { Tensor e = Tensor::empty({10}, DType::f32, Device::cuda); }
  CHECK(mallocs() == 5);
  CHECK(cuda::allocator_stats().allocated_bytes == s0.allocated_bytes);
}

TEST_CASE("device scratch buffers return their block to the cache", "[cuda][allocator]") {
  DIFFUSE_CUDA_TEST_GUARD();
  const size_t bytes = 70000;
  { cuda::DeviceBuffer warm(bytes); }
  const cuda::AllocatorStats before = cuda::allocator_stats();
  void* first = nullptr;
  {
    cuda::DeviceBuffer buf(bytes);
    first = buf.data();
    CHECK(buf.size() == bytes);
    cuda::DeviceBuffer moved = std::move(buf);
    CHECK(buf.data() == nullptr);
    CHECK(moved.data() == first);
    CHECK(cuda::allocator_stats().allocated_bytes == before.allocated_bytes + cuda::allocator_round_size(bytes));
  }
  const cuda::AllocatorStats after = cuda::allocator_stats();
  CHECK(after.cuda_mallocs == before.cuda_mallocs);
  CHECK(after.allocated_bytes == before.allocated_bytes);
  cuda::DeviceBuffer again(bytes);
  CHECK(again.data() == first);  // the one cached block of that class
}

TEST_CASE("Tensor::zeros and fill(0) on the device are a memset there, for every dtype", "[cuda][allocator]") {
  DIFFUSE_CUDA_TEST_GUARD();
  // The emulated device's cudaMalloc hands out NaN-filled memory, so a zero read back was written.
  for (DType dt : {DType::f32, DType::f64, DType::bf16, DType::i64}) {
    INFO(dtype_name(dt));
    CHECK(Tensor::zeros({5}, dt, Device::cuda).to_vector() == std::vector<double>(5, 0.0));
    Tensor t = Tensor::full({3}, 2.0, dt, Device::cuda);
    t.fill(0.0);
    CHECK(t.to_vector() == std::vector<double>(3, 0.0));
  }
  Tensor neg = Tensor::full({2}, -0.0, DType::f32, Device::cuda);  // -0.0 keeps its sign bit
  CHECK(std::signbit(neg.to_vector()[0]));
}

// Run in a child process by the next case, on a small card (DIFFUSE_EMU_DEVICE_MEMORY under the
// emulated device; a real GPU ignores it). Sizes follow the card, so it holds on any device.
TEST_CASE("allocator cuda child: fill the card, run out, release the cache, run out again",
          "[.cuda-allocator-small-card]") {
  REQUIRE(cuda_device_count() > 0);  // a child: never a silent skip
  const size_t card = cuda_devices().at(0).memory_bytes;
  REQUIRE(card > 0);
  cuda::empty_cache();
  // Blocks of an eighth of the card until one does not fit: the error names the request's size.
  const int64_t eighth = static_cast<int64_t>(card / 8 / 4);  // f32 elements
  const size_t eighth_bytes = static_cast<size_t>(eighth) * 4;
  std::vector<Tensor> live;
  std::string message;
  for (int i = 0; i < 16 && message.empty(); ++i) {
    try {
      live.push_back(Tensor::empty({eighth}, DType::f32, Device::cuda));
    } catch (const Error& e) {
      message = e.what();
    }
  }
  INFO("card " << card << " bytes; " << live.size() << " blocks of " << eighth_bytes << " bytes fitted; " << message);
  REQUIRE(!message.empty());
  CHECK(live.size() >= 4);
  CHECK(live.size() <= 8);
  CHECK_THAT(message, Catch::Contains("out of device memory allocating " + std::to_string(eighth_bytes) + " bytes") &&
                          Catch::Contains("in use") && Catch::Contains("cached"));
  const size_t fitted = live.size();
  live.clear();  // all cached now: the card has no room for a block of another class
  const cuda::AllocatorStats cached = cuda::allocator_stats();
  CHECK(cached.cached_bytes >= fitted * eighth_bytes);
  // Three eighths at once (another size class): cudaMalloc fails, the cache goes back to the
  // device, the retry succeeds, and the block works. Zeros are a memset on the device (a value
  // other than 0 would be filled on the host and copied: 53 GB on an H200, over a minute).
  const int64_t three_eighths = 3 * eighth + 1;
  Tensor big = Tensor::zeros({three_eighths}, DType::f32, Device::cuda);
  big.slice0(three_eighths - 2, three_eighths).fill(1.5);
  const cuda::AllocatorStats released = cuda::allocator_stats();
  CHECK(released.cuda_frees >= cached.cuda_frees + fitted);
  CHECK(released.cached_bytes == 0);
  CHECK(big.slice0(three_eighths - 2, three_eighths).to_vector() == std::vector<double>{1.5, 1.5});
  // Twice the card can never fit, cache or not.
  const int64_t twice = static_cast<int64_t>(card / 2);  // f32 elements: 2 * card bytes
  CHECK_THROWS_WITH(Tensor::empty({twice}, DType::f32, Device::cuda),
                    Catch::Contains("out of device memory allocating " + std::to_string(twice * 4) + " bytes"));
  big = Tensor();
  Tensor ok = Tensor::ones({4}, DType::f32, Device::cuda);
  CHECK(ok.to_vector() == std::vector<double>{1, 1, 1, 1});
}

TEST_CASE("on a small card the allocator runs out with the size named, releases its cache and retries",
          "[cuda][allocator]") {
  DIFFUSE_CUDA_TEST_GUARD();
  const test::RunResult r = test::run_self("allocator cuda child: fill the card, run out, release the cache, run out again",
                                           {{"DIFFUSE_EMU_DEVICE_MEMORY", "64M"}});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("All tests passed") && Catch::Contains("1 test case"));
}
