// The emulator's warp collectives (results against CUDA's documented semantics, computed here
// by hand), collective deadlocks reported with their location, barrier votes, atomics, and the
// intrinsics and bf16 conversions compat.cuh supplies. Every kernel runs under all three orders.
#include <catch2/catch.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "emu_test_helpers.h"
#include "kernels/compat.cuh"

using diffuse::emulator::ThreadOrder;
using diffuse::emulator::ScopedThreadOrder;
using diffuse::test::error_of;

namespace {

const auto& kOrders = diffuse::test::kAllOrders;
constexpr unsigned kFull = 0xffffffffu;

std::string at_line(int line) { return "test_emulator_warp.cpp:" + std::to_string(line); }

constexpr int kKinds = 13;
__global__ void collectives(int* out, float* out_f, double* out_d) {
  int t = threadIdx.x, lane = t % 32, n = blockDim.x;
  int v = 100 + t;
  out[0 * n + t] = __shfl_sync(kFull, v, 5);
  out[1 * n + t] = __shfl_sync(kFull, v, 3, 8);
  out[2 * n + t] = __shfl_up_sync(kFull, v, 2, 16);
  out[3 * n + t] = __shfl_down_sync(kFull, v, 3);
  out[4 * n + t] = __shfl_xor_sync(kFull, v, 9);
  out[5 * n + t] = static_cast<int>(__ballot_sync(kFull, lane % 3 == 0));
  out[6 * n + t] = __any_sync(kFull, t == 40);
  out[7 * n + t] = __all_sync(kFull, lane < 31 || t < 32);
  out[8 * n + t] = __reduce_add_sync(kFull, lane);
  out[9 * n + t] = __reduce_max_sync(kFull, -lane);
  out[10 * n + t] = __reduce_min_sync(kFull, 7u + static_cast<unsigned>(lane));
  out[11 * n + t] = lane < 16 ? __shfl_down_sync(0x0000ffffu, v, 1, 16) : -1;  // lane 15: own value
  __syncwarp();
  out[12 * n + t] = lane < 16 ? __shfl_sync(0x0000ffffu, v, 20) : 0;  // source outside the mask
  out_f[t] = lane < 8 ? __shfl_sync(0x000000ffu, static_cast<float>(t) * 0.5f, 20) : 0.0f;
  out_d[t] = __shfl_xor_sync(kFull, static_cast<double>(t) * 0.25, 1);
}

}  // namespace

TEST_CASE("emulator: warp shuffles, votes and reductions follow CUDA's semantics", "[emu][emulator]") {
  const int n = 64;
  for (ThreadOrder o : kOrders) {
    ScopedThreadOrder scoped(o);
    INFO("order " << diffuse::emulator::thread_order_name(o));
    std::vector<int> out(kKinds * n, 12345);
    std::vector<float> out_f(n);
    std::vector<double> out_d(n);
    DIFFUSE_LAUNCH(collectives, 1, n, 0, nullptr, out.data(), out_f.data(), out_d.data());
    unsigned ballot = 0;
    for (int l = 0; l < 32; l += 3) ballot |= 1u << l;
    for (int t = 0; t < n; ++t) {
      int lane = t % 32, base = t - lane, v = 100 + t;
      INFO("thread " << t);
      CHECK(out[0 * n + t] == 100 + base + 5);
      CHECK(out[1 * n + t] == 100 + base + (lane & ~7) + 3);
      CHECK(out[2 * n + t] == (lane % 16 < 2 ? v : v - 2));
      CHECK(out[3 * n + t] == (lane + 3 > 31 ? v : v + 3));
      CHECK(out[4 * n + t] == 100 + base + (lane ^ 9));
      CHECK(out[5 * n + t] == static_cast<int>(ballot));
      CHECK(out[6 * n + t] == (base == 32 ? 1 : 0));
      CHECK(out[7 * n + t] == (base == 0 ? 1 : 0));
      CHECK(out[8 * n + t] == 496);
      CHECK(out[9 * n + t] == 0);
      CHECK(out[10 * n + t] == 7);
      CHECK(out[11 * n + t] == (lane >= 16 ? -1 : lane == 15 ? v : v + 1));
      CHECK(out[12 * n + t] == (lane < 16 ? -1 : 0));  // poison: all bits set
      if (lane < 8) CHECK(std::isnan(out_f[t]));
      CHECK(out_d[t] == static_cast<double>(t ^ 1) * 0.25);
    }
  }
}

