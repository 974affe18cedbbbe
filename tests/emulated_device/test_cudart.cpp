// Tests of the emulated device's CUDA runtime (kernels/emulated_device/): the virtual card,
// cudaMalloc's placement and NaN fill, out-of-memory on a small card, argument checks of copies,
// queued work and its order across streams (events, the legacy stream's barrier) and event
// timing. The planted bugs are in test_planted_host.cpp. What needs the card configured at
// startup runs in a child: this binary re-run on a hidden case (tag [.…]).
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "kernels/dynamic_smem.h"
#include "kernels/emulated_device/device.h"
#include "kernels/emulated_device/kernel_queue.h"
#include "support/device_memory.h"
#include "support/process.h"

using namespace diffuse::test;
namespace device = diffuse::emulated_device;

namespace {

struct Event {
  cudaEvent_t e = nullptr;
  explicit Event(unsigned flags = cudaEventDefault) { REQUIRE_CUDA_OK(cudaEventCreateWithFlags(&e, flags)); }
  ~Event() { cudaEventDestroy(e); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
};

// Queues work on `s` that appends `id` to `order` when it runs.
void queue_marker(cudaStream_t s, std::vector<int>& order, int id) {
  REQUIRE_CUDA_OK(device::enqueue(s, "marker " + std::to_string(id), [&order, id] { order.push_back(id); }));
}

void busy_wait_ms(double ms) {
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count() < ms) {
  }
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

// ---- the virtual card ---------------------------------------------------------------------------

TEST_CASE("emulated cudart: one named sm_90 card that says it is not a GPU", "[cuda][emulated]") {
  int count = 0;
  REQUIRE_CUDA_OK(cudaGetDeviceCount(&count));
  CHECK(count == 1);
  cudaDeviceProp p;
  REQUIRE_CUDA_OK(cudaGetDeviceProperties(&p, 0));
  CHECK(std::string(p.name) == "diffuse emulated sm_90 (not a GPU)");
  CHECK(p.major == 9);
  CHECK(p.minor == 0);
  CHECK(p.multiProcessorCount == 132);
  CHECK(p.sharedMemPerMultiprocessor == 228 * 1024);
  CHECK(p.sharedMemPerBlockOptin == 227 * 1024);
  CHECK(p.sharedMemPerBlock == 48 * 1024);
  CHECK(p.warpSize == 32);
  CHECK(p.maxThreadsPerBlock == 1024);
  CHECK(p.totalGlobalMem == (size_t{16} << 30));  // the default: DIFFUSE_EMU_DEVICE_MEMORY unset

  int v = 0;
  REQUIRE_CUDA_OK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
  CHECK(v == static_cast<int>(p.sharedMemPerBlockOptin));
  REQUIRE_CUDA_OK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, 0));
  CHECK(v == p.multiProcessorCount);
  REQUIRE_CUDA_OK(cudaDeviceGetAttribute(&v, cudaDevAttrL2CacheSize, 0));
  CHECK(v == p.l2CacheSize);
  REQUIRE_CUDA_OK(cudaDeviceGetAttribute(&v, cudaDevAttrComputeCapabilityMajor, 0));
  CHECK(v == 9);

  CHECK(cudaSetDevice(1) == cudaErrorInvalidDevice);
  CHECK(cudaGetLastError() == cudaErrorInvalidDevice);
  CHECK(cudaGetLastError() == cudaSuccess);  // cleared: not sticky
  REQUIRE_CUDA_OK(cudaSetDevice(0));
  CHECK(cudaGetDeviceProperties(&p, 1) == cudaErrorInvalidDevice);
  cudaGetLastError();

  int runtime = 0, driver = 0;
  REQUIRE_CUDA_OK(cudaRuntimeGetVersion(&runtime));
  REQUIRE_CUDA_OK(cudaDriverGetVersion(&driver));
  CHECK(runtime == CUDART_VERSION);
  CHECK(driver == CUDART_VERSION);

