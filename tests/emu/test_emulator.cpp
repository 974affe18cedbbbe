// The SIMT emulator proves itself on small planted kernels: barriers and thread orders,
// divergent and skipped barriers, NaN-poisoned shared memory (static, 2-D, template, dynamic),
// the dynamic-smem guard page (in a forked child), launch checks. Warp collectives and atomics
// are in test_emulator_warp.cpp. Each kernel runs under all three orders via ScopedThreadOrder, on top
// of CTest running the whole binary once per DIFFUSE_EMU_ORDER.
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "emu_test_helpers.h"
#include "kernels/compat.cuh"

using diffuse::emulator::ThreadOrder;
using diffuse::emulator::ScopedThreadOrder;
using diffuse::test::error_of;
using diffuse::kernels::dynamic_smem;

namespace {

const auto& kOrders = diffuse::test::kAllOrders;

std::string at_line(int line) { return "test_emulator.cpp:" + std::to_string(line); }

// Block sum: warp shuffles, per-warp partials in static shared memory, a barrier, a final warp.
// kBarrier = false plants the classic bug (partials read before all warps wrote them).
template <int kThreads, bool kBarrier>
__global__ void block_sum(const float* x, int n, float* out) {
  DIFFUSE_SHARED(float, partial, kThreads / 32);
  int i = blockIdx.x * kThreads + threadIdx.x;
  float v = i < n ? x[i] : 0.0f;
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  if (kBarrier) __syncthreads();
  if (threadIdx.x < 32) {
    float w = threadIdx.x < kThreads / 32 ? partial[threadIdx.x] : 0.0f;
    for (int offset = 16; offset > 0; offset /= 2) w += __shfl_down_sync(0xffffffffu, w, offset);
    if (threadIdx.x == 0) out[blockIdx.x] = w;
  }
}

template <int kThreads, bool kBarrier>
std::vector<float> run_block_sum(const std::vector<float>& x) {
  int n = static_cast<int>(x.size()), blocks = (n + kThreads - 1) / kThreads;
  std::vector<float> out(blocks, NAN);
  DIFFUSE_LAUNCH((block_sum<kThreads, kBarrier>), blocks, kThreads, 0, nullptr, x.data(), n, out.data());
  return out;
}

std::vector<float> expected_block_sums(const std::vector<float>& x, int threads) {
  std::vector<float> s((x.size() + threads - 1) / threads, 0.0f);
  for (size_t i = 0; i < x.size(); ++i) s[i / threads] += x[i];
  return s;
}

}  // namespace

TEST_CASE("emulator: the default order comes from DIFFUSE_EMU_ORDER", "[emu][emulator]") {
  const char* env = std::getenv("DIFFUSE_EMU_ORDER");
  std::string expected = env && *env ? env : "fwd";
  CHECK(diffuse::emulator::thread_order_name(diffuse::emulator::thread_order()) == expected);
}

TEST_CASE("emulator: a block reduction with shuffles and a barrier is right in every order", "[emu][emulator]") {
  std::vector<float> x(1000);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(static_cast<int>(i % 7) - 3);  // exact sums
  for (ThreadOrder o : kOrders) {
    ScopedThreadOrder scoped(o);
    INFO("order " << diffuse::emulator::thread_order_name(o));
    CHECK(run_block_sum<256, true>(x) == expected_block_sums(x, 256));
    CHECK(run_block_sum<128, true>(x) == expected_block_sums(x, 128));
  }
}

TEST_CASE("emulator: a missing barrier gives a wrong result in at least one order", "[emu][emulator]") {
  std::vector<float> x(1000, 1.0f);
  int wrong = 0;
  for (ThreadOrder o : kOrders) {
    ScopedThreadOrder scoped(o);
    if (run_block_sum<256, false>(x) != expected_block_sums(x, 256)) ++wrong;
  }
  CHECK(wrong >= 1);
}

namespace {
__global__ void record_thread_order(int* ticket, int* order_seen) {
  int n = blockDim.x;
  order_seen[atomicAdd(ticket, 1)] = threadIdx.x;
  __syncthreads();
  order_seen[n + atomicAdd(ticket + 1, 1)] = threadIdx.x;
}
}  // namespace

TEST_CASE("emulator: fwd and rev run threads by index, shuffle permutes afresh after each barrier", "[emu][emulator]") {
  const int n = 64;
  auto run = [&](ThreadOrder o) {
    ScopedThreadOrder scoped(o);
    std::vector<int> tickets(2, 0), seen(2 * n, -1);
    DIFFUSE_LAUNCH(record_thread_order, 1, n, 0, nullptr, tickets.data(), seen.data());
    return seen;
  };
  std::vector<int> fwd = run(ThreadOrder::fwd), rev = run(ThreadOrder::rev), shuffled = run(ThreadOrder::shuffle);
  for (int i = 0; i < n; ++i) {
    CHECK(fwd[i] == i);
    CHECK(fwd[n + i] == i);
    CHECK(rev[i] == n - 1 - i);
  }
  std::vector<int> phase0(shuffled.begin(), shuffled.begin() + n), phase1(shuffled.begin() + n, shuffled.end());
  CHECK(phase0 != std::vector<int>(fwd.begin(), fwd.begin() + n));
  CHECK(phase0 != std::vector<int>(rev.begin(), rev.begin() + n));
  CHECK(phase0 != phase1);
  std::sort(phase0.begin(), phase0.end());
  for (int i = 0; i < n; ++i) CHECK(phase0[i] == i);  // a permutation: every thread ran once
  CHECK(run(ThreadOrder::shuffle) == shuffled);             // fixed seed: reproducible
}

