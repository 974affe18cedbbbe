// Planted-bug tests for the emulated device's runtime (issue 10, section 2): host code that
// misuses device memory or the API the way a GPU would punish, and the check that catches it:
//  - a host read of device memory stops the program with a message naming the allocation;
//  - a host read of an async device-to-host copy's destination before the sync sees stale data;
//  - work writing past an allocation's end is caught, in its slack (sticky
//    cudaErrorIllegalAddress) and in the guard page (the process dies naming the work);
//  - work that throws makes cudaErrorLaunchFailure sticky, naming the work;
//  - a device allocation leaked at exit ends the process with status 86, naming the size.
// Whatever kills the process or fails the device for good runs in a child: this binary re-run on
// a hidden case (tag [.…]: ctest and plain runs skip it).
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <csignal>
#include <regex>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/emulated_device/device.h"
#include "support/device_memory.h"
#include "support/process.h"

using namespace diffuse::test;
namespace device = diffuse::emulated_device;

namespace {

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }


}  // namespace

TEST_CASE("planted child: the host reads device memory", "[.planted-host-read]") {
  float* p = nullptr;
  REQUIRE_CUDA_OK(cudaMalloc(&p, 1000));
  volatile float leaked = p[7];  // faults: the host may not touch device memory
  (void)leaked;
}

TEST_CASE("planted: a host read of device memory stops the program, naming the allocation", "[cuda][emulated]") {
  const RunResult r = run_self("planted child: the host reads device memory");
  INFO(r.output);
  CHECK(r.exit_code == 128 + SIGSEGV);
  CHECK(contains(r.output, "emulated device: host code dereferenced device memory at 0x"));
  CHECK(std::regex_search(r.output, std::regex(R"(\(allocation #[0-9]+ of 1000 bytes, offset 28\))")));
}

TEST_CASE("planted: a host read of an async copy's destination before the sync sees stale data",
          "[cuda][emulated]") {
  const std::vector<float> values{1.5f, 2.5f, 3.5f, 4.5f};
  DeviceBuffer d(values.size() * sizeof(float));
  REQUIRE_CUDA_OK(cudaMemcpy(d.p, values.data(), d.bytes, cudaMemcpyHostToDevice));
  DeviceStream s;
  std::vector<float> host(values.size(), -1.0f);
  REQUIRE_CUDA_OK(cudaMemcpyAsync(host.data(), d.p, d.bytes, cudaMemcpyDeviceToHost, s.s));
  CHECK(host == std::vector<float>(values.size(), -1.0f));  // the bug: read before the sync
  REQUIRE_CUDA_OK(cudaStreamSynchronize(s.s));
  CHECK(host == values);

  // The other direction: the host source is taken at the call, so changing it afterwards is safe.
  std::vector<float> source{9.0f, 9.0f, 9.0f, 9.0f};
  REQUIRE_CUDA_OK(cudaMemcpyAsync(d.p, source.data(), d.bytes, cudaMemcpyHostToDevice, s.s));
  source.assign(4, 0.0f);
  REQUIRE_CUDA_OK(cudaStreamSynchronize(s.s));
  std::vector<float> back(4);
  REQUIRE_CUDA_OK(cudaMemcpy(back.data(), d.p, d.bytes, cudaMemcpyDeviceToHost));
  CHECK(back == std::vector<float>(4, 9.0f));
}

TEST_CASE("planted child: work writes one element past its allocation", "[.planted-slack-write]") {
  float* p = nullptr;
  REQUIRE_CUDA_OK(cudaMalloc(&p, 3 * sizeof(float)));
  REQUIRE_CUDA_OK(device::enqueue(nullptr, "kernel overrun launched at planted.cu:1", [p] { p[3] = 0.0f; }));
  REQUIRE(cudaDeviceSynchronize() == cudaErrorIllegalAddress);
  void* q = nullptr;
  REQUIRE(cudaMalloc(&q, 16) == cudaErrorIllegalAddress);  // sticky: the device has failed
  REQUIRE(cudaGetLastError() == cudaErrorIllegalAddress);
  REQUIRE(cudaGetLastError() == cudaErrorIllegalAddress);
  cudaFree(p);
}

TEST_CASE("planted child: work writes far past its allocation", "[.planted-guard-write]") {
  float* p = nullptr;
  REQUIRE_CUDA_OK(cudaMalloc(&p, 64 * sizeof(float)));
  REQUIRE_CUDA_OK(device::enqueue(nullptr, "kernel far launched at planted.cu:2", [p] { p[64 + 100] = 0.0f; }));
  cudaDeviceSynchronize();
}

TEST_CASE("planted: writes past an allocation's end are caught, in its slack and in the guard page",
          "[cuda][emulated]") {
  const RunResult slack = run_self("planted child: work writes one element past its allocation");
  INFO(slack.output);
  CHECK(slack.exit_code == 0);
  CHECK(std::regex_search(slack.output, std::regex("out-of-bounds write by kernel overrun launched at planted.cu:1 "
                                                   "past the end of allocation #[0-9]+ of 12 bytes")));

  const RunResult guard = run_self("planted child: work writes far past its allocation");
  INFO(guard.output);
  CHECK(guard.exit_code == 128 + SIGSEGV);
  CHECK(std::regex_search(guard.output, std::regex("out-of-bounds access by kernel far launched at planted.cu:2: "
                                                   "address 0x[0-9a-f]+ is 400 bytes past the end of allocation "
                                                   "#[0-9]+ of 256 bytes")));
}

TEST_CASE("planted child: work throws", "[.planted-work-throws]") {
  REQUIRE_CUDA_OK(device::enqueue(nullptr, "kernel thrower", [] { throw std::runtime_error("planted failure"); }));
  REQUIRE(cudaDeviceSynchronize() == cudaErrorLaunchFailure);
  void* p = nullptr;
  REQUIRE(cudaMalloc(&p, 16) == cudaErrorLaunchFailure);
  REQUIRE(cudaStreamSynchronize(nullptr) == cudaErrorLaunchFailure);
}

TEST_CASE("planted: failing work makes cudaErrorLaunchFailure sticky and names the work", "[cuda][emulated]") {
  const RunResult r = run_self("planted child: work throws");
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(contains(r.output, "kernel thrower: planted failure"));
}

TEST_CASE("planted child: a device allocation is never freed", "[.planted-leak]") {
  void* p = nullptr;
  REQUIRE_CUDA_OK(cudaMalloc(&p, 12345));
}

TEST_CASE("planted: a device allocation leaked at exit fails the process with status 86", "[cuda][emulated]") {
  const RunResult leak = run_self("planted child: a device allocation is never freed");
  INFO(leak.output);
  CHECK(leak.exit_code == 86);
  CHECK(std::regex_search(leak.output, std::regex(R"(1 device allocation\(s\) leaked at exit: #[0-9]+ \(12345 bytes\))")));

  const RunResult allowed =
      run_self("planted child: a device allocation is never freed", {{"DIFFUSE_EMU_LEAK_CHECK", "0"}});
  INFO(allowed.output);
  CHECK(allowed.exit_code == 0);
}