  CHECK(std::string(cudaGetErrorName(cudaErrorMemoryAllocation)) == "cudaErrorMemoryAllocation");
  CHECK(std::string(cudaGetErrorString(cudaErrorMemoryAllocation)) == "out of memory");
  CHECK(std::string(cudaGetErrorName(cudaErrorIllegalAddress)) == "cudaErrorIllegalAddress");
}

// ---- device memory ------------------------------------------------------------------------------

TEST_CASE("emulated cudart: cudaMalloc returns 256-byte aligned, NaN-filled memory outside the host's",
          "[cuda][emulated]") {
  DeviceBuffer a(10 * sizeof(float)), b(3);
  CHECK(reinterpret_cast<uintptr_t>(a.p) % 256 == 0);
  CHECK(reinterpret_cast<uintptr_t>(b.p) % 256 == 0);
  CHECK(device::in_device_region(a.p));
  CHECK_FALSE(device::in_device_region(&a));
  CHECK(device::is_device_range(a.p, a.bytes));
  CHECK_FALSE(device::is_device_range(a.p, a.bytes + 1));
  CHECK(device::is_device_range(a.as<unsigned char>() + a.bytes, 0));

  std::vector<unsigned char> raw = download<unsigned char>(a.p, a.bytes);
  for (unsigned char byte : raw) REQUIRE(byte == 0xFF);
  std::vector<float> as_floats(10);
  std::memcpy(as_floats.data(), raw.data(), raw.size());
  for (float f : as_floats) CHECK(std::isnan(f));

  void* none = reinterpret_cast<void*>(1);
  REQUIRE_CUDA_OK(cudaMalloc(&none, 0));
  CHECK(none == nullptr);
  CHECK(cudaMalloc(nullptr, 16) == cudaErrorInvalidValue);
  REQUIRE_CUDA_OK(cudaFree(nullptr));
  CHECK(cudaFree(a.as<unsigned char>() + 4) == cudaErrorInvalidValue);  // not what cudaMalloc returned
  int on_stack = 0;
  CHECK(cudaFree(&on_stack) == cudaErrorInvalidValue);
  CHECK(cudaGetLastError() == cudaErrorInvalidValue);
  CHECK(cudaGetLastError() == cudaSuccess);
}

TEST_CASE("emulated cudart child: a 1 MiB card", "[.cudart-small-card]") {
  cudaDeviceProp p;
  REQUIRE_CUDA_OK(cudaGetDeviceProperties(&p, 0));
  REQUIRE(p.totalGlobalMem == (size_t{1} << 20));
  size_t free = 0, total = 0;
  REQUIRE_CUDA_OK(cudaMemGetInfo(&free, &total));
  REQUIRE(total == (size_t{1} << 20));
  REQUIRE(free == total);

  void* whole = nullptr;
  REQUIRE_CUDA_OK(cudaMalloc(&whole, size_t{1} << 20));
  REQUIRE_CUDA_OK(cudaMemGetInfo(&free, &total));
  REQUIRE(free == 0);
  void* more = nullptr;
  REQUIRE(cudaMalloc(&more, 1) == cudaErrorMemoryAllocation);
  // Out of memory is not sticky: reported once, and the device goes on working.
  REQUIRE(cudaGetLastError() == cudaErrorMemoryAllocation);
  REQUIRE(cudaGetLastError() == cudaSuccess);
  REQUIRE_CUDA_OK(cudaFree(whole));
  REQUIRE_CUDA_OK(cudaMalloc(&more, 1000));
  REQUIRE_CUDA_OK(cudaMemGetInfo(&free, &total));
  REQUIRE(free == (size_t{1} << 20) - 1024);  // sizes count rounded up to 256 bytes
  REQUIRE_CUDA_OK(cudaFree(more));
}

