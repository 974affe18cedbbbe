// CUDA graphs by stream capture, at the runtime level (kernels/emulated_device/graphs.cpp on the
// emulated device, the driver on a GPU): captured work is recorded, not run; a replay of a few
// kernels, a memset, a device copy and a cuBLAS GEMM gives the eager result bit for bit and reads
// the device memory of its launch; and every call the runtime refuses during capture fails with
// its documented code and invalidates the capture, whose end then yields no graph. A side stream
// forked off a capture and joined back through events (the data-parallel step's gradient
// all-reduce does so) is captured into the same graph, and the fork/join rules are enforced. A
// host function (cudaLaunchHostFunc) runs in stream order, and at every replay when captured.
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <future>
#include <thread>
#include <vector>

#include "cuda_test_util.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"

using namespace diffuse;
using namespace diffuse::test;

namespace {

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::vector<float> ramp(size_t n, float start, float step) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = start + step * static_cast<float>(i % 97);
  return v;
}

// d = copy of silu(2·a) · b (an [m, k] by [k, n] GEMM), with c zeroed first: kernels, a memset, a
// cuBLAS call and a device-to-device copy, all on `s`.
struct Pipeline {
  static constexpr int64_t m = 24, k = 40, n = 16;
  DeviceBuffer a = DeviceBuffer::from(ramp(m * k, -1.5f, 0.03f));
  DeviceBuffer b = DeviceBuffer::from(ramp(k * n, 0.7f, -0.02f));
  DeviceBuffer t = device_floats(m * k);
  DeviceBuffer c = device_floats(m * n);
  DeviceBuffer d = device_floats(m * n);

  void run(cudaStream_t s) const {
    REQUIRE_CUDA_OK(cudaMemsetAsync(c.p, 0, c.bytes, s));
    kernels::cuda::scale(m * k, 2.0f, a.as<float>(), t.as<float>(), s);
    kernels::cuda::silu_forward(m * k, t.as<float>(), t.as<float>(), s);
    kernels::cuda::gemm(kernels::DenseType::f32, false, false, m, n, k, 1.0f, t.p, k, b.p, n, 1.0f, c.p, n,
                        cuda::device_memory(), s);
    REQUIRE_CUDA_OK(cudaMemcpyAsync(d.p, c.p, c.bytes, cudaMemcpyDeviceToDevice, s));
  }
  void poison_outputs() const {
    for (const DeviceBuffer* buf : {&t, &c, &d}) buf->poison();
  }
};

cudaStream_t nn_stream() { return static_cast<cudaStream_t>(current_stream()); }

struct Event {
  cudaEvent_t e = nullptr;
  Event() { REQUIRE_CUDA_OK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming)); }
  ~Event() { cudaEventDestroy(e); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
};

// Begins a global-mode capture on `s` and records one memset into it.
void begin_capture_with_work(cudaStream_t s, const DeviceBuffer& buf) {
  REQUIRE_CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  REQUIRE_CUDA_OK(cudaMemsetAsync(buf.p, 0, buf.bytes, s));
}

// The capture on `s` was invalidated: it says so, refuses more work, and ends without a graph.
void require_invalidated(cudaStream_t s, const DeviceBuffer& buf) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  REQUIRE_CUDA_OK(cudaStreamIsCapturing(s, &status));
  CHECK(status == cudaStreamCaptureStatusInvalidated);
  CHECK(cudaMemsetAsync(buf.p, 1, buf.bytes, s) == cudaErrorStreamCaptureInvalidated);
  int not_a_graph = 0;
  cudaGraph_t graph = reinterpret_cast<cudaGraph_t>(&not_a_graph);  // must be overwritten with null
  CHECK(cudaStreamEndCapture(s, &graph) == cudaErrorStreamCaptureInvalidated);
  CHECK(graph == nullptr);
  cudaGetLastError();
  REQUIRE_CUDA_OK(cudaStreamIsCapturing(s, &status));
  CHECK(status == cudaStreamCaptureStatusNone);
}

}  // namespace

