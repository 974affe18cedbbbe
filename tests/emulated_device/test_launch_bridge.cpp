// The kernel-launch bridge of the emulated device (kernels/emulator/device_launch.h,
// kernels/emulated_device/kernel_queue.cpp): what a launch refuses at once, naming the kernel and
// the launch site, and that an accepted launch runs only when the host synchronises with its
// stream. Tagged [emulated]: on a real GPU these launches would behave differently (a host
// pointer faults inside the kernel instead of being refused).
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <cmath>
#include <string>
#include <vector>

#include "diffuse/error.h"
#include "support/device_memory.h"
#include "tests/emulated_device/launch_bridge_kernels.h"

namespace lb = diffuse::kernels::cuda::launch_bridge_test;
using Catch::Matchers::Contains;

using diffuse::test::DeviceBuffer;
using diffuse::test::download;

TEST_CASE("launch bridge: a host pointer argument is refused at launch, naming kernel, argument and site",
          "[emulated]") {
  std::vector<float> host(64, 0.0f);
  int runs = 0;
  REQUIRE_THROWS_WITH(lb::fill(host.data(), 64, 1.0f, 32, &runs, nullptr),
                      Contains("bridge_fill_kernel") && Contains("argument 0") &&
                          Contains("launch_bridge_kernels.cu:") && Contains("a host pointer passed to a kernel"));
  // Nothing was queued, and the device is still healthy.
  REQUIRE_CUDA_OK(cudaDeviceSynchronize());
  CHECK(runs == 0);
  CHECK(host[0] == 0.0f);

  // A null pointer is a valid argument (the kernel does not touch it for n = 0).
  lb::fill(nullptr, 0, 1.0f, 32, &runs, nullptr);
  REQUIRE_CUDA_OK(cudaDeviceSynchronize());
  CHECK(runs == 1);
}

TEST_CASE("launch bridge: a bad launch configuration is refused at launch with run_grid's message", "[emulated]") {
  DeviceBuffer d(64 * sizeof(float));
  int runs = 0;
  // The same text as the SIMT emulator's run_grid (kernels/emulator/interleaver.cpp, check_launch).
  REQUIRE_THROWS_WITH(lb::fill(d.as<float>(), 64, 1.0f, 2048, &runs, nullptr),
                      Contains("DIFFUSE_LAUNCH at ") && Contains("launch_bridge_kernels.cu:") &&
                          Contains("block (2048,1,1) must have 1..1024 threads (z at most 64)"));
  REQUIRE_THROWS_WITH(lb::fill_grid(d.as<float>(), 64, 1.0f, 1, 32, 227 * 1024 + 1, &runs, nullptr),
                      Contains("232449 bytes of dynamic shared memory exceed 227 KiB"));
  // Refused before queueing: the device has no failure to report and nothing ran.
  REQUIRE_CUDA_OK(cudaDeviceSynchronize());
  REQUIRE_CUDA_OK(cudaGetLastError());
  CHECK(runs == 0);
  // The limit itself is allowed (the virtual card's opt-in maximum).
  lb::fill_grid(d.as<float>(), 64, 2.0f, 1, 32, 227 * 1024, &runs, nullptr);
  REQUIRE_CUDA_OK(cudaDeviceSynchronize());
  CHECK(runs == 1);
  CHECK(download<float>(d.p, 64) == std::vector<float>(64, 2.0f));
}

TEST_CASE("launch bridge: a launch on a stream runs only when the host synchronises with it", "[emulated]") {
  cudaStream_t s = nullptr;
  REQUIRE_CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  DeviceBuffer d(100 * sizeof(float));
  int runs = 0;
  float value = 3.0f;
  lb::fill(d.as<float>(), 100, value, 64, &runs, s);
  value = -1.0f;  // the launch captured its arguments by value
  CHECK(runs == 0);  // queued, not run
  lb::fill_grid(d.as<float>(), 100, 5.0f, 0, 64, 0, &runs, s);  // an empty grid queues nothing
  REQUIRE_CUDA_OK(cudaStreamSynchronize(s));
  CHECK(runs == 1);
  CHECK(download<float>(d.p, 100) == std::vector<float>(100, 3.0f));

  // Two launches in order on the stream: the later one wins, both run at the sync.
  lb::fill(d.as<float>(), 100, 7.0f, 32, &runs, s);
  lb::fill_grid(d.as<float>(), 100, 8.0f, 3, 32, 0, &runs, s);
  CHECK(runs == 1);
  cudaEvent_t done = nullptr;
  REQUIRE_CUDA_OK(cudaEventCreate(&done));
  REQUIRE_CUDA_OK(cudaEventRecord(done, s));
  REQUIRE_CUDA_OK(cudaEventSynchronize(done));
  CHECK(runs == 3);
  CHECK(download<float>(d.p, 100) == std::vector<float>(100, 8.0f));
  REQUIRE_CUDA_OK(cudaEventDestroy(done));
  REQUIRE_CUDA_OK(cudaStreamDestroy(s));
}

TEST_CASE("launch bridge: a launch on a destroyed stream is refused naming the site and the CUDA error",
          "[emulated]") {
  cudaStream_t s = nullptr;
  REQUIRE_CUDA_OK(cudaStreamCreate(&s));
  REQUIRE_CUDA_OK(cudaStreamDestroy(s));
  DeviceBuffer d(8 * sizeof(float));
  int runs = 0;
  REQUIRE_THROWS_WITH(lb::fill(d.as<float>(), 8, 1.0f, 32, &runs, s),
                      Contains("launch_bridge_kernels.cu:") && Contains("bridge_fill_kernel") &&
                          Contains("cudaErrorInvalidResourceHandle"));
  cudaGetLastError();
  REQUIRE_CUDA_OK(cudaDeviceSynchronize());
  CHECK(runs == 0);
}