TEST_CASE("emulated cudart child: a device memory size that does not parse", "[.cudart-bad-size]") {
  int count = -1;
  REQUIRE(cudaGetDeviceCount(&count) == cudaErrorInitializationError);
  REQUIRE(count == 0);
  void* p = nullptr;
  REQUIRE(cudaMalloc(&p, 16) == cudaErrorInitializationError);
}

TEST_CASE("emulated cudart: DIFFUSE_EMU_DEVICE_MEMORY sets the card's memory, and out of memory is reported",
          "[cuda][emulated]") {
  const RunResult small = run_self("emulated cudart child: a 1 MiB card", {{"DIFFUSE_EMU_DEVICE_MEMORY", "1M"}});
  INFO(small.output);
  CHECK(small.exit_code == 0);
  CHECK(contains(small.output, "All tests passed"));

  const RunResult bad = run_self("emulated cudart child: a device memory size that does not parse",
                                 {{"DIFFUSE_EMU_DEVICE_MEMORY", "lots"}});
  INFO(bad.output);
  CHECK(bad.exit_code == 0);
  CHECK(contains(bad.output, "DIFFUSE_EMU_DEVICE_MEMORY must be a byte count"));
  CHECK(contains(bad.output, "got 'lots'"));
}

// ---- copies -------------------------------------------------------------------------------------

TEST_CASE("emulated cudart: copies and memsets whose device side is not inside one allocation are refused",
          "[cuda][emulated]") {
  DeviceBuffer a(100), b(100);
  std::vector<unsigned char> host(200, 7);
  DeviceStream s(cudaStreamNonBlocking);

  CHECK(cudaMemcpy(a.p, host.data(), 101, cudaMemcpyHostToDevice) == cudaErrorInvalidValue);  // past the end
  CHECK(cudaMemcpy(host.data(), a.as<unsigned char>() + 50, 51, cudaMemcpyDeviceToHost) == cudaErrorInvalidValue);
  CHECK(cudaMemcpy(host.data(), a.p, 10, cudaMemcpyHostToDevice) == cudaErrorInvalidValue);  // kind swapped
  CHECK(cudaMemcpy(a.p, b.p, 10, cudaMemcpyHostToDevice) == cudaErrorInvalidValue);  // device as host source
  CHECK(cudaMemcpy(a.p, host.data(), 10, static_cast<cudaMemcpyKind>(7)) == cudaErrorInvalidMemcpyDirection);
  CHECK(cudaMemcpy(nullptr, a.p, 10, cudaMemcpyDeviceToHost) == cudaErrorInvalidValue);
  CHECK(cudaMemcpyAsync(b.p, a.p, 100, cudaMemcpyDeviceToDevice, s.s) == cudaSuccess);
  CHECK(cudaMemcpyAsync(b.as<unsigned char>() + 1, a.p, 100, cudaMemcpyDeviceToDevice, s.s) == cudaErrorInvalidValue);
  CHECK(cudaMemsetAsync(a.as<unsigned char>() + 90, 0, 11, s.s) == cudaErrorInvalidValue);
  CHECK(cudaMemset(host.data(), 0, 10) == cudaErrorInvalidValue);  // host memory
  CHECK(cudaMemcpy(host.data(), a.p, 0, cudaMemcpyDeviceToHost) == cudaSuccess);  // nothing to copy

  cudaStream_t gone = nullptr;
  REQUIRE_CUDA_OK(cudaStreamCreate(&gone));
  REQUIRE_CUDA_OK(cudaStreamDestroy(gone));
  CHECK(cudaMemsetAsync(a.p, 0, 10, gone) == cudaErrorInvalidResourceHandle);
  REQUIRE_CUDA_OK(cudaStreamSynchronize(s.s));
  cudaGetLastError();

  // cudaMemcpyDefault takes the direction from the pointers.
  REQUIRE_CUDA_OK(cudaMemcpy(a.p, host.data(), 100, cudaMemcpyDefault));
  CHECK(download<unsigned char>(a.p, 100) == std::vector<unsigned char>(100, 7));
}