namespace {
const int kDivergentA = __LINE__ + 4;
const int kDivergentB = __LINE__ + 6;
__global__ void divergent_barrier(float* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
    out[threadIdx.x] = 1.0f;
  } else {
    __syncthreads();
    out[threadIdx.x] = 2.0f;
  }
}

const int kSkippedBarrier = __LINE__ + 3;
__global__ void exit_before_barrier(float* out) {
  if (threadIdx.x >= 48) return;
  __syncthreads();
  out[threadIdx.x] = 1.0f;
}
}  // namespace

TEST_CASE("emulator: threads meeting different barriers are reported with both locations", "[emu][emulator]") {
  std::vector<float> out(64);
  for (ThreadOrder o : kOrders) {
    ScopedThreadOrder scoped(o);
    std::string e = error_of([&] { DIFFUSE_LAUNCH(divergent_barrier, 2, 64, 0, nullptr, out.data()); });
    INFO(e);
    CHECK(e.find("divergent __syncthreads") != std::string::npos);
    CHECK(e.find(at_line(kDivergentA)) != std::string::npos);
    CHECK(e.find(at_line(kDivergentB)) != std::string::npos);
    CHECK(e.find("block (0,0,0)") != std::string::npos);
  }
}

TEST_CASE("emulator: a barrier that some threads exit before is reported, not hung", "[emu][emulator]") {
  std::vector<float> out(64);
  for (ThreadOrder o : kOrders) {
    ScopedThreadOrder scoped(o);
    std::string e = error_of([&] { DIFFUSE_LAUNCH(exit_before_barrier, 1, 64, 0, nullptr, out.data()); });
    INFO(e);
    CHECK(e.find("divergent __syncthreads at " + at_line(kSkippedBarrier)) != std::string::npos);
    CHECK(e.find("exited without reaching it") != std::string::npos);
  }
  // The emulator is usable again after a failed launch.
  std::vector<float> x(300, 2.0f);
  CHECK(run_block_sum<128, true>(x) == expected_block_sums(x, 128));
}

namespace {
// Block 0 writes its shared arrays, the other blocks only read: each block must see fresh poison.
template <int N>
__global__ void read_shared(float* out, double* out_d, int* out_i, float* out_2d) {
  DIFFUSE_SHARED(float, s, N);
  DIFFUSE_SHARED(double, sd, N);
  DIFFUSE_SHARED(int, si, N);
  DIFFUSE_SHARED_2D(float, tile, 4, N);
  float* dyn = dynamic_smem<float>();
  int t = threadIdx.x, base = blockIdx.x * N;
  if (blockIdx.x == 0) {
    s[t] = 1.0f, sd[t] = 2.0, si[t] = 3, tile[3][t] = 4.0f, dyn[t] = 5.0f;
  }
  __syncthreads();
  out[base + t] = s[t], out_d[base + t] = sd[t], out_i[base + t] = si[t], out_2d[base + t] = tile[3][t];
  out[2 * N + base + t] = dyn[t];
}
}  // namespace

TEST_CASE("emulator: shared memory reads NaN until written, in every block", "[emu][emulator]") {
  const int n = 32;
  std::vector<float> out(4 * n), out_2d(2 * n);
  std::vector<double> out_d(2 * n);
  std::vector<int> out_i(2 * n);
  DIFFUSE_LAUNCH((read_shared<n>), 2, n, n * sizeof(float), nullptr, out.data(), out_d.data(), out_i.data(),
                 out_2d.data());
  for (int t = 0; t < n; ++t) {
    CHECK(out[t] == 1.0f);
    CHECK(out_d[t] == 2.0);
    CHECK(out_i[t] == 3);
    CHECK(out_2d[t] == 4.0f);
    CHECK(out[2 * n + t] == 5.0f);
    CHECK(std::isnan(out[n + t]));
    CHECK(std::isnan(out_d[n + t]));
    CHECK(out_i[n + t] == -1);
    CHECK(std::isnan(out_2d[n + t]));
    CHECK(std::isnan(out[3 * n + t]));
  }
}

namespace {
__global__ void read_past_dynamic(float* out) {
  float* s = dynamic_smem<float>();
  s[threadIdx.x] = 0.0f;
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x + 1];  // the last thread reads s[n]: one past the end
}

