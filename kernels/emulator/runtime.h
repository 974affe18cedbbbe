// The SIMT emulator's interface: the thread order, the grid launch, and the entry points that
// compat.cuh's device functions (__syncthreads, warp collectives, shared memory) call into.
// One grid runs at a time on the calling OS thread: blocks one after another, each block's
// threads as fibers, switched only at barriers, warp collectives and thread exit.
#pragma once
#include <cstddef>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <utility>

#include "kernels/emulator/limits.h"  // kMaxDynamicSmemBytes
#include "kernels/emulator/types.h"

namespace diffuse::emulator {

// Which runnable thread goes next after every synchronisation point: ascending thread index,
// descending, or a permutation drawn afresh for every interleaving pass from a fixed seed.
enum class ThreadOrder { fwd, rev, shuffle };

// The order in force: the last set_thread_order(), else env DIFFUSE_EMU_ORDER (fwd|rev|shuffle), else fwd.
ThreadOrder thread_order();
void set_thread_order(ThreadOrder o);
const char* thread_order_name(ThreadOrder o);

// Sets an order for a scope (tests that sweep all three orders themselves).
class ScopedThreadOrder {
 public:
  explicit ScopedThreadOrder(ThreadOrder o) : saved_(thread_order()) { set_thread_order(o); }
  ~ScopedThreadOrder() { set_thread_order(saved_); }
  ScopedThreadOrder(const ScopedThreadOrder&) = delete;
  ScopedThreadOrder& operator=(const ScopedThreadOrder&) = delete;

 private:
  ThreadOrder saved_;
};

// Per-thread fiber stack size (env DIFFUSE_EMU_STACK_KB, default 64); a guard page sits below it.
size_t stack_bytes();

namespace detail {

// The built-in variables of the thread that is running now (read through compat.cuh's
// threadIdx/blockIdx/blockDim/gridDim references).
extern uint3 thread_idx;
extern uint3 block_idx;
extern dim3 block_dim;
extern dim3 grid_dim;

using KernelBody = void (*)(void* context);

// Throws diffuse::Error naming the launch site `file:line` unless the block has 1..1024 threads
// (z at most 64), the grid is within CUDA's limits and the dynamic shared memory within
// kMaxDynamicSmemBytes. A grid with a zero dimension passes (it launches nothing). run_grid
// checks the same; the emulated device checks at enqueue time, as a real launch fails at once.
void check_launch(const char* file, int line, dim3 grid, dim3 block, size_t dynamic_smem_bytes);

// Runs body(context) once per thread of every block; throws diffuse::Error for a bad launch
// configuration, a divergent barrier or a deadlocked warp collective, and rethrows whatever a
// thread threw. `file:line` is the launch site.
void run_grid(const char* file, int line, dim3 grid, dim3 block, size_t dynamic_smem_bytes, KernelBody body,
              void* context);

// Barriers: kind 0 = __syncthreads, 1 = _count, 2 = _and, 3 = _or. Returns the reduced predicate.
int syncthreads(int kind, int predicate, const char* file, unsigned line);

enum class WarpOp : int {
  sync, shfl_idx, shfl_up, shfl_down, shfl_xor, ballot, any, all,
  reduce_add, reduce_min_i, reduce_max_i, reduce_min_u, reduce_max_u,
};
// Joins the warp collective `op` over `mask`; returns this lane's result (value bits, low
// value_bytes bytes meaningful). `arg` is srcLane/delta/laneMask; `width` the shuffle section.
uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t value, int value_bytes, int arg, int width,
                         const char* file, unsigned line);

// The current block's dynamic shared memory (NaN-poisoned, ends at a guard page).
void* dynamic_smem();
// The current block's static shared array identified by `key` (allocated and NaN-poisoned by
// the first thread of the block that reaches it; the same address for every thread of the block).
void* static_smem(const void* key, size_t bytes, size_t align);

}  // namespace detail

// Backs DIFFUSE_SHARED: the array type A (e.g. float[256]) for the declaration tagged by `key`.
template <typename A>
A& static_shared(const void* key) {
  static_assert(std::is_trivially_copyable_v<std::remove_all_extents_t<A>>,
                "shared arrays hold trivially copyable types: their memory is raw NaN-poisoned bytes and no "
                "constructor runs, as for CUDA's __shared__");
  return *static_cast<A*>(detail::static_smem(key, sizeof(A), alignof(A)));
}

// Backs DIFFUSE_LAUNCH: converts the arguments to the kernel's parameter types once, as a CUDA
// launch does, and runs the grid.
template <typename... P, typename... A>
void launch(const char* file, int line, void (*kernel)(P...), dim3 grid, dim3 block, size_t dynamic_smem_bytes,
            void* /*stream*/, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "DIFFUSE_LAUNCH: argument count differs from the kernel's");
  struct Call {
    void (*kernel)(P...);
    std::tuple<P...> params;
    static void run(void* self) {
      Call* c = static_cast<Call*>(self);
      std::apply(c->kernel, c->params);
    }
  };
  Call call{kernel, std::tuple<P...>(std::forward<A>(args)...)};
  detail::run_grid(file, line, grid, block, dynamic_smem_bytes, &Call::run, &call);
}

}  // namespace diffuse::emulator