TEST_CASE("emulated cudart: cudaMemcpy3DAsync copies a pitched box between positions and checks its bounds",
          "[cuda][emulated]") {
  // A 2 x 3 box of 4-byte rows (depth 2) from a dense [2][3][4] source into a [2][5][8] destination
  // at x = 2, y = 1: nn/cuda/conv.cpp's padding copy in miniature.
  constexpr size_t kW = 4, kH = 3, kD = 2, kDstPitch = 8, kDstRows = 5;
  std::vector<unsigned char> src_host(kW * kH * kD);
  for (size_t i = 0; i < src_host.size(); ++i) src_host[i] = static_cast<unsigned char>(i + 1);
  DeviceBuffer src(src_host.size()), dst(kDstPitch * kDstRows * kD);
  REQUIRE_CUDA_OK(cudaMemcpy(src.p, src_host.data(), src_host.size(), cudaMemcpyHostToDevice));
  REQUIRE_CUDA_OK(cudaMemset(dst.p, 0, dst.bytes));

  cudaMemcpy3DParms c{};
  c.srcPtr = make_cudaPitchedPtr(src.p, kW, kW, kH);
  c.dstPtr = make_cudaPitchedPtr(dst.p, kDstPitch, kDstPitch, kDstRows);
  c.dstPos = make_cudaPos(2, 1, 0);
  c.extent = make_cudaExtent(kW, kH, kD);
  c.kind = cudaMemcpyDeviceToDevice;
  DeviceStream s(cudaStreamNonBlocking);
  REQUIRE_CUDA_OK(cudaMemcpy3DAsync(&c, s.s));
  REQUIRE_CUDA_OK(cudaStreamSynchronize(s.s));
  const std::vector<unsigned char> got = download<unsigned char>(dst.p, dst.bytes);
  for (size_t z = 0; z < kD; ++z)
    for (size_t y = 0; y < kDstRows; ++y)
      for (size_t x = 0; x < kDstPitch; ++x) {
        const bool inside = y >= 1 && y < 1 + kH && x >= 2 && x < 2 + kW;
        const unsigned char want = inside ? src_host[(z * kH + (y - 1)) * kW + (x - 2)] : 0;
        REQUIRE(got[(z * kDstRows + y) * kDstPitch + x] == want);
      }

  cudaMemcpy3DParms too_wide = c;
  too_wide.dstPtr.pitch = 3;  // narrower than a row
  CHECK(cudaMemcpy3DAsync(&too_wide, s.s) == cudaErrorInvalidPitchValue);
  cudaMemcpy3DParms off_the_end = c;
  off_the_end.dstPos = make_cudaPos(2, 3, 0);  // rows 3..5 of a 5-row slice
  CHECK(cudaMemcpy3DAsync(&off_the_end, s.s) == cudaErrorInvalidValue);
  cudaMemcpy3DParms past_allocation = c;
  past_allocation.dstPos = make_cudaPos(2, 1, 1);  // the second slice would land past the end
  CHECK(cudaMemcpy3DAsync(&past_allocation, s.s) == cudaErrorInvalidValue);
  CHECK(cudaMemcpy3DAsync(nullptr, s.s) == cudaErrorInvalidValue);
  cudaGetLastError();
}

// ---- streams and events -------------------------------------------------------------------------

TEST_CASE("emulated cudart: work runs only when the host synchronises, in order per stream",
          "[cuda][emulated]") {
  std::vector<int> order;
  DeviceStream s(cudaStreamNonBlocking);
  Event e;
  queue_marker(s.s, order, 1);
  queue_marker(s.s, order, 2);
  REQUIRE_CUDA_OK(cudaEventRecord(e.e, s.s));
  CHECK(order.empty());
  CHECK(cudaStreamQuery(s.s) == cudaErrorNotReady);  // a query never runs work
  CHECK(cudaEventQuery(e.e) == cudaErrorNotReady);
  CHECK(order.empty());
  CHECK(cudaGetLastError() == cudaSuccess);  // not-ready is not an error
  REQUIRE_CUDA_OK(cudaEventSynchronize(e.e));
  CHECK(order == std::vector<int>{1, 2});
  REQUIRE_CUDA_OK(cudaEventQuery(e.e));
  REQUIRE_CUDA_OK(cudaStreamQuery(s.s));
}