// Runs the launch in a forked child; returns (terminating signal or 0, the child's stderr).
std::pair<int, std::string> run_in_child(int n) {
  int pipe_fds[2];
  REQUIRE(pipe(pipe_fds) == 0);
  std::fflush(nullptr);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    std::signal(SIGSEGV, SIG_DFL);  // die plainly (no test-framework report from the child)
    dup2(pipe_fds[1], STDERR_FILENO);
    close(pipe_fds[0]);
    std::vector<float> out(n);
    DIFFUSE_LAUNCH(read_past_dynamic, 1, n, n * sizeof(float), nullptr, out.data());
    _exit(0);
  }
  close(pipe_fds[1]);
  std::string err;
  char buf[512];
  for (ssize_t got; (got = read(pipe_fds[0], buf, sizeof buf)) > 0;) err.append(buf, static_cast<size_t>(got));
  close(pipe_fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return {WIFSIGNALED(status) ? WTERMSIG(status) : 0, err};
}
}  // namespace

TEST_CASE("emulator: reading one element past dynamic shared memory hits the guard page", "[emu][emulator]") {
  for (int n : {64, 63}) {  // 63 floats: the buffer is not a multiple of 16 bytes and still ends at the guard
    auto [sig, err] = run_in_child(n);
    INFO("n = " << n << ", child stderr: " << err);
    CHECK(sig == SIGSEGV);
    CHECK(err.find("dynamic shared memory overrun") != std::string::npos);
    CHECK(err.find("thread (" + std::to_string(n - 1) + ",0,0)") != std::string::npos);
  }
  // In bounds, the same kernel runs (s[n] exists when the buffer has one more element).
  std::vector<float> out(64, NAN);
  DIFFUSE_LAUNCH(read_past_dynamic, 1, 64, 65 * sizeof(float), nullptr, out.data());
  for (int t = 0; t < 63; ++t) CHECK(out[t] == 0.0f);
  CHECK(std::isnan(out[63]));  // s[64] was never written
}

namespace {
__global__ void write_index(unsigned* out) {
  unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  unsigned b = blockIdx.x + gridDim.x * blockIdx.y;
  out[b * blockDim.x * blockDim.y * blockDim.z + t] = threadIdx.x + 10 * threadIdx.y + 100 * threadIdx.z + 1000 * blockIdx.x + 10000 * blockIdx.y;
}
__global__ void nothing(int) {}
}  // namespace

TEST_CASE("emulator: 3-D blocks and 2-D grids get CUDA's indices, bad launches throw", "[emu][emulator]") {
  dim3 grid(3, 2), block(4, 3, 2);
  std::vector<unsigned> out(6 * 24, 0);
  DIFFUSE_LAUNCH(write_index, grid, block, 0, nullptr, out.data());
  for (unsigned by = 0; by < 2; ++by)
    for (unsigned bx = 0; bx < 3; ++bx)
      for (unsigned z = 0; z < 2; ++z)
        for (unsigned y = 0; y < 3; ++y)
          for (unsigned x = 0; x < 4; ++x)
            CHECK(out[(bx + 3 * by) * 24 + x + 4 * (y + 3 * z)] == x + 10 * y + 100 * z + 1000 * bx + 10000 * by);
  CHECK(error_of([] { DIFFUSE_LAUNCH(nothing, 1, 2048, 0, nullptr, 0); }).find("1..1024 threads") != std::string::npos);
  CHECK(error_of([] { DIFFUSE_LAUNCH(nothing, 1, 32, 300 * 1024, nullptr, 0); }).find("227 KiB") != std::string::npos);
  CHECK(error_of([] { DIFFUSE_LAUNCH(nothing, 0, 32, 0, nullptr, 0); }).empty());  // an empty grid is a no-op
  CHECK(error_of([] { __syncthreads(); }).find("__syncthreads called outside an emulated kernel launch") !=
        std::string::npos);
}

namespace {
// Rotates values one thread to the left per round; two buffers so one barrier per round suffices
// (with one buffer, a fast thread's next write races a slow thread's read: the emulator shows it).
__global__ void four_barriers(float* out) {
  DIFFUSE_SHARED_2D(float, s, 2, 256);
  float v = static_cast<float>(threadIdx.x);
  for (int round = 0; round < 4; ++round) {
    s[round % 2][threadIdx.x] = v;
    __syncthreads();
    v = s[round % 2][(threadIdx.x + 1) % blockDim.x];
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = v;
}
}  // namespace

// Not a test: `test_emu "[.bench]"` prints the emulator's speed (docs/design.md §5 quotes ~3 ms).
TEST_CASE("emulator speed: 64 blocks x 256 threads x 4 barriers", "[.bench]") {
  std::vector<float> out(64 * 256);
  double best = 1e30;
  for (int rep = 0; rep < 10; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    DIFFUSE_LAUNCH(four_barriers, 64, 256, 0, nullptr, out.data());
    best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  for (int i = 0; i < 256; ++i) REQUIRE(out[i] == static_cast<float>((i + 4) % 256));
  std::printf("emulator (%s): 64 blocks x 256 threads x 4 barriers: %.2f ms (best of 10)\n",
              diffuse::emulator::thread_order_name(diffuse::emulator::thread_order()), best);
}