TEST_CASE("cuda graphs: a captured pipeline is recorded, not run, and replays bit-identically to eager",
          "[cuda][graphs]") {
  DIFFUSE_CUDA_TEST_GUARD();
  Pipeline p;
  const cudaStream_t s = nn_stream();
  p.run(s);  // eager, also creating the cuBLAS handle and workspace before any capture
  REQUIRE_CUDA_OK(cudaStreamSynchronize(s));
  const std::vector<float> eager = p.d.get<float>();

  p.poison_outputs();
  REQUIRE_CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  REQUIRE_CUDA_OK(cudaStreamIsCapturing(s, &status));
  CHECK(status == cudaStreamCaptureStatusActive);
  p.run(s);
  cudaGraph_t graph = nullptr;
  REQUIRE_CUDA_OK(cudaStreamEndCapture(s, &graph));
  REQUIRE(graph != nullptr);
  REQUIRE_CUDA_OK(cudaStreamSynchronize(s));
  const std::vector<float> after_capture = p.d.get<float>();
  CHECK(std::isnan(after_capture[0]));  // recorded, not run: d still holds the poison

  cudaGraphExec_t exec = nullptr;
  REQUIRE_CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  REQUIRE_CUDA_OK(cudaGraphDestroy(graph));  // the executable graph does not need it
  REQUIRE_CUDA_OK(cudaGraphLaunch(exec, s));
  REQUIRE_CUDA_OK(cudaStreamSynchronize(s));
  CHECK(same_bits(p.d.get<float>(), eager));

  // A replay reads the device memory of its launch: new inputs give the new eager result.
  upload(p.a.p, ramp(Pipeline::m * Pipeline::k, 0.25f, -0.01f));
  p.run(s);
  REQUIRE_CUDA_OK(cudaStreamSynchronize(s));
  const std::vector<float> eager2 = p.d.get<float>();
  CHECK(!same_bits(eager2, eager));
  p.poison_outputs();
  REQUIRE_CUDA_OK(cudaGraphLaunch(exec, s));
  REQUIRE_CUDA_OK(cudaGraphLaunch(exec, s));  // twice in a row: the same again
  REQUIRE_CUDA_OK(cudaStreamSynchronize(s));
  CHECK(same_bits(p.d.get<float>(), eager2));
  REQUIRE_CUDA_OK(cudaGraphExecDestroy(exec));
}

// The trainer's tests slow a replayed step down with one (tests/cuda/test_distributed_nccl.cpp).
TEST_CASE("cuda graphs: a host function runs in its stream's order, and again at every replay when captured",
          "[cuda][graphs]") {
  DIFFUSE_CUDA_TEST_GUARD();
  const cudaStream_t s = nn_stream();
  DeviceBuffer value = DeviceBuffer::from(std::vector<float>{1.0f});
  float* host = nullptr;
  REQUIRE_CUDA_OK(cudaMallocHost(reinterpret_cast<void**>(&host), sizeof(float)));
  struct Seen {
    const float* host;
    std::vector<float> values;
  } seen{host, {}};
  const cudaHostFn_t note = [](void* p) {
    auto* into = static_cast<Seen*>(p);
    into->values.push_back(*into->host);
  };
  // value ·= 2, copied into `host`, then the function reads `host`: it sees its own run's copy.
  const auto queue = [&] {
    kernels::cuda::scale(1, 2.0f, value.as<float>(), value.as<float>(), s);
    REQUIRE_CUDA_OK(cudaMemcpyAsync(host, value.p, sizeof(float), cudaMemcpyDeviceToHost, s));
    REQUIRE_CUDA_OK(cudaLaunchHostFunc(s, note, &seen));
  };
  queue();
  REQUIRE_CUDA_OK(cudaStreamSynchronize(s));
  CHECK(seen.values == std::vector<float>{2.0f});

  REQUIRE_CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  queue();
  cudaGraph_t graph = nullptr;
  REQUIRE_CUDA_OK(cudaStreamEndCapture(s, &graph));
  REQUIRE_CUDA_OK(cudaStreamSynchronize(s));
  CHECK(seen.values.size() == 1);  // recorded, not run
  cudaGraphExec_t exec = nullptr;
  REQUIRE_CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  REQUIRE_CUDA_OK(cudaGraphDestroy(graph));
  REQUIRE_CUDA_OK(cudaGraphLaunch(exec, s));
  REQUIRE_CUDA_OK(cudaGraphLaunch(exec, s));
  REQUIRE_CUDA_OK(cudaStreamSynchronize(s));
  CHECK(seen.values == std::vector<float>{2.0f, 4.0f, 8.0f});
  REQUIRE_CUDA_OK(cudaGraphExecDestroy(exec));
  REQUIRE_CUDA_OK(cudaFreeHost(host));
}