TEST_CASE("emulated cudart: events order work across two streams, and nothing else does", "[cuda][emulated]") {
  std::vector<int> order;
  DeviceStream producer(cudaStreamNonBlocking), consumer(cudaStreamNonBlocking);
  Event produced;

  SECTION("a wait on an event flushes the producer up to the record first") {
    queue_marker(producer.s, order, 1);
    REQUIRE_CUDA_OK(cudaEventRecord(produced.e, producer.s));
    queue_marker(producer.s, order, 3);  // after the record: not waited for
    REQUIRE_CUDA_OK(cudaStreamWaitEvent(consumer.s, produced.e, 0));
    queue_marker(consumer.s, order, 2);
    REQUIRE_CUDA_OK(cudaStreamSynchronize(consumer.s));
    CHECK(order == std::vector<int>{1, 2});
    REQUIRE_CUDA_OK(cudaStreamSynchronize(producer.s));
    CHECK(order == std::vector<int>{1, 2, 3});
  }
  SECTION("without the wait, syncing the consumer leaves the producer's work queued") {
    DeviceBuffer data(64), copy(64);
    REQUIRE_CUDA_OK(cudaMemsetAsync(data.p, 1, 64, producer.s));
    REQUIRE_CUDA_OK(cudaMemcpyAsync(copy.p, data.p, 64, cudaMemcpyDeviceToDevice, consumer.s));
    REQUIRE_CUDA_OK(cudaStreamSynchronize(consumer.s));
    CHECK(download<unsigned char>(copy.p, 64) == std::vector<unsigned char>(64, 0xFF));  // copied before the memset
    REQUIRE_CUDA_OK(cudaDeviceSynchronize());
    CHECK(download<unsigned char>(data.p, 64) == std::vector<unsigned char>(64, 1));
  }
  SECTION("with the wait, the copy sees the memset") {
    DeviceBuffer data(64), copy(64);
    REQUIRE_CUDA_OK(cudaMemsetAsync(data.p, 1, 64, producer.s));
    REQUIRE_CUDA_OK(cudaEventRecord(produced.e, producer.s));
    REQUIRE_CUDA_OK(cudaStreamWaitEvent(consumer.s, produced.e, 0));
    REQUIRE_CUDA_OK(cudaMemcpyAsync(copy.p, data.p, 64, cudaMemcpyDeviceToDevice, consumer.s));
    REQUIRE_CUDA_OK(cudaStreamSynchronize(consumer.s));
    CHECK(download<unsigned char>(copy.p, 64) == std::vector<unsigned char>(64, 1));
  }
}

TEST_CASE("emulated cudart: the legacy default stream is a barrier for blocking streams only",
          "[cuda][emulated]") {
  std::vector<int> order;
  DeviceStream blocking(cudaStreamDefault), non_blocking(cudaStreamNonBlocking);

  queue_marker(blocking.s, order, 1);
  queue_marker(non_blocking.s, order, 10);
  queue_marker(nullptr, order, 2);  // waits for 1, not for 10
  REQUIRE_CUDA_OK(cudaStreamSynchronize(nullptr));
  CHECK(order == std::vector<int>{1, 2});

  queue_marker(cudaStreamLegacy, order, 3);
  queue_marker(blocking.s, order, 4);  // waits for 3
  REQUIRE_CUDA_OK(cudaStreamSynchronize(blocking.s));
  CHECK(order == std::vector<int>{1, 2, 3, 4});

  // A synchronous copy is on the legacy stream: it waits for blocking streams' earlier work...
  DeviceBuffer data(16);
  REQUIRE_CUDA_OK(cudaMemsetAsync(data.p, 5, 16, blocking.s));
  CHECK(download<unsigned char>(data.p, 16) == std::vector<unsigned char>(16, 5));
  // ...and not for a non-blocking stream's (which a real GPU may not have run yet either).
  REQUIRE_CUDA_OK(cudaMemsetAsync(data.p, 6, 16, non_blocking.s));
  CHECK(download<unsigned char>(data.p, 16) == std::vector<unsigned char>(16, 5));
  REQUIRE_CUDA_OK(cudaDeviceSynchronize());
  CHECK(order == std::vector<int>{1, 2, 3, 4, 10});
  CHECK(download<unsigned char>(data.p, 16) == std::vector<unsigned char>(16, 6));
}

