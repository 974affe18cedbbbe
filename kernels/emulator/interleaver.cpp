// The emulator's interleaver: runs a grid block after block, each block's threads as Boost.Context
// fibers on the launching OS thread, and implements __syncthreads. A thread runs until it blocks
// (barrier, warp collective) or exits; then the next runnable thread in the chosen order runs.
// Failures inside a thread are caught on its own fiber, the block's other fibers are unwound,
// and the error is rethrown from the launch. Under racecheck the interleaver also opens a new
// barrier interval when a __syncthreads completes and turns racecheck's finding into the error.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <optional>
#include <string>

#include "diffuse/error.h"
#include "kernels/emulator/asan_fibers.h"
#include "kernels/emulator/block.h"
#include "kernels/emulator/racecheck.h"

namespace diffuse::emulator {

namespace {

ThreadOrder g_order = ThreadOrder::fwd;
bool g_order_set = false;

}  // namespace

const char* thread_order_name(ThreadOrder o) {
  switch (o) {
    case ThreadOrder::fwd: return "fwd";
    case ThreadOrder::rev: return "rev";
    case ThreadOrder::shuffle: return "shuffle";
  }
  return "?";
}

ThreadOrder thread_order() {
  if (!g_order_set) {
    const char* env = std::getenv("DIFFUSE_EMU_ORDER");
    std::string v = env ? env : "fwd";
    if (v == "fwd" || v.empty()) g_order = ThreadOrder::fwd;
    else if (v == "rev") g_order = ThreadOrder::rev;
    else if (v == "shuffle") g_order = ThreadOrder::shuffle;
    else throw Error("DIFFUSE_EMU_ORDER must be fwd, rev or shuffle, got '" + v + "'");
    g_order_set = true;
  }
  return g_order;
}

void set_thread_order(ThreadOrder o) {
  g_order = o;
  g_order_set = true;
}

namespace detail {

uint3 thread_idx{0, 0, 0};
uint3 block_idx{0, 0, 0};
dim3 block_dim{1, 1, 1};
dim3 grid_dim{1, 1, 1};
BlockState* g_block = nullptr;

std::string site(const char* file, unsigned line) { return std::string(file) + ":" + std::to_string(line); }

// Appended piece by piece: g++ 12 at -O3 reports a false -Wrestrict on `"(" + std::to_string(...)`.
std::string dim_str(uint3 v) {
  std::string out = "(";
  out += std::to_string(v.x);
  out += ',';
  out += std::to_string(v.y);
  out += ',';
  out += std::to_string(v.z);
  out += ')';
  return out;
}

void fail(const std::string& message) { throw Error("emulator: " + message); }

void yield_to_interleaver() {
  EmuThread& t = g_block->threads[g_block->current];
  asan_fiber_switch(&t.asan_fake_stack);
  try {
    t.interleaver = std::move(t.interleaver).resume();
  } catch (const boost::context::detail::forced_unwind&) {
    asan_arrived_on_fiber(t.asan_fake_stack);  // resumed only to be unwound (unwind_fibers)
    throw;
  }
  asan_arrived_on_fiber(t.asan_fake_stack);
}

namespace {

std::atomic<bool> g_running{false};

bool same_site(const char* fa, unsigned la, const char* fb, unsigned lb) {
  return la == lb && (fa == fb || std::strcmp(fa, fb) == 0);
}

// The fiber's stack belongs to LaunchMemory and is reused, so the fiber frees nothing.
struct ReusedStack {
  void deallocate(boost::context::stack_context&) noexcept {}
};

// splitmix64: the shuffle order's generator (fixed seed; varies with block and pass).
uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

void fill_order(std::vector<int>& order, ThreadOrder mode, uint64_t block_linear, uint64_t pass) {
  int n = static_cast<int>(order.size());
  if (mode == ThreadOrder::rev) {
    for (int i = 0; i < n; ++i) order[i] = n - 1 - i;
    return;
  }
  std::iota(order.begin(), order.end(), 0);
  if (mode == ThreadOrder::shuffle) {
    uint64_t state = mix(0x5EEDull ^ mix(block_linear) ^ mix(pass + 0x1000));
    for (int i = n - 1; i > 0; --i) {
      state = mix(state);
      std::swap(order[i], order[static_cast<int>(state % static_cast<uint64_t>(i + 1))]);
    }
  }
}

// Destroys the block's suspended fibers: Boost resumes each one to unwind its frames.
void unwind_fibers(BlockState& b, LaunchMemory& memory) {
  for (int i = 0; i < b.nthreads; ++i) {
    EmuThread& t = b.threads[i];
    if (!t.fiber) continue;
    if (!t.started) {  // unwound inside Boost, on no frame of ours: nothing for ASan to know
      t.fiber = boost::context::fiber();
      continue;
    }
    boost::context::stack_context sctx = memory.stack(i);
    const char* bottom = static_cast<char*>(sctx.sp) - sctx.size;
    asan_interleaver_switch(bottom, sctx.size);
    t.fiber = boost::context::fiber();
    // Boost switched back from inside its own fiber entry, where no annotation can go: ASan still
    // believes this is the fiber, so the switch is announced here, after the fact (nothing ran in
    // between that ASan would have checked against the wrong stack).
    asan_fiber_switch(nullptr);
    asan_arrived_on_interleaver();
    asan_unpoison_stack(bottom, sctx.size);
  }
}

void run_block(BlockState& b, LaunchMemory& memory, ThreadOrder mode, uint64_t block_linear, KernelBody body,
               void* context) {
  b.current = 0;
  b.exited = 0;
  b.barrier_arrivals = 0;
  b.error = nullptr;
  std::fill(b.warp_waiting.begin(), b.warp_waiting.end(), 0u);
  memory.begin_block();
  // Under racecheck, shared memory is protected while this block's threads run, and opened again
  // however the block ends (the unwinding of failed fibers and the next block's poisoning are the
  // emulator's accesses, not the kernel's).
  struct RacecheckBlock {
    bool on;
    ~RacecheckBlock() {
      if (on) racecheck_end_block();
    }
  } racecheck_block{g_racecheck_running};
  if (g_racecheck_running) racecheck_begin_block(b);
  for (int i = 0; i < b.nthreads; ++i) {
    EmuThread& t = b.threads[i];
    t.state = ThreadState::runnable;
    t.started = false;
    t.idx = uint3{i % block_dim.x, (i / block_dim.x) % block_dim.y, i / (block_dim.x * block_dim.y)};
    boost::context::stack_context sctx = memory.stack(i);
    EmuThread* self = &t;
    t.fiber = boost::context::fiber(
        std::allocator_arg, boost::context::preallocated(sctx.sp, sctx.size, sctx), ReusedStack{},
        [self, body, context](boost::context::fiber&& interleaver) {
          asan_arrived_on_fiber(nullptr);
          self->started = true;
          self->interleaver = std::move(interleaver);
          try {
            body(context);
          } catch (const boost::context::detail::forced_unwind&) {
            throw;  // the block is being torn down: let Boost unwind this fiber
          } catch (...) {
            if (!g_block->error) g_block->error = std::current_exception();
          }
          self->state = ThreadState::exited;
          ++g_block->exited;
          asan_fiber_switch(nullptr);
          return std::move(self->interleaver);
        });
  }

  std::vector<int> order(b.nthreads);
  fill_order(order, mode, block_linear, 0);
  for (uint64_t pass = 1;; ++pass) {
    bool ran = false;
    for (int i : order) {
      EmuThread& t = b.threads[i];
      if (t.state != ThreadState::runnable) continue;
      ran = true;
      b.current = i;
      thread_idx = t.idx;
      boost::context::stack_context sctx = memory.stack(i);
      asan_interleaver_switch(static_cast<char*>(sctx.sp) - sctx.size, sctx.size);
      t.fiber = std::move(t.fiber).resume();
      asan_arrived_on_interleaver();
      if (g_racecheck_running) [[unlikely]] {
        // The race happened before anything the thread may have thrown since: report it first.
        std::string race = racecheck_finding(b);
        if (!race.empty()) b.error = std::make_exception_ptr(Error(race));
      }
      if (b.error) return;
    }
    if (!ran) break;
    if (mode == ThreadOrder::shuffle) fill_order(order, mode, block_linear, pass);
  }
  if (b.exited != b.nthreads) report_deadlock(b);
}

}  // namespace

void check_launch(const char* file, int line, dim3 grid, dim3 block, size_t dynamic_smem_bytes) {
  // The launch site as errors name it, formatted only when one is thrown.
  auto where = [&] { return "DIFFUSE_LAUNCH at " + site(file, static_cast<unsigned>(line)) + ": "; };
  uint64_t nthreads = uint64_t{block.x} * block.y * block.z;
  if (nthreads == 0 || nthreads > 1024 || block.z > 64)
    throw Error(where() + "block " + dim_str({block.x, block.y, block.z}) +
                " must have 1..1024 threads (z at most 64)");
  if (grid.y > 65535 || grid.z > 65535 || grid.x > 2147483647u)
    throw Error(where() + "grid " + dim_str({grid.x, grid.y, grid.z}) + " exceeds CUDA's limits");
  if (dynamic_smem_bytes > kMaxDynamicSmemBytes)
    throw Error(where() + std::to_string(dynamic_smem_bytes) + " bytes of dynamic shared memory exceed 227 KiB");
}

void run_grid(const char* file, int line, dim3 grid, dim3 block, size_t dynamic_smem_bytes, KernelBody body,
              void* context) {
  auto where = [&] { return "DIFFUSE_LAUNCH at " + site(file, static_cast<unsigned>(line)) + ": "; };
  check_launch(file, line, grid, block, dynamic_smem_bytes);
  const uint64_t nthreads = uint64_t{block.x} * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return;  // nothing to run (documented in compat.cuh)
  if (g_running.exchange(true))
    throw Error(where() + "another emulated grid is already running (nested or concurrent launch)");
  struct Running {
    ~Running() {
      g_block = nullptr;
      g_running = false;
    }
  } running;

  ThreadOrder mode = thread_order();
  LaunchMemory memory(static_cast<int>(nthreads), dynamic_smem_bytes);
  std::optional<RacecheckLaunch> racecheck_launch;  // after memory: it needs the shared-memory map
  if (racecheck()) racecheck_launch.emplace(static_cast<int>(nthreads));
  BlockState b;
  b.nthreads = static_cast<int>(nthreads);
  b.threads.resize(nthreads);
  b.warp_waiting.assign((nthreads + 31) / 32, 0u);
  g_block = &b;
  grid_dim = grid;
  block_dim = block;
  // Unwinds the fibers still suspended (after a failure) before the stacks go away.
  struct Unwind {
    BlockState& b;
    LaunchMemory& memory;
    ~Unwind() { unwind_fibers(b, memory); }
  } unwind{b, memory};

  uint64_t block_linear = 0;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x, ++block_linear) {
        block_idx = uint3{x, y, z};
        run_block(b, memory, mode, block_linear, body, context);
        if (b.error) {
          unwind_fibers(b, memory);
          std::rethrow_exception(b.error);
        }
      }
}

int syncthreads(int kind, int predicate, const char* file, unsigned line) {
  BlockState& b = running_block("__syncthreads");
  EmuThread& t = b.threads[b.current];
  if (b.barrier_arrivals == 0) {
    b.barrier_file = file;
    b.barrier_line = line;
    b.barrier_kind = kind;
    b.barrier_true = 0;
  } else if (!same_site(file, line, b.barrier_file, b.barrier_line)) {
    std::string waiting;
    for (const EmuThread& u : b.threads)
      if (u.state == ThreadState::at_barrier) {
        waiting = dim_str(u.idx);
        break;
      }
    fail("divergent __syncthreads in block " + dim_str(block_idx) + ": thread " + dim_str(t.idx) +
         " reached the barrier at " + site(file, line) + " while thread " + waiting + " (and " +
         std::to_string(b.barrier_arrivals - 1) + " more) wait at " + site(b.barrier_file, b.barrier_line));
  }
  b.barrier_true += predicate != 0;
  t.state = ThreadState::at_barrier;
  if (++b.barrier_arrivals == b.nthreads) {  // everyone is here: release them all
    for (EmuThread& u : b.threads) u.state = ThreadState::runnable;
    b.barrier_arrivals = 0;
    if (g_racecheck_running) racecheck_barrier(b.barrier_file, b.barrier_line);
    switch (b.barrier_kind) {
      case 1: b.barrier_result = b.barrier_true; break;
      case 2: b.barrier_result = b.barrier_true == b.nthreads; break;
      case 3: b.barrier_result = b.barrier_true > 0; break;
      default: b.barrier_result = 0;
    }
  }
  // Even the last arrival yields, so the threads after a barrier start in the chosen order.
  yield_to_interleaver();
  return b.barrier_result;
}

}  // namespace detail
}  // namespace diffuse::emulator