TEST_CASE("cuda graphs: capture starts only on a created stream that is not capturing, and ends where it began",
          "[cuda][graphs]") {
  DIFFUSE_CUDA_TEST_GUARD();
  DeviceStream s;
  cudaGraph_t graph = nullptr;
  CHECK(cudaStreamBeginCapture(cudaStreamLegacy, cudaStreamCaptureModeGlobal) == cudaErrorStreamCaptureUnsupported);
  CHECK(cudaStreamEndCapture(s.s, &graph) == cudaErrorIllegalState);
  REQUIRE_CUDA_OK(cudaStreamBeginCapture(s.s, cudaStreamCaptureModeGlobal));
  CHECK(cudaStreamBeginCapture(s.s, cudaStreamCaptureModeGlobal) == cudaErrorIllegalState);
  REQUIRE_CUDA_OK(cudaStreamEndCapture(s.s, &graph));  // an empty capture is a valid graph
  REQUIRE(graph != nullptr);
  REQUIRE_CUDA_OK(cudaGraphDestroy(graph));
  // Another thread may not end a global-mode capture, and trying ends it without a graph (an H200
  // with CUDA 13 did so): the owner then finds nothing to end.
  REQUIRE_CUDA_OK(cudaStreamBeginCapture(s.s, cudaStreamCaptureModeGlobal));
  cudaError_t other_thread = cudaSuccess;
  graph = nullptr;
  std::thread([&] { other_thread = cudaStreamEndCapture(s.s, &graph); }).join();
  CHECK(other_thread == cudaErrorStreamCaptureWrongThread);
  CHECK(graph == nullptr);
  CHECK(cudaStreamEndCapture(s.s, &graph) == cudaErrorIllegalState);
  cudaGetLastError();
}

TEST_CASE("cuda graphs: each call the runtime refuses during capture fails and invalidates the capture",
          "[cuda][graphs]") {
  DIFFUSE_CUDA_TEST_GUARD();
  DeviceBuffer buf = device_floats(64);
  DeviceStream s;  // non-blocking
  std::vector<float> host(64, 1.0f);

  SECTION("cudaMalloc") {
    begin_capture_with_work(s.s, buf);
    void* p = nullptr;
    CHECK(cudaMalloc(&p, 256) == cudaErrorStreamCaptureUnsupported);
    require_invalidated(s.s, buf);
  }
  SECTION("cudaFree") {
    void* p = nullptr;
    REQUIRE_CUDA_OK(cudaMalloc(&p, 256));
    begin_capture_with_work(s.s, buf);
    CHECK(cudaFree(p) == cudaErrorStreamCaptureUnsupported);
    require_invalidated(s.s, buf);
    REQUIRE_CUDA_OK(cudaFree(p));
  }
  SECTION("a synchronous cudaMemcpy or cudaMemset is NOT refused: it runs at once, outside the graph") {
    // As an H200 with CUDA 13 did: the legacy stream does not touch a non-blocking capturing
    // stream, so the copy and the memset happen now and the graph never holds them.
    begin_capture_with_work(s.s, buf);
    CHECK(cudaMemcpy(buf.p, host.data(), buf.bytes, cudaMemcpyHostToDevice) == cudaSuccess);
    CHECK(cudaMemset(buf.p, 0x3f, buf.bytes) == cudaSuccess);
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    REQUIRE_CUDA_OK(cudaStreamIsCapturing(s.s, &status));
    CHECK(status == cudaStreamCaptureStatusActive);
    std::vector<unsigned char> now(buf.bytes, 0);
    REQUIRE_CUDA_OK(cudaMemcpy(now.data(), buf.p, buf.bytes, cudaMemcpyDeviceToHost));
    CHECK(std::all_of(now.begin(), now.end(), [](unsigned char b) { return b == 0x3f; }));  // already done
    cudaGraph_t graph = nullptr;
    REQUIRE_CUDA_OK(cudaStreamEndCapture(s.s, &graph));
    REQUIRE(graph != nullptr);
    REQUIRE_CUDA_OK(cudaGraphDestroy(graph));
  }
  SECTION("cudaDeviceSynchronize") {
    begin_capture_with_work(s.s, buf);
    CHECK(cudaDeviceSynchronize() == cudaErrorStreamCaptureUnsupported);
    require_invalidated(s.s, buf);
  }
  SECTION("cudaStreamSynchronize of the capturing stream") {
    begin_capture_with_work(s.s, buf);
    CHECK(cudaStreamSynchronize(s.s) == cudaErrorStreamCaptureUnsupported);
    require_invalidated(s.s, buf);
  }
  SECTION("cudaStreamQuery of the capturing stream") {
    begin_capture_with_work(s.s, buf);
    CHECK(cudaStreamQuery(s.s) == cudaErrorStreamCaptureUnsupported);
    require_invalidated(s.s, buf);
  }
  SECTION("the legacy stream while a blocking stream captures") {
    DeviceStream blocking(cudaStreamDefault);
    begin_capture_with_work(blocking.s, buf);
    CHECK(cudaMemsetAsync(buf.p, 0, buf.bytes, cudaStreamLegacy) == cudaErrorStreamCaptureImplicit);
    require_invalidated(blocking.s, buf);
  }
  cudaGetLastError();
}