TEST_CASE("emulated cudart: event timing is the measured time of the work between the records",
          "[cuda][emulated]") {
  DeviceStream s(cudaStreamNonBlocking);
  Event start, stop, idle;
  REQUIRE_CUDA_OK(cudaEventRecord(start.e, s.s));
  REQUIRE_CUDA_OK(device::enqueue(s.s, "busy work", [] { busy_wait_ms(20); }));
  REQUIRE_CUDA_OK(cudaEventRecord(stop.e, s.s));
  float ms = -1;
  CHECK(cudaEventElapsedTime(&ms, start.e, stop.e) == cudaErrorNotReady);
  REQUIRE_CUDA_OK(cudaEventSynchronize(stop.e));
  REQUIRE_CUDA_OK(cudaEventElapsedTime(&ms, start.e, stop.e));
  CHECK(ms >= 19.0f);
  CHECK(ms < 2000.0f);

  // The clock stands still while the host works: no device work, no device time.
  busy_wait_ms(20);
  REQUIRE_CUDA_OK(cudaEventRecord(idle.e, s.s));
  REQUIRE_CUDA_OK(cudaEventSynchronize(idle.e));
  REQUIRE_CUDA_OK(cudaEventElapsedTime(&ms, stop.e, idle.e));
  CHECK(ms == 0.0f);

  Event untimed(cudaEventDisableTiming), never;
  REQUIRE_CUDA_OK(cudaEventRecord(untimed.e, s.s));
  REQUIRE_CUDA_OK(cudaStreamSynchronize(s.s));
  CHECK(cudaEventElapsedTime(&ms, start.e, untimed.e) == cudaErrorInvalidResourceHandle);
  CHECK(cudaEventElapsedTime(&ms, start.e, never.e) == cudaErrorInvalidResourceHandle);
  CHECK(cudaEventElapsedTime(nullptr, start.e, stop.e) == cudaErrorInvalidValue);
  cudaGetLastError();
}

TEST_CASE("emulated cudart: host threads may use the device at once, each with its own last error",
          "[cuda][emulated]") {
  auto worker = [](unsigned char value, bool* ok) {
    cudaStream_t s = nullptr;
    void* p = nullptr;
    *ok = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess && cudaMalloc(&p, 4096) == cudaSuccess;
    std::vector<unsigned char> host(4096);
    for (int round = 0; round < 50 && *ok; ++round) {
      const unsigned char v = static_cast<unsigned char>(value + round);
      *ok = cudaMemsetAsync(p, v, 4096, s) == cudaSuccess &&
            cudaMemcpyAsync(host.data(), p, 4096, cudaMemcpyDeviceToHost, s) == cudaSuccess &&
            cudaStreamSynchronize(s) == cudaSuccess && host == std::vector<unsigned char>(4096, v);
    }
    // An error on this thread is this thread's last error only.
    *ok = *ok && cudaSetDevice(value) == cudaErrorInvalidDevice && cudaGetLastError() == cudaErrorInvalidDevice;
    *ok = *ok && cudaFree(p) == cudaSuccess && cudaStreamDestroy(s) == cudaSuccess;
  };
  bool ok1 = false, ok2 = false;
  std::thread t1(worker, 1, &ok1), t2(worker, 100, &ok2);
  t1.join();
  t2.join();
  CHECK(ok1);
  CHECK(ok2);
  CHECK(cudaGetLastError() == cudaSuccess);
}

