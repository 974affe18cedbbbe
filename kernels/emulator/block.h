// Internal to the emulator's .cpp files: the state of the block being run (its threads' fibers,
// what each one waits for, the barrier) and the memory hooks of a launch. A thread's state
// changes only on its own fiber or in the interleaver, both on the launching OS thread.
#pragma once
#include <signal.h>

#include <boost/context/fiber.hpp>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "kernels/emulator/runtime.h"

namespace diffuse::emulator::detail {

enum class ThreadState : uint8_t { runnable, at_barrier, at_warp, exited };

struct PendingWarpOp {
  WarpOp op = WarpOp::sync;
  unsigned mask = 0;
  int value_bytes = 0;
  int arg = 0;
  int width = 32;
  uint64_t value = 0;
  uint64_t result = 0;
  const char* file = "";
  unsigned line = 0;
};

struct EmuThread {
  boost::context::fiber fiber;      // the suspended thread (empty once it has exited)
  boost::context::fiber interleaver;  // where the thread returns to when it blocks
  ThreadState state = ThreadState::runnable;
  uint3 idx{0, 0, 0};
  PendingWarpOp warp;  // meaningful while state == at_warp (and its result right after)
  bool started = false;             // its fiber has run (a fiber never resumed runs none of our code)
  void* asan_fake_stack = nullptr;  // kernels/emulator/asan_fibers.h: saved while suspended
};

struct BlockState {
  std::vector<EmuThread> threads;
  int nthreads = 0;
  int current = 0;  // index of the running thread
  // Per warp, the lanes whose state is at_warp: a collective is complete only when every lane of
  // its mask is set here, so most arrivals skip the lane-by-lane comparison.
  std::vector<uint32_t> warp_waiting;
  int exited = 0;
  // The barrier being gathered: the site of its first arrival and how many have arrived.
  int barrier_arrivals = 0;
  int barrier_kind = 0;
  const char* barrier_file = "";
  unsigned barrier_line = 0;
  int barrier_true = 0;    // arrivals with a non-zero predicate
  int barrier_result = 0;  // the reduced predicate of the last completed barrier
  std::exception_ptr error;  // the first failure of any thread of this block
};

[[noreturn]] void fail(const std::string& message);  // throws diffuse::Error("emulator: ...")

extern BlockState* g_block;  // non-null while a grid runs

// The running block; throws if `what` (a device function) is called outside a launch.
inline BlockState& running_block(const char* what) {
  if (!g_block) fail(std::string(what) + " called outside an emulated kernel launch");
  return *g_block;
}

// Switches from the running thread's fiber back to the interleaver; returns when resumed.
void yield_to_interleaver();

// Messages.
std::string site(const char* file, unsigned line);
std::string dim_str(uint3 v);
const char* warp_op_name(WarpOp op);
// Called when no thread can run but some have not exited: throws the deadlock report.
[[noreturn]] void report_deadlock(const BlockState& b);

// Memory of a launch (memory.cpp). LaunchMemory prepares the stacks and shared memory of a
// launch and, while it lives, reports faults in guard pages before the process dies.
class LaunchMemory {
 public:
  LaunchMemory(int threads_per_block, size_t dynamic_smem_bytes);
  ~LaunchMemory();
  LaunchMemory(const LaunchMemory&) = delete;
  LaunchMemory& operator=(const LaunchMemory&) = delete;
  void begin_block();  // re-poisons dynamic shared memory, forgets static shared arrays
  boost::context::stack_context stack(int thread) const;
};

// Where the running launch's shared memory lies (memory.cpp), for racecheck: the static arena
// (whole pages, shared with nothing else) and the pages holding the dynamic buffer, which ends at
// the guard page. Only the launching thread changes it, between blocks.
struct SharedMemoryMap {
  char* static_base = nullptr;
  size_t static_capacity = 0;    // bytes, a multiple of the page size
  char* dynamic_pages = nullptr;  // the page holding the buffer's first byte
  char* dynamic_ptr = nullptr;    // the kernel's buffer: [dynamic_ptr, dynamic_end)
  char* dynamic_end = nullptr;    // the guard page
  ptrdiff_t alias_delta = 0;      // view + delta is the same byte, never protected (0: no alias)
};
SharedMemoryMap shared_memory_map();
// Makes every page of the launch's shared memory PROT_NONE (true) or readable and writable again.
void protect_shared_memory(bool protect);
// The static array of the running block that holds `addr`: its rank in allocation order (0 is the
// first DIFFUSE_SHARED the block reached), its start and size. False when no array holds it.
// Async-signal-safe (the fault handler asks).
bool find_static_array(const char* addr, int* rank, const char** start, size_t* bytes);

// ---- racecheck (racecheck.cpp) -----------------------------------------------------------------
// True while a launch runs under racecheck; the interleaver and the warp code call the hooks below
// only then, so a launch without racecheck pays one branch per barrier and collective.
extern bool g_racecheck_running;

// Per launch: allocates the shadow and installs the single-step (SIGTRAP) handler; throws when
// racecheck is not supported here.
class RacecheckLaunch {
 public:
  explicit RacecheckLaunch(int threads_per_block);
  ~RacecheckLaunch();
  RacecheckLaunch(const RacecheckLaunch&) = delete;
  RacecheckLaunch& operator=(const RacecheckLaunch&) = delete;
};
// After LaunchMemory::begin_block: a new barrier interval, fresh warp clocks, shared memory
// protected. end_block opens shared memory again (the emulator's own accesses must not count).
void racecheck_begin_block(const BlockState& b);
void racecheck_end_block();
// A __syncthreads completed (every thread arrived at file:line): a new barrier interval.
void racecheck_barrier(const char* file, unsigned line);
// A warp collective over `mask` completed for the warp whose lane 0 is thread `base`.
void racecheck_warp_sync(int base, unsigned mask);
// The SIGSEGV handler's first question: a fault on protected shared memory is recorded and
// single-stepped (true); anything else is not racecheck's (false).
bool racecheck_fault(siginfo_t* info, void* ucontext);
// The first finding of this launch as the full error message ("emulator: shared-memory race in
// ..."), or ""; asked by the interleaver whenever a thread yields or exits. Clears it.
std::string racecheck_finding(const BlockState& b);

}  // namespace diffuse::emulator::detail