namespace {
const int kLineSmallBlock = __LINE__ + 2;
__global__ void full_mask_in_small_block(int* out) {
  out[threadIdx.x] = __shfl_sync(kFull, static_cast<int>(threadIdx.x), 0);
}

const int kLineExited = __LINE__ + 4;
__global__ void full_mask_after_exit(int* out) {
  int v = threadIdx.x;
  if (threadIdx.x >= 48) return;
  v = __shfl_xor_sync(kFull, v, 1);
  out[threadIdx.x] = v;
}

const int kLineHalfWarp = __LINE__ + 3;
__global__ void full_mask_then_barrier(int* out) {
  int v = threadIdx.x;
  if (threadIdx.x % 32 < 16) v = __shfl_down_sync(kFull, v, 1);
  __syncthreads();
  out[threadIdx.x] = v;
}

const int kLineBallot = __LINE__ + 2;
__global__ void different_collectives(int* out) {
  if (threadIdx.x < 16) out[threadIdx.x] = __shfl_sync(kFull, 1, 0);
  else out[threadIdx.x] = static_cast<int>(__ballot_sync(kFull, 1));
}

__global__ void mask_without_self(int* out) { out[threadIdx.x] = __shfl_sync(0x1u, 1, 0); }
}  // namespace

TEST_CASE("emulator: a collective whose mask names lanes that never arrive is a deadlock report", "[emu][emulator]") {
  std::vector<int> out(64);
  for (ThreadOrder o : kOrders) {
    ScopedThreadOrder scoped(o);
    INFO("order " << diffuse::emulator::thread_order_name(o));
    std::string e = error_of([&] { DIFFUSE_LAUNCH(full_mask_in_small_block, 1, 16, 0, nullptr, out.data()); });
    INFO(e);
    CHECK(e.find("warp collective deadlock: __shfl_sync at " + at_line(kLineSmallBlock)) != std::string::npos);
    CHECK(e.find("names lanes 16-31, which do not exist") != std::string::npos);

    e = error_of([&] { DIFFUSE_LAUNCH(full_mask_after_exit, 1, 64, 0, nullptr, out.data()); });
    INFO(e);
    CHECK(e.find("warp collective deadlock: __shfl_xor_sync at " + at_line(kLineExited)) != std::string::npos);
    CHECK(e.find("warp 1") != std::string::npos);
    CHECK(e.find("lanes 16-31 exited") != std::string::npos);

    e = error_of([&] { DIFFUSE_LAUNCH(full_mask_then_barrier, 1, 64, 0, nullptr, out.data()); });
    INFO(e);
    CHECK(e.find("__shfl_down_sync at " + at_line(kLineHalfWarp)) != std::string::npos);
    CHECK(e.find("lanes 16-31 wait at __syncthreads at " + at_line(kLineHalfWarp + 1)) != std::string::npos);

    e = error_of([&] { DIFFUSE_LAUNCH(different_collectives, 1, 32, 0, nullptr, out.data()); });
    INFO(e);
    CHECK(e.find("warp collective deadlock") != std::string::npos);
    CHECK((e.find("wait at __ballot_sync at " + at_line(kLineBallot + 1)) != std::string::npos ||
           e.find("wait at __shfl_sync at " + at_line(kLineBallot)) != std::string::npos));

    e = error_of([&] { DIFFUSE_LAUNCH(mask_without_self, 1, 32, 0, nullptr, out.data()); });
    CHECK(e.find("does not name the calling lane") != std::string::npos);
  }
}

namespace {
__global__ void barrier_votes(int* out) {
  int t = threadIdx.x;
  int count = __syncthreads_count(t % 3 == 0);
  int all_true = __syncthreads_and(t < 1000);
  int any_true = __syncthreads_or(t == 77);
  int not_all = __syncthreads_and(t != 5);
  int none = __syncthreads_or(0);
  out[5 * t + 0] = count, out[5 * t + 1] = all_true, out[5 * t + 2] = any_true;
  out[5 * t + 3] = not_all, out[5 * t + 4] = none;
}

__global__ void atomics(float* f, double* d, int* i, unsigned* u, unsigned long long* ull, int* mx, unsigned* cas) {
  int t = blockIdx.x * blockDim.x + threadIdx.x;
  atomicAdd(f, 0.5f);
  atomicAdd(d, 0.25);
  atomicAdd(i, -1);
  atomicAdd(u, 2u);
  atomicAdd(ull, 3ull);
  atomicMax(mx, t);
  unsigned seen = *cas;
  while (atomicCAS(cas, seen, seen + 1) != seen) seen = *cas;  // single-threaded: succeeds at once
}
}  // namespace