TEST_CASE("cuda graphs: the capture modes decide whose cudaMalloc a capture refuses", "[cuda][graphs]") {
  DIFFUSE_CUDA_TEST_GUARD();
  DeviceBuffer buf = device_floats(64);
  DeviceStream s;
  cudaGraph_t graph = nullptr;
  auto malloc_then_free = [] {
    void* p = nullptr;
    const cudaError_t status = cudaMalloc(&p, 256);
    if (status == cudaSuccess) cudaFree(p);
    cudaGetLastError();
    return status;
  };

  SECTION("a relaxed capture permits it") {
    REQUIRE_CUDA_OK(cudaStreamBeginCapture(s.s, cudaStreamCaptureModeRelaxed));
    void* p = nullptr;
    REQUIRE_CUDA_OK(cudaMalloc(&p, 256));
    REQUIRE_CUDA_OK(cudaStreamEndCapture(s.s, &graph));
    REQUIRE_CUDA_OK(cudaGraphDestroy(graph));
    REQUIRE_CUDA_OK(cudaFree(p));
  }
  SECTION("a thread in relaxed interaction mode may make it during its own global capture") {
    begin_capture_with_work(s.s, buf);
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    REQUIRE_CUDA_OK(cudaThreadExchangeStreamCaptureMode(&mode));
    CHECK(mode == cudaStreamCaptureModeGlobal);
    void* p = nullptr;
    CHECK(cudaMalloc(&p, 256) == cudaSuccess);
    REQUIRE_CUDA_OK(cudaThreadExchangeStreamCaptureMode(&mode));  // back to global
    REQUIRE_CUDA_OK(cudaStreamEndCapture(s.s, &graph));
    REQUIRE_CUDA_OK(cudaGraphDestroy(graph));
    REQUIRE_CUDA_OK(cudaFree(p));
  }
  // Another thread's capture: a global one prohibits this (global-mode) thread's call, a
  // thread-local one does not.
  for (cudaStreamCaptureMode other_mode : {cudaStreamCaptureModeGlobal, cudaStreamCaptureModeThreadLocal}) {
    std::promise<void> begun, checked;
    std::future<void> checked_future = checked.get_future();
    cudaError_t end_status = cudaSuccess;
    std::thread capturer([&] {
      const cudaError_t b = cudaStreamBeginCapture(s.s, other_mode);
      begun.set_value();
      checked_future.wait();
      end_status = b == cudaSuccess ? cudaStreamEndCapture(s.s, &graph) : b;
    });
    begun.get_future().wait();
    const cudaError_t here = malloc_then_free();
    checked.set_value();
    capturer.join();
    if (other_mode == cudaStreamCaptureModeGlobal) {
      CHECK(here == cudaErrorStreamCaptureUnsupported);
      CHECK(end_status == cudaErrorStreamCaptureInvalidated);
    } else {
      CHECK(here == cudaSuccess);
      REQUIRE(end_status == cudaSuccess);
      REQUIRE_CUDA_OK(cudaGraphDestroy(graph));
    }
    cudaGetLastError();
  }
}

