// Internal to the emulator's .cpp files: the state of the block being run (its threads' fibers,
// what each one waits for, the barrier) and the memory hooks of a launch. A thread's state
// changes only on its own fiber or in the scheduler, both on the launching OS thread.
#pragma once
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
  boost::context::fiber scheduler;  // where the thread returns to when it blocks
  ThreadState state = ThreadState::runnable;
  uint3 idx{0, 0, 0};
  PendingWarpOp warp;  // meaningful while state == at_warp (and its result right after)
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

// Switches from the running thread's fiber back to the scheduler; returns when resumed.
void yield_to_scheduler();

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

}  // namespace diffuse::emulator::detail
