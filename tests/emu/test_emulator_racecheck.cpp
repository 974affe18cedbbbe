// Racecheck proves itself on planted bugs: a missing __syncthreads (read of a neighbour's word,
// write-write), a missing __syncwarp in a warp-synchronous exchange, a plain read racing an
// atomic, an out-of-bounds static-array access; and it stays quiet on correct code: the same
// kernels with their barriers, many readers of a word written before a barrier, __syncwarp and
// shuffle-ordered exchanges, shared-memory atomics, sub-word neighbours, float4 tiles. Each case
// forces racecheck on (ScopedRacecheck) whatever DIFFUSE_EMU_RACECHECK says, and sweeps the three
// thread orders; off, racecheck takes no fault at all.
#include <catch2/catch.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "emu_test_helpers.h"
#include "kernels/compat.cuh"

using diffuse::emulator::ThreadOrder;
using diffuse::emulator::ScopedThreadOrder;
using diffuse::emulator::ScopedRacecheck;
using diffuse::kernels::dynamic_smem;
using diffuse::test::error_of;

namespace {

const auto& kOrders = diffuse::test::kAllOrders;

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::string thread_str(int x) { return "thread (" + std::to_string(x) + ",0,0)"; }

// Each thread writes its word, then reads its right neighbour's: with the barrier, correct;
// without it, the classic missing-__syncthreads race.
template <bool kBarrier>
__global__ void rotate(float* out) {
  float* s = dynamic_smem<float>();
  int t = threadIdx.x, n = blockDim.x;
  s[t] = static_cast<float>(t);
  if (kBarrier) __syncthreads();
  out[blockIdx.x * n + t] = s[(t + 1) % n];
}

std::string run_rotate(bool barrier, int blocks, int threads, std::vector<float>* out_values = nullptr) {
  std::vector<float> out(static_cast<size_t>(blocks) * threads, NAN);
  std::string e = error_of([&] {
    if (barrier) DIFFUSE_LAUNCH(rotate<true>, blocks, threads, threads * sizeof(float), nullptr, out.data());
    else DIFFUSE_LAUNCH(rotate<false>, blocks, threads, threads * sizeof(float), nullptr, out.data());
  });
  if (out_values) *out_values = out;
  return e;
}

}  // namespace

TEST_CASE("racecheck: the default comes from DIFFUSE_EMU_RACECHECK", "[emu][racecheck]") {
  const char* env = std::getenv("DIFFUSE_EMU_RACECHECK");
  CHECK(diffuse::emulator::racecheck() == (env && std::string(env) == "1"));
}

TEST_CASE("racecheck: a missing __syncthreads before reading a neighbour's word is reported", "[emu][racecheck]") {
  if (!diffuse::emulator::racecheck_supported()) {
    ScopedRacecheck on(true);
    CHECK(contains(run_rotate(false, 1, 64), "not supported on this architecture"));
    return;
  }
  ScopedRacecheck on(true);
  for (ThreadOrder o : kOrders) {
    ScopedThreadOrder scoped(o);
    INFO("order " << diffuse::emulator::thread_order_name(o));
    std::string e = run_rotate(false, 2, 64);
    INFO(e);
    CHECK(contains(e, "emulator: shared-memory race in block (0,0,0): "));
    CHECK(contains(e, "of dynamic smem"));
    CHECK(contains(e, "in the same barrier interval (since the block started, before any __syncthreads"));
    if (o == ThreadOrder::fwd) {  // thread 0 reads word 1 before thread 1 writes it
      CHECK(contains(e, thread_str(0) + " read word +4 (byte offset) of dynamic smem while " + thread_str(1) + " wrote it"));
      CHECK(contains(e, "both in warp 0 with no warp collective of both lanes"));
    }
    if (o == ThreadOrder::rev) {  // thread 63 writes word 63, then thread 62 reads it
      CHECK(contains(e, thread_str(63) + " wrote word +252 (byte offset) of dynamic smem while " + thread_str(62) + " read it"));
    }
  }
  // The emulator is usable again, and the same kernel with its barrier passes in every block.
  for (ThreadOrder o : kOrders) {
    ScopedThreadOrder scoped(o);
    std::vector<float> out;
    CHECK(run_rotate(true, 3, 64, &out).empty());
    for (int i = 0; i < 3 * 64; ++i) CHECK(out[i] == static_cast<float>((i % 64 + 1) % 64));
  }
}

