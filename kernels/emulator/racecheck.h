// The emulator's shared-memory race detector (racecheck.cpp): whether it is on, and the flag the
// atomic intrinsics raise so that their accesses count as atomic. Kernels reach shared memory
// through plain pointers, so racecheck cannot intercept accesses in C++: while a kernel thread
// runs, the block's shared memory is PROT_NONE and every access traps into a signal handler that
// records it (see racecheck.cpp). It is off by default because each shared-memory access then
// costs a fault (microseconds); only small shapes should run with it.
#pragma once
#include <atomic>
#include <csignal>

namespace diffuse::emulator {

// Whether launches run under racecheck: the last set_racecheck(), else env DIFFUSE_EMU_RACECHECK
// (0 or empty: off, 1: on), else off. Read once per launch.
bool racecheck();
void set_racecheck(bool on);
// Whether this machine can run racecheck (x86-64 Linux: it decodes the page-fault error code and
// single-steps with the trap flag). Elsewhere a launch with racecheck on throws "not supported".
bool racecheck_supported();

// Sets racecheck for a scope (tests that need it on, or off, whatever the environment says).
class ScopedRacecheck {
 public:
  explicit ScopedRacecheck(bool on) : saved_(racecheck()) { set_racecheck(on); }
  ~ScopedRacecheck() { set_racecheck(saved_); }
  ScopedRacecheck(const ScopedRacecheck&) = delete;
  ScopedRacecheck& operator=(const ScopedRacecheck&) = delete;

 private:
  bool saved_;
};

namespace detail {

// Non-zero while an atomic intrinsic reads and writes its target: the fault handler records
// those accesses as atomic, and atomics do not race with each other (CUDA's semantics). A plain
// store costs nothing measurable, so the atomics raise it whether racecheck is on or not.
extern volatile std::sig_atomic_t in_atomic;

struct AtomicScope {
  AtomicScope() {
    in_atomic = 1;
    std::atomic_signal_fence(std::memory_order_seq_cst);  // the access stays inside the scope
  }
  ~AtomicScope() {
    std::atomic_signal_fence(std::memory_order_seq_cst);
    in_atomic = 0;
  }
  AtomicScope(const AtomicScope&) = delete;
  AtomicScope& operator=(const AtomicScope&) = delete;
};

// Shared-memory faults taken by racecheck since the process started (tests and measurements).
unsigned long long racecheck_faults();

}  // namespace detail
}  // namespace diffuse::emulator