TEST_CASE("emulator: __syncthreads_count/and/or and atomics", "[emu][emulator]") {
  for (ThreadOrder o : kOrders) {
    ScopedThreadOrder scoped(o);
    std::vector<int> out(5 * 96);
    DIFFUSE_LAUNCH(barrier_votes, 1, 96, 0, nullptr, out.data());
    for (int t = 0; t < 96; ++t) {
      CHECK(out[5 * t + 0] == 32);
      CHECK(out[5 * t + 1] == 1);
      CHECK(out[5 * t + 2] == 1);
      CHECK(out[5 * t + 3] == 0);
      CHECK(out[5 * t + 4] == 0);
    }
    float f = 0;
    double d = 0;
    int i = 0, mx = -1;
    unsigned u = 0, cas = 0;
    unsigned long long ull = 0;
    DIFFUSE_LAUNCH(atomics, 8, 64, 0, nullptr, &f, &d, &i, &u, &ull, &mx, &cas);
    CHECK(f == 256.0f);
    CHECK(d == 128.0);
    CHECK(i == -512);
    CHECK(u == 1024u);
    CHECK(ull == 1536ull);
    CHECK(mx == 511);
    CHECK(cas == 512u);
  }
}

TEST_CASE("emulator: intrinsics and bf16 conversions", "[emu][emulator]") {
  CHECK(__saturatef(NAN) == 0.0f);
  CHECK(__saturatef(1.5f) == 1.0f);
  CHECK(__saturatef(-0.5f) == 0.0f);
  CHECK(__float2int_rn(2.5f) == 2);
  CHECK(__float2int_rn(3.5f) == 4);
  CHECK(__float2int_rz(-2.7f) == -2);
  CHECK(__float2int_rd(-2.2f) == -3);
  CHECK(__brev(1u) == 0x80000000u);
  CHECK(__clz(1) == 31);
  CHECK(__ffs(8) == 4);
  CHECK(__popc(0xF0F0u) == 8);
  CHECK(__umulhi(0x80000000u, 4u) == 2u);
  CHECK(rsqrtf(4.0f) == 0.5f);
  CHECK(__fmaf_rn(2.0f, 3.0f, 1.0f) == 7.0f);
  CHECK(min(3, -4) == -4);
  CHECK(max(2u, 7u) == 7u);
  // Round to nearest even at the halfway points between bf16 neighbours of 1.
  CHECK(__bfloat162float(__float2bfloat16(1.0f + 1.0f / 256)) == 1.0f);
  CHECK(__bfloat162float(__float2bfloat16(1.0f + 3.0f / 256)) == 1.0f + 4.0f / 256);
  CHECK(__bfloat16_as_ushort(__float2bfloat16(-2.0f)) == 0xC000);
  CHECK(std::isnan(__bfloat162float(__float2bfloat16(NAN))));
  __nv_bfloat162 pair = __floats2bfloat162_rn(0.5f, -3.0f);
  CHECK(__low2float(pair) == 0.5f);
  CHECK(__high2float(pair) == -3.0f);
  float4 v = make_float4(1, 2, 3, 4);
  CHECK(alignof(float4) == 16);
  CHECK(v.w == 4.0f);
}

namespace {
// Four warp sums of five __shfl_xor_sync each: 20 collectives per thread.
__global__ void shuffle_sums(float* out) {
  float v = static_cast<float>(threadIdx.x % 32);
  for (int round = 0; round < 4; ++round)
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(kFull, v, offset);
  out[blockIdx.x * blockDim.x + threadIdx.x] = v;
}
}  // namespace

// Not a test: `test_emu "[.bench]"` prints the cost of warp collectives under the emulator.
TEST_CASE("emulator speed: 64 blocks x 256 threads x 20 warp shuffles", "[.bench]") {
  std::vector<float> out(64 * 256);
  double best = 1e30;
  for (int rep = 0; rep < 10; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    DIFFUSE_LAUNCH(shuffle_sums, 64, 256, 0, nullptr, out.data());
    best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  // Each round multiplies the warp's common sum by 32: 496 · 32³.
  for (float x : out) REQUIRE(x == 496.0f * 32 * 32 * 32);
  std::printf("emulator (%s): 64 blocks x 256 threads x 20 warp shuffles: %.2f ms (best of 10)\n",
              diffuse::emulator::thread_order_name(diffuse::emulator::thread_order()), best);
}
