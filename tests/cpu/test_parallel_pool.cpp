// The CPU kernels' thread pool (kernels/cpu/parallel.h): every chunk runs exactly once and its
// writes are visible when the region returns; a region inside a chunk runs serially; a chunk's
// exception reaches the caller after the other claimed chunks finished; two application threads
// starting regions at once both complete; and thousands of short regions in a row (the pattern of
// a training step: ~300 per step) neither hang nor lose a wake-up; and a waiting thread watches its
// word only briefly before it sleeps, so neither an idle pool nor a caller waiting on a long chunk
// burns a core.
#include <catch2/catch.hpp>
#include <omp.h>

#include <pthread.h>
#include <time.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

#include "kernels/cpu/parallel.h"

using namespace diffuse::kernels::cpu;

namespace {

// Sets omp_get_max_threads (the pool's thread count) for a scope.
struct Threads {
  int saved = omp_get_max_threads();
  explicit Threads(int n) { omp_set_num_threads(n); }
  ~Threads() { omp_set_num_threads(saved); }
};

// CPU time consumed so far on a CPU-time clock (a thread's), in milliseconds.
double cpu_ms(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return double(ts.tv_sec) * 1e3 + double(ts.tv_nsec) / 1e6;
}

}  // namespace

TEST_CASE("the CPU pool runs every chunk once, at any thread count", "[threads][pool]") {
  for (int threads : {1, 2, 3, 5}) {
    Threads t(threads);
    INFO(threads << " threads");
    for (int64_t n : {int64_t(2), int64_t(7), int64_t(1000), int64_t(100000)}) {
      std::vector<int> hits(static_cast<size_t>(n), 0);
      parallel_for(n, 1e6, [&](int64_t b, int64_t e) {
        CHECK(region_threads() == 1);  // inside a region
        for (int64_t i = b; i < e; ++i) ++hits[static_cast<size_t>(i)];
      });
      int64_t wrong = 0;
      for (int h : hits) wrong += h != 1;
      CHECK(wrong == 0);
    }
  }
}

TEST_CASE("a region started inside a chunk runs serially on that thread", "[threads][pool]") {
  Threads t(3);
  std::atomic<int64_t> total{0};
  parallel_for(12, 1e6, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const std::thread::id self = std::this_thread::get_id();
      parallel_for(100, 1e6, [&](int64_t ib, int64_t ie) {
        CHECK(std::this_thread::get_id() == self);
        total += ie - ib;
      });
    }
  });
  CHECK(total == 1200);
}

TEST_CASE("a chunk's exception reaches the caller after the region's chunks are done", "[threads][pool]") {
  Threads t(3);
  std::atomic<int> finished{0};
  const int64_t chunks = 3 * kChunksPerThread;
  CHECK_THROWS_WITH(parallel_for(2 * chunks, 1e6,
                                 [&](int64_t b, int64_t) {
                                   if (b == 0) throw std::runtime_error("chunk 0 failed");
                                   finished++;
                                 }),
                    "chunk 0 failed");
  CHECK(finished == chunks - 1);  // every chunk but the first ran to the end
  // The pool is usable afterwards.
  std::atomic<int64_t> sum{0};
  parallel_for(1000, 1e6, [&](int64_t b, int64_t e) { sum += e - b; });
  CHECK(sum == 1000);
}

TEST_CASE("two application threads run regions at the same time", "[threads][pool]") {
  Threads t(2);
  std::atomic<int64_t> sums[2] = {0, 0};
  auto body = [&](int which) {
    omp_set_num_threads(2);  // per thread: OpenMP's setting is a thread's own
    for (int r = 0; r < 300; ++r)
      parallel_for(64, 1e6, [&](int64_t b, int64_t e) { sums[which] += e - b; });
  };
  std::thread a(body, 0), b(body, 1);
  a.join();
  b.join();
  CHECK(sums[0] == 300 * 64);
  CHECK(sums[1] == 300 * 64);
}

TEST_CASE("thousands of short regions in a row all complete", "[threads][pool]") {
  Threads t(2);
  int64_t total = 0;
  std::vector<int64_t> part(8);
  for (int r = 0; r < 20000; ++r) {
    std::fill(part.begin(), part.end(), 0);
    parallel_for(8, 1e6, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) part[static_cast<size_t>(i)] = i + r;
    });
    for (int64_t v : part) total += v;
  }
  CHECK(total == 20000 * 28 + 8 * (int64_t(20000) * 19999 / 2));
}

TEST_CASE("waiting threads sleep: an idle pool and a caller waiting on a long chunk use no CPU", "[threads][pool]") {
  Threads t(2);
  const std::thread::id caller = std::this_thread::get_id();
  // Each thread's own CPU clock, not the process's: other libraries' threads (OpenBLAS's server
  // threads poll for about 0.1 s after the library loads) would count in a process clock. A
  // worker that has just been created may not run for a while on a busy machine, so regions run
  // until the worker has taken a chunk: it reports its clock from there.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  clockid_t worker_clock{};
  bool have_worker = false;
  while (!have_worker && std::chrono::steady_clock::now() < deadline) {
    std::atomic<bool> on_worker{false};
    parallel_for(2, 1e6, [&](int64_t, int64_t) {
      if (std::this_thread::get_id() == caller) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));  // lets the worker claim the other
      } else if (pthread_getcpuclockid(pthread_self(), &worker_clock) == 0) {
        on_worker = true;
      }
    });
    have_worker = on_worker;
  }
  REQUIRE(have_worker);

  // The caller's chunk is short; the other one, run by the worker, sleeps 300 ms. A caller that
  // spun until it finished would spend ~300 ms of CPU in parallel_for; the bounded watch spends
  // 50 microseconds.
  bool exercised = false;
  while (!exercised && std::chrono::steady_clock::now() < deadline) {
    std::atomic<bool> long_on_worker{false};
    const double caller_before = cpu_ms(CLOCK_THREAD_CPUTIME_ID);
    parallel_for(2, 1e6, [&](int64_t, int64_t) {
      if (std::this_thread::get_id() == caller) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));  // lets the worker claim the other
      } else {
        long_on_worker = true;
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
      }
    });
    if (long_on_worker) {
      exercised = true;
      CHECK(cpu_ms(CLOCK_THREAD_CPUTIME_ID) - caller_before < 30.0);
    }
  }
  CHECK(exercised);

  // With no region running, the worker watches for the next one briefly and then sleeps.
  const double worker_before = cpu_ms(worker_clock);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK(cpu_ms(worker_clock) - worker_before < 30.0);
}