namespace {
// Every thread writes the same word of a static array: a write-write race (kBarrier: thread 0
// alone writes, everyone reads it after the barrier, which is fine).
template <bool kRace>
__global__ void one_word(float* out) {
  DIFFUSE_SHARED(float, pad, 3);  // so the array below is the block's second
  DIFFUSE_SHARED(float, word, 2);
  if (threadIdx.x == 0) pad[0] = 0.0f;
  if (kRace || threadIdx.x == 0) word[1] = static_cast<float>(threadIdx.x + 1);
  __syncthreads();
  out[threadIdx.x] = word[1] + pad[0];
}

const int kRaceAfterBarrier = __LINE__ + 5;
// A race after a barrier: the report names that barrier as the start of the interval.
__global__ void race_after_barrier(int* out) {
  DIFFUSE_SHARED(int, s, 64);
  s[threadIdx.x] = 1;
  __syncthreads();
  s[63 - threadIdx.x] += static_cast<int>(threadIdx.x);  // read-modify-write of another thread's word
  out[threadIdx.x] = s[threadIdx.x];
}
}  // namespace

TEST_CASE("racecheck: a write-write race is reported, one writer and many readers are not", "[emu][racecheck]") {
  if (!diffuse::emulator::racecheck_supported()) return;
  ScopedRacecheck on(true);
  std::vector<float> out(128, NAN);
  for (ThreadOrder o : kOrders) {
    ScopedThreadOrder scoped(o);
    INFO("order " << diffuse::emulator::thread_order_name(o));
    std::string e = error_of([&] { DIFFUSE_LAUNCH(one_word<true>, 1, 128, 0, nullptr, out.data()); });
    INFO(e);
    CHECK(contains(e, "shared-memory race in block (0,0,0)"));
    CHECK(contains(e, " wrote word +4 (byte offset) of static array #1 (the 2nd DIFFUSE_SHARED the block reached, 8 bytes) while "));
    CHECK(contains(e, " wrote it in the same barrier interval"));
    if (o == ThreadOrder::fwd) {
      CHECK(contains(e, thread_str(0) + " wrote word +4 "));
      CHECK(contains(e, "while " + thread_str(1) + " wrote it"));
    }
    CHECK(error_of([&] { DIFFUSE_LAUNCH(one_word<false>, 2, 128, 0, nullptr, out.data()); }).empty());
    for (float v : out) CHECK(v == 1.0f);

    std::vector<int> out_i(64);
    e = error_of([&] { DIFFUSE_LAUNCH(race_after_barrier, 1, 64, 0, nullptr, out_i.data()); });
    INFO(e);
    CHECK(contains(e, "since the barrier at test_emulator_racecheck.cpp:" + std::to_string(kRaceAfterBarrier)));
    CHECK(contains(e, "of static array #0"));
  }
}

namespace {
// Lanes exchange words through shared memory, ordered only by warp collectives. kSecondSync =
// false drops the __syncwarp between reading the partner's word and overwriting one's own.
template <bool kSecondSync, bool kShuffle>
__global__ void warp_exchange(float* out) {
  DIFFUSE_SHARED(float, s, 64);
  int t = threadIdx.x;
  float v = static_cast<float>(t);
  for (int round = 0; round < 3; ++round) {
    s[t] = v;
    if (kShuffle) v += __shfl_xor_sync(0xffffffffu, 0.0f, 1);  // any collective of both lanes orders
    else __syncwarp();
    v = s[t ^ 1];
    if (kSecondSync) __syncwarp();
  }
  out[t] = v;
}
}  // namespace

TEST_CASE("racecheck: warp-synchronous exchanges pass with __syncwarp or a shuffle, not without", "[emu][racecheck]") {
  if (!diffuse::emulator::racecheck_supported()) return;
  ScopedRacecheck on(true);
  std::vector<float> out(64, NAN);
  for (ThreadOrder o : kOrders) {
    ScopedThreadOrder scoped(o);
    INFO("order " << diffuse::emulator::thread_order_name(o));
    CHECK(error_of([&] { DIFFUSE_LAUNCH((warp_exchange<true, false>), 1, 64, 0, nullptr, out.data()); }).empty());
    for (int t = 0; t < 64; ++t) CHECK(out[t] == static_cast<float>(t ^ 1));  // three swaps: the partner's index
    CHECK(error_of([&] { DIFFUSE_LAUNCH((warp_exchange<true, true>), 1, 64, 0, nullptr, out.data()); }).empty());
    std::string e = error_of([&] { DIFFUSE_LAUNCH((warp_exchange<false, false>), 1, 64, 0, nullptr, out.data()); });
    INFO(e);
    CHECK(contains(e, "shared-memory race in block (0,0,0)"));
    CHECK(contains(e, "with no warp collective of both lanes between the accesses"));
  }
}

