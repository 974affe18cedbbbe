// nn/cuda/graph.h on nn's ops: a captured chain of ops (linear, group norm, SiLU, a residual add)
// replays bit-identically to eager execution, reads inputs written into its captured input
// tensor before each replay, and makes no cudaMalloc while capturing or replaying; the blocks it
// uses stay reserved for it. A capture that hits a refused call (a copy to the host inside it) or
// an allocation its warm-up did not prepare fails with the reason, and eager work goes on. A
// graph still alive at exit leaves no device memory behind (a child process, for the emulated
// device's leak check).
#include <catch2/catch.hpp>

#include <cstring>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "nn/cuda/caching_allocator.h"
#include "nn/cuda/graph.h"
#include "nn/ops.h"
#include "support/process.h"

using namespace diffuse;

namespace {

// out = x + silu(group_norm(linear(x, w, b))) on [6, 32] (group norm over [6, 1, 1, 32], 4 groups).
struct Block {
  Tensor x = Tensor::randn({6, 32}, 11).to(Device::cuda);
  Tensor w = Tensor::randn({32, 32}, 12).to(Device::cuda);
  Tensor b = Tensor::randn({32}, 13).to(Device::cuda);
  Tensor gamma = Tensor::randn({32}, 14).to(Device::cuda);
  Tensor beta = Tensor::randn({32}, 15).to(Device::cuda);
  Tensor out;

  void run() {
    ops::GroupNormOptions opt;
    opt.groups = 4;
    opt.silu = true;
    Tensor h = ops::linear(x, w, b).view({6, 1, 1, 32});
    out = ops::add(x, ops::group_norm(h, gamma, beta, opt).view({6, 32}));
  }

  // Runs the chain twice and returns a copy of its result. The second run allocates as a capture
  // will, with the previous output still held, so afterwards the cache holds every block the
  // chain needs; nothing else may allocate between this and the capture.
  Tensor warm_up() {
    run();
    Tensor result = out.clone();
    run();
    return result;
  }
};

bool same_bits(const Tensor& a, const Tensor& b) {
  const std::vector<double> va = a.to_vector(), vb = b.to_vector();
  return va.size() == vb.size() && std::memcmp(va.data(), vb.data(), va.size() * sizeof(double)) == 0;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("cuda graph of nn ops: replay equals eager bit for bit, with new inputs, and no cudaMalloc",
          "[cuda][graphs]") {
  DIFFUSE_CUDA_TEST_GUARD();
  Block blk;
  const Tensor eager = blk.warm_up();
  const uint64_t mallocs = cuda::allocator_stats().cuda_mallocs;

  cuda::Graph g = cuda::Graph::capture([&] { blk.run(); });
  REQUIRE(g.ok());
  CHECK(g.why().empty());
  CHECK(g.pool_bytes() > 0);
  g.replay();
  CHECK(same_bits(blk.out, eager));

  // New values in the captured input tensor, written on the stream before the replay.
  const Tensor x2 = Tensor::randn({6, 32}, 99);
  blk.x.copy_from(x2);
  g.replay();
  g.replay();  // a replay depends only on its inputs
  CHECK(cuda::allocator_stats().cuda_mallocs == mallocs);  // none in the capture or the replays
  const Tensor replayed = blk.out.clone();
  CHECK(!same_bits(replayed, eager));

  Block eager2;
  eager2.x.copy_from(x2);
  eager2.run();
  CHECK(same_bits(replayed, eager2.out));

  // Eager work after the capture never receives the graph's blocks: a replay on other inputs
  // leaves eager2's result alone.
  const Tensor eager2_out = eager2.out.clone();
  blk.x.copy_from(Tensor::randn({6, 32}, 7));
  g.replay();
  CHECK(same_bits(eager2.out, eager2_out));
  CHECK(!same_bits(blk.out, replayed));
}

TEST_CASE("cuda graph of nn ops: a capture that copies to the host inside is refused with the reason",
          "[cuda][graphs]") {
  DIFFUSE_CUDA_TEST_GUARD();
  Block blk;
  const Tensor eager = blk.warm_up();
  cuda::Graph g = cuda::Graph::capture([&] {
    blk.run();
    (void)blk.out.to(Device::cpu);  // a device-to-host copy and a stream synchronisation
  });
  CHECK(!g.ok());
  INFO(g.why());
  CHECK(contains(g.why(), "cudaErrorStreamCaptureUnsupported"));
  CHECK(contains(g.why(), "cudaStreamSynchronize"));
  CHECK_THROWS_WITH(g.replay(), Catch::Contains("capture failed"));
  // The stream works eagerly again, with the same result.
  blk.run();
  CHECK(same_bits(blk.out, eager));
}

TEST_CASE("cuda graph of nn ops: an allocation the warm-up did not prepare fails the capture",
          "[cuda][graphs]") {
  DIFFUSE_CUDA_TEST_GUARD();
  cuda::Graph g = cuda::Graph::capture([] { (void)Tensor::empty({3, 1000003}, DType::f32, Device::cuda); });
  CHECK(!g.ok());
  INFO(g.why());
  CHECK(contains(g.why(), "during CUDA graph capture and no cached block fits"));
  CHECK(Tensor::ones({4}, DType::f32, Device::cuda).to_vector() == std::vector<double>(4, 1.0));
}

// Run in a child process by the next case: the graph and its input live until exit, so the
// allocator's exit teardown must return the graph pool's free blocks.
TEST_CASE("cuda graph child: a graph alive at exit", "[.cuda-graph-at-exit]") {
  REQUIRE(cuda_device_count() > 0);  // a child: never a silent skip
  static Tensor x = Tensor::randn({300}, 1).to(Device::cuda);
  const auto body = [] { (void)ops::scale(ops::scale(x, 2.0), 3.0); };  // two blocks freed at once
  body();
  body();
  static auto* graph = new cuda::Graph(cuda::Graph::capture(body));  // never destroyed
  REQUIRE(graph->ok());
  REQUIRE(graph->pool_bytes() > 0);
  graph->replay();
  synchronize_device();
}

TEST_CASE("cuda graph of nn ops: a graph alive at exit leaves no device memory behind", "[cuda][graphs]") {
  DIFFUSE_CUDA_TEST_GUARD();
  const test::RunResult r = test::run_self("cuda graph child: a graph alive at exit");
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("All tests passed") && Catch::Contains("1 test case"));
  CHECK_THAT(r.output, !Catch::Contains("leaked") && !Catch::Contains("not returned at exit"));
}