// The shape of the gradient all-reduce in a captured training step (nn/collective_nccl.cpp): the
// capturing stream records an event, a second stream waits on it and so joins the capture, its
// work is recorded into the same graph, and an event it records, waited on by the first stream,
// joins it back before the capture ends. Here d = 3·silu(2·a), the silu on the side stream.
TEST_CASE("cuda graphs: a stream forked off a capture and joined back through events is captured with it",
          "[cuda][graphs]") {
  DIFFUSE_CUDA_TEST_GUARD();
  constexpr int64_t n = 256;
  DeviceStream origin, side;
  Event forked, joined, outside;
  DeviceBuffer a = DeviceBuffer::from(ramp(n, -1.0f, 0.05f)), b = device_floats(n), c = device_floats(n),
               d = device_floats(n);
  auto fork_join = [&] {
    kernels::cuda::scale(n, 2.0f, a.as<float>(), b.as<float>(), origin.s);
    REQUIRE_CUDA_OK(cudaEventRecord(forked.e, origin.s));
    REQUIRE_CUDA_OK(cudaStreamWaitEvent(side.s, forked.e, 0));
    kernels::cuda::silu_forward(n, b.as<float>(), c.as<float>(), side.s);
    REQUIRE_CUDA_OK(cudaEventRecord(joined.e, side.s));
    REQUIRE_CUDA_OK(cudaStreamWaitEvent(origin.s, joined.e, 0));
    kernels::cuda::scale(n, 3.0f, c.as<float>(), d.as<float>(), origin.s);
  };
  auto status_of = [](cudaStream_t s) {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    REQUIRE_CUDA_OK(cudaStreamIsCapturing(s, &status));
    return status;
  };
  auto end_without_graph = [&](cudaError_t expected) {
    cudaGraph_t graph = nullptr;
    CHECK(cudaStreamEndCapture(origin.s, &graph) == expected);
    CHECK(graph == nullptr);
    cudaGetLastError();
    CHECK(status_of(origin.s) == cudaStreamCaptureStatusNone);
    CHECK(status_of(side.s) == cudaStreamCaptureStatusNone);  // the capture's end ends the fork's too
  };
  fork_join();  // eagerly
  REQUIRE_CUDA_OK(cudaStreamSynchronize(origin.s));
  const std::vector<float> eager = d.get<float>();

  SECTION("the fork's work is recorded and replayed") {
    for (const DeviceBuffer* buf : {&b, &c, &d}) buf->poison();
    REQUIRE_CUDA_OK(cudaStreamBeginCapture(origin.s, cudaStreamCaptureModeGlobal));
    CHECK(status_of(side.s) == cudaStreamCaptureStatusNone);
    fork_join();
    CHECK(status_of(side.s) == cudaStreamCaptureStatusActive);  // it joined by waiting on `forked`
    cudaGraph_t graph = nullptr;
    REQUIRE_CUDA_OK(cudaStreamEndCapture(origin.s, &graph));
    REQUIRE(graph != nullptr);
    CHECK(status_of(side.s) == cudaStreamCaptureStatusNone);
    REQUIRE_CUDA_OK(cudaDeviceSynchronize());
    CHECK(std::isnan(d.get<float>()[0]));  // recorded, not run
    cudaGraphExec_t exec = nullptr;
    REQUIRE_CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    REQUIRE_CUDA_OK(cudaGraphDestroy(graph));
    REQUIRE_CUDA_OK(cudaGraphLaunch(exec, origin.s));
    REQUIRE_CUDA_OK(cudaStreamSynchronize(origin.s));
    CHECK(same_bits(d.get<float>(), eager));
    REQUIRE_CUDA_OK(cudaGraphExecDestroy(exec));
  }
  SECTION("a fork never joined back fails the capture's end") {
    REQUIRE_CUDA_OK(cudaStreamBeginCapture(origin.s, cudaStreamCaptureModeGlobal));
    REQUIRE_CUDA_OK(cudaEventRecord(forked.e, origin.s));
    REQUIRE_CUDA_OK(cudaStreamWaitEvent(side.s, forked.e, 0));
    REQUIRE_CUDA_OK(cudaMemsetAsync(c.p, 0, c.bytes, side.s));
    end_without_graph(cudaErrorStreamCaptureUnjoined);
  }
  SECTION("a capturing stream may not wait on an event recorded outside the capture") {
    REQUIRE_CUDA_OK(cudaEventRecord(outside.e, side.s));
    begin_capture_with_work(origin.s, b);
    CHECK(cudaStreamWaitEvent(origin.s, outside.e, 0) == cudaErrorStreamCaptureIsolation);
    require_invalidated(origin.s, b);
  }
  SECTION("the stream that joined the capture cannot be synchronised") {
    begin_capture_with_work(origin.s, b);
    REQUIRE_CUDA_OK(cudaEventRecord(forked.e, origin.s));
    REQUIRE_CUDA_OK(cudaStreamWaitEvent(side.s, forked.e, 0));
    CHECK(cudaStreamSynchronize(side.s) == cudaErrorStreamCaptureUnsupported);
    end_without_graph(cudaErrorStreamCaptureInvalidated);
  }
  SECTION("an event recorded in the capture cannot be queried") {
    begin_capture_with_work(origin.s, b);
    REQUIRE_CUDA_OK(cudaEventRecord(forked.e, origin.s));
    CHECK(cudaEventQuery(forked.e) == cudaErrorCapturedEvent);
    cudaGraph_t graph = nullptr;
    if (cudaStreamEndCapture(origin.s, &graph) == cudaSuccess) cudaGraphDestroy(graph);
    cudaGetLastError();
  }
  cudaGetLastError();
}