namespace {
// Shared-memory counters updated by atomics from every thread (fine), read after a barrier
// (fine), or read by a plain load in the same interval (a race).
template <bool kPlainRead>
__global__ void smem_atomics(int* out) {
  DIFFUSE_SHARED(int, count, 2);
  DIFFUSE_SHARED(unsigned, bits, 1);
  if (threadIdx.x == 0) count[0] = 0, count[1] = 0, bits[0] = 0;
  __syncthreads();
  atomicAdd(&count[0], 1);
  atomicMax(&count[1], static_cast<int>(threadIdx.x));
  atomicOr(&bits[0], 1u << (threadIdx.x % 32));
  unsigned seen = atomicAdd(&bits[0], 0u);
  while (atomicCAS(&bits[0], seen, seen) != seen) seen = atomicAdd(&bits[0], 0u);  // a CAS loop is atomic too
  int early = kPlainRead ? count[0] : 0;
  __syncthreads();
  out[threadIdx.x] = count[0] + count[1] + static_cast<int>(bits[0] & 1u) + early;
}
}  // namespace

TEST_CASE("racecheck: shared-memory atomics do not race with each other, a plain access does", "[emu][racecheck]") {
  if (!diffuse::emulator::racecheck_supported()) return;
  ScopedRacecheck on(true);
  std::vector<int> out(96, -1);
  for (ThreadOrder o : kOrders) {
    ScopedThreadOrder scoped(o);
    INFO("order " << diffuse::emulator::thread_order_name(o));
    std::string e = error_of([&] { DIFFUSE_LAUNCH(smem_atomics<false>, 1, 96, 0, nullptr, out.data()); });
    INFO(e);
    CHECK(e.empty());
    for (int v : out) CHECK(v == 96 + 95 + 1);
    e = error_of([&] { DIFFUSE_LAUNCH(smem_atomics<true>, 1, 96, 0, nullptr, out.data()); });
    INFO(e);
    CHECK(contains(e, "shared-memory race"));
    CHECK(contains(e, "atomically updated"));
  }
}

namespace {
// float4 tiles: thread t stores a float4 at words 4t..4t+3, then (kNeighbour) reads word 4t+7 (its
// neighbour's last word) with or without a barrier. Only a decoded 16-byte width sees that word.
template <bool kBarrier>
__global__ void float4_tiles(float* out) {
  float* s = dynamic_smem<float>();
  int t = threadIdx.x, n = blockDim.x;
  float4 v = make_float4(t, t + 0.25f, t + 0.5f, t + 0.75f);
  *reinterpret_cast<float4*>(s + 4 * t) = v;
  if (kBarrier) __syncthreads();
  out[t] = s[(4 * t + 7) % (4 * n)];
}

// bf16 neighbours: two threads write the two halves of one 4-byte word (not a race on a GPU).
__global__ void bf16_halves(float* out) {
  DIFFUSE_SHARED(__nv_bfloat16, h, 64);
  h[threadIdx.x] = __float2bfloat16(static_cast<float>(threadIdx.x));
  out[threadIdx.x] = __bfloat162float(h[threadIdx.x]);
}

// Reads one element past a static array (into the arena's unused tail).
__global__ void past_static(float* out) {
  DIFFUSE_SHARED(float, s, 32);
  s[threadIdx.x] = 1.0f;
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x + 1];
}
}  // namespace

TEST_CASE("racecheck: vector and sub-word accesses are recorded at their width", "[emu][racecheck]") {
  if (!diffuse::emulator::racecheck_supported()) return;
  ScopedRacecheck on(true);
  std::vector<float> out(64, NAN);
  for (ThreadOrder o : kOrders) {
    ScopedThreadOrder scoped(o);
    INFO("order " << diffuse::emulator::thread_order_name(o));
    CHECK(error_of([&] { DIFFUSE_LAUNCH(float4_tiles<true>, 1, 32, 32 * 16, nullptr, out.data()); }).empty());
    for (int t = 0; t < 32; ++t) CHECK(out[t] == static_cast<float>((t + 1) % 32) + 0.75f);
    std::string e = error_of([&] { DIFFUSE_LAUNCH(float4_tiles<false>, 1, 32, 32 * 16, nullptr, out.data()); });
    INFO(e);
    CHECK(contains(e, "shared-memory race"));
    if (o == ThreadOrder::fwd) CHECK(contains(e, thread_str(0) + " read word +28 (byte offset) of dynamic smem while " + thread_str(1) + " wrote it"));
    CHECK(error_of([&] { DIFFUSE_LAUNCH(bf16_halves, 1, 64, 0, nullptr, out.data()); }).empty());
  }
  std::string e = error_of([&] { DIFFUSE_LAUNCH(past_static, 1, 32, 0, nullptr, out.data()); });
  INFO(e);
  CHECK(contains(e, "shared-memory access out of bounds in block (0,0,0): " + thread_str(31) +
                        " read byte +128 of the static shared-memory arena, outside every shared array"));
}