namespace {
void some_kernel() {}
void reserving_kernel() {}
void lowered_kernel() {}
}  // namespace

TEST_CASE("emulated cudart: cudaFuncSetAttribute opts a kernel into more dynamic shared memory, up to 227 KiB",
          "[cuda][emulated]") {
  const void* kernel = reinterpret_cast<const void*>(&some_kernel);
  CHECK(device::max_dynamic_shared_bytes(kernel) == 48 * 1024);
  REQUIRE_CUDA_OK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 100 * 1024));
  CHECK(device::max_dynamic_shared_bytes(kernel) == 100 * 1024);
  CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 227 * 1024 + 1) ==
        cudaErrorInvalidValue);
  CHECK(cudaPeekAtLastError() == cudaErrorInvalidValue);  // peeking does not clear
  CHECK(cudaGetLastError() == cudaErrorInvalidValue);
  CHECK(cudaPeekAtLastError() == cudaSuccess);
  CHECK(cudaFuncSetAttribute(nullptr, cudaFuncAttributeMaxDynamicSharedMemorySize, 0) ==
        cudaErrorInvalidDeviceFunction);
  cudaGetLastError();
}

TEST_CASE("a launch's dynamic shared memory is reserved once per kernel, and a launch over its limit is refused",
          "[cuda][emulated]") {
  // kernels/dynamic_smem.h, as every DIFFUSE_LAUNCH calls it (on a GPU and here): the kernel's limit
  // is set to what a launch asks for, even below 48 KiB (a kernel's static arrays count against the
  // default), and raised only when a launch asks for more.
  const void* kernel = reinterpret_cast<const void*>(&reserving_kernel);
  diffuse::kernels::reserve_dynamic_smem(kernel, 1000, __FILE__, __LINE__);
  CHECK(device::max_dynamic_shared_bytes(kernel) == 1000);
  diffuse::kernels::reserve_dynamic_smem(kernel, 500, __FILE__, __LINE__);
  CHECK(device::max_dynamic_shared_bytes(kernel) == 1000);
  diffuse::kernels::reserve_dynamic_smem(kernel, 100 * 1024, __FILE__, __LINE__);
  CHECK(device::max_dynamic_shared_bytes(kernel) == 100 * 1024);
  diffuse::kernels::reserve_dynamic_smem(kernel, 0, __FILE__, __LINE__);  // none asked: nothing set
  CHECK(device::max_dynamic_shared_bytes(kernel) == 100 * 1024);
  CHECK_THROWS_WITH(diffuse::kernels::reserve_dynamic_smem(kernel, 227 * 1024 + 16, "k.cu", 7),
                    Catch::Contains("cudaFuncSetAttribute(MaxDynamicSharedMemorySize)") && Catch::Contains("k.cu:7"));

  // The launch check: bytes over the kernel's limit are refused, naming the kernel and the site.
  // (Reserved at 60 KiB, then lowered behind the launcher's back: the launcher does not ask again.)
  const void* lowered = reinterpret_cast<const void*>(&lowered_kernel);
  device::prepare_dynamic_smem(lowered, 60 * 1024, "lowered_kernel", "k.cu", 9);
  REQUIRE_CUDA_OK(cudaFuncSetAttribute(lowered, cudaFuncAttributeMaxDynamicSharedMemorySize, 10 * 1024));
  CHECK_THROWS_WITH(device::prepare_dynamic_smem(lowered, 50 * 1024, "lowered_kernel", "k.cu", 9),
                    Catch::Contains("DIFFUSE_LAUNCH at k.cu:9: lowered_kernel asks for 51200 bytes of dynamic shared "
                                    "memory, over its limit of 10240"));
  device::prepare_dynamic_smem(lowered, 10 * 1024, "lowered_kernel", "k.cu", 9);  // within it: fine
}
