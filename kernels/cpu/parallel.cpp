// The CPU kernels' thread pool behind kernels/cpu/parallel.h (why it is not an OpenMP team is
// there). One region at a time: the caller publishes the chunk count with a new generation in one
// 64-bit word (generation | chunks | next chunk), every participant claims chunks from that word
// by compare-and-swap, and the caller waits only until the claimed chunks are done.
// A worker woken late finds the generation moved on or no chunk left and sleeps again; since a
// chunk can only be claimed while its region is live, the region's function and context (on the
// caller's stack) are never touched after it returns. A second application thread that starts a
// region while one runs runs its own chunks alone rather than waiting.
#include "kernels/cpu/parallel.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <mutex>
#include <thread>


namespace diffuse::kernels::cpu {

namespace {

thread_local bool t_in_region = false;

// Sleeping and waking through the futex itself. (std::atomic::wait in libstdc++ 12 spins and then
// calls sched_yield before it sleeps; beside CPU-bound processes a yield hands the core to one of
// them for a whole time slice, which is the very wait this pool exists to avoid.)
static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t) && std::atomic<uint32_t>::is_always_lock_free);
void futex_sleep(std::atomic<uint32_t>& word, uint32_t expected) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
}

// How long a wait watches its word before it sleeps: about what one futex sleep and wake-up costs
// on the 2-core VMs we run on (45-60 us from the wake call to the sleeper running, and the
// waker's syscall itself is several microseconds). A step's ~300 regions follow each other a few
// tens of microseconds apart, so a worker that watches that long catches the next region without
// a wake-up, and a caller whose last chunk is on the worker gets it without one; a wait that
// outlasts the bound sleeps, so at most that much CPU is spent per wait. Measured side by side
// (tiny, batch 32, 2 threads): 189.7 -> 169.4 ms per step idle, and 412 -> 345 ms beside two
// CPU-bound processes (a woken sleeper there also waits for a core). An unbounded spin is what made
// OpenMP's default wait policy take 27 s for a 0.6 s step on a busy machine.
constexpr auto kWatchBeforeSleep = std::chrono::microseconds(50);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Returns once `word` differs from `expected`: watched for up to kWatchBeforeSleep, then asleep on
// the futex (which returns at once if the word has moved on). May return spuriously; callers
// re-check.
void futex_wait(std::atomic<uint32_t>& word, uint32_t expected) {
  const auto until = std::chrono::steady_clock::now() + kWatchBeforeSleep;
  do {
    for (int i = 0; i < 32; ++i) {
      if (word.load(std::memory_order_acquire) != expected) return;
      cpu_relax();
    }
  } while (std::chrono::steady_clock::now() < until);
  futex_sleep(word, expected);
}
void futex_wake_all(std::atomic<uint32_t>& word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE_PRIVATE, INT32_MAX, nullptr, nullptr, 0);
}

struct RegionScope {
  RegionScope() { t_in_region = true; }
  ~RegionScope() { t_in_region = false; }
};

// The claim word: generation (32 bits) | chunk count (16) | next chunk (16).
constexpr uint64_t kMaxChunks = 0xffff;
inline uint64_t pack(uint64_t generation, uint64_t chunks, uint64_t next) {
  return (generation << 32) | (chunks << 16) | next;
}

class Pool {
 public:
  void run(int64_t chunks, int threads, ChunkFn call, void* context) {
    std::unique_lock<std::mutex> only_region(region_, std::try_to_lock);
    if (!only_region.owns_lock() || chunks > int64_t(kMaxChunks)) {
      serial(chunks, call, context);
      return;
    }
    start_workers(threads - 1);
    call_ = call;
    context_ = context;
    error_ = nullptr;
    participants_.store(threads - 1, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    const uint64_t generation = ((claim_.load(std::memory_order_relaxed) >> 32) + 1) & 0xffffffffu;
    claim_.store(pack(generation, uint64_t(chunks), 0), std::memory_order_release);
    wake_.fetch_add(1, std::memory_order_release);
    futex_wake_all(wake_);
    work(generation);
    for (uint32_t d = done_.load(std::memory_order_acquire); d != uint32_t(chunks);
         d = done_.load(std::memory_order_acquire))
      futex_wait(done_, d);
    if (error_) std::rethrow_exception(error_);
  }

 private:
  static void serial(int64_t chunks, ChunkFn call, void* context) {
    RegionScope scope;
    for (int64_t c = 0; c < chunks; ++c) call(context, c);
  }

  // Claims and runs chunks of `generation` until none is left.
  void work(uint64_t generation) {
    RegionScope scope;
    uint64_t word = claim_.load(std::memory_order_acquire);
    for (;;) {
      const uint64_t next = word & 0xffff, chunks = (word >> 16) & 0xffff;
      if ((word >> 32) != generation || next >= chunks) return;
      if (!claim_.compare_exchange_weak(word, word + 1, std::memory_order_acq_rel, std::memory_order_acquire))
        continue;
      try {
        call_(context_, int64_t(next));
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex_);
        if (!error_) error_ = std::current_exception();
      }
      if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == uint32_t(chunks)) futex_wake_all(done_);
      word = claim_.load(std::memory_order_acquire);
    }
  }

  void worker(int id) {
    uint32_t seen = wake_.load(std::memory_order_acquire);
    for (;;) {
      futex_wait(wake_, seen);  // returns at once when wake_ moved on since `seen`
      const uint32_t now = wake_.load(std::memory_order_acquire);
      if (now == seen) continue;  // a spurious wake-up
      seen = now;
      if (id >= participants_.load(std::memory_order_relaxed)) continue;
      work(claim_.load(std::memory_order_acquire) >> 32);
    }
  }

  void start_workers(int wanted) {  // under region_
    while (int(workers_) < wanted) {
      const int id = int(workers_);
      // Workers live as long as the process (the pool is never destroyed: a kernel may run from a
      // static object's destructor), sleeping between regions.
      std::thread([this, id] { worker(id); }).detach();
      ++workers_;
    }
  }

  std::mutex region_;  // one region at a time
  size_t workers_ = 0;
  std::atomic<uint64_t> claim_{0};
  std::atomic<uint32_t> done_{0};
  std::atomic<uint32_t> wake_{0};
  std::atomic<int> participants_{0};
  ChunkFn call_ = nullptr;
  void* context_ = nullptr;
  std::mutex error_mutex_;
  std::exception_ptr error_;
};

Pool& the_pool() {
  static Pool* pool = new Pool;  // never destroyed (see start_workers)
  return *pool;
}

}  // namespace

bool in_parallel_region() { return t_in_region; }

void run_chunks(int64_t chunks, int threads, ChunkFn call, void* context) {
  if (chunks <= 0) return;
  if (threads <= 1 || chunks == 1 || t_in_region) {
    for (int64_t c = 0; c < chunks; ++c) call(context, c);
    return;
  }
  the_pool().run(chunks, threads, call, context);
}

}  // namespace diffuse::kernels::cpu