TEST_CASE("racecheck: the single-step fallback finds the same races", "[emu][racecheck]") {
  if (!diffuse::emulator::racecheck_supported()) return;
  // Instructions racecheck cannot replay out of line are single-stepped; force that for all.
  setenv("DIFFUSE_EMU_RACECHECK_STEP", "1", 1);
  ScopedRacecheck on(true);
  ScopedThreadOrder fwd(ThreadOrder::fwd);
  std::string e = run_rotate(false, 1, 64);
  CHECK(contains(e, thread_str(0) + " read word +4 (byte offset) of dynamic smem while " + thread_str(1) + " wrote it"));
  std::vector<float> out(64, NAN);
  CHECK(run_rotate(true, 1, 64, &out).empty());
  e = error_of([&] { DIFFUSE_LAUNCH(float4_tiles<false>, 1, 32, 32 * 16, nullptr, out.data()); });
  CHECK(contains(e, thread_str(0) + " read word +28 (byte offset) of dynamic smem while " + thread_str(1) + " wrote it"));
  std::vector<int> out_i(96, -1);
  CHECK(error_of([&] { DIFFUSE_LAUNCH(smem_atomics<false>, 1, 96, 0, nullptr, out_i.data()); }).empty());
  for (int v : out_i) CHECK(v == 96 + 95 + 1);
  unsetenv("DIFFUSE_EMU_RACECHECK_STEP");
}

TEST_CASE("racecheck: off, shared memory takes no fault, on, the cost per access is measured", "[emu][racecheck]") {
  if (!diffuse::emulator::racecheck_supported()) return;
  std::vector<float> out(4 * 64, NAN);
  auto time_rotate = [&](bool on) {  // best of 3
    ScopedRacecheck scoped(on);
    double best = 1e30;
    for (int rep = 0; rep < 3; ++rep) {
      auto t0 = std::chrono::steady_clock::now();
      CHECK(run_rotate(true, 4, 64, &out).empty());
      best = std::min(best, std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
  };
  unsigned long long before = diffuse::emulator::detail::racecheck_faults();
  double off = time_rotate(false);
  CHECK(diffuse::emulator::detail::racecheck_faults() == before);
  double on = time_rotate(true);
  unsigned long long faults = diffuse::emulator::detail::racecheck_faults() - before;
  CHECK(faults == 3 * 4 * 64 * 2);  // one write and one read per thread, 3 runs
  WARN("rotate, 4 blocks x 64 threads: racecheck off " << off << " us, on " << on << " us ("
                                                          << (on - off) / (4 * 64 * 2) << " us per access)");
}

namespace {
__global__ void smem_sweep(float* out, int reps) {
  float* s = dynamic_smem<float>();
  float acc = 0.0f;
  for (int r = 0; r < reps; ++r) {
    s[threadIdx.x] = static_cast<float>(r);
    acc += s[threadIdx.x];
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = acc;
}
}  // namespace

// Not a test: `test_emu "[.bench]"` prints racecheck's cost per shared-memory access.
TEST_CASE("racecheck speed: 16 blocks x 256 threads x 32 shared-memory accesses", "[.bench]") {
  std::vector<float> out(16 * 256);
  for (bool on : {false, true}) {
    ScopedRacecheck scoped(on);
    double best = 1e30;
    for (int rep = 0; rep < 3; ++rep) {
      auto t0 = std::chrono::steady_clock::now();
      DIFFUSE_LAUNCH(smem_sweep, 16, 256, 256 * sizeof(float), nullptr, out.data(), 16);
      best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::printf("racecheck %s: 16 x 256 threads x 32 smem accesses: %.2f ms (%.3f us per access)\n", on ? "on " : "off",
                best, best * 1000.0 / (16 * 256 * 32));
  }
}
