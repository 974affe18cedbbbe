// How a CPU kernel uses threads (docs/design.md §5, "CPU kernels"): at most one OpenMP region per
// op, none at all for small work, and the range handed out in chunks on demand (several per thread)
// rather than one static slice per thread. On a machine shared with other work the OS deschedules
// threads at will; with static slices the whole team then waits at the region's closing barrier for
// the one slice whose thread is not running, while with dynamic chunks the running threads take
// over the rest. Idle threads wait passively (the CLI sets OMP_WAIT_POLICY=passive,
// tools/openmp_wait.h), so each region costs a wake-up: fewer, larger regions are the other half of
// being steady under load.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace diffuse::kernels::cpu {

// Below this much work (items × cost per item, roughly simple float operations) a loop runs on the
// calling thread: waking a passive team costs several microseconds.
constexpr double kParallelWork = 1 << 16;

// The threads a region started here would use (1 inside a region already).
inline int region_threads() { return omp_in_parallel() ? 1 : omp_get_max_threads(); }

// fn(begin, end) over [0, n) in contiguous chunks, all of them run by the time this returns;
// serial when n · cost_per_item < kParallelWork, with one thread, or inside a parallel region.
template <typename F>
void parallel_for(int64_t n, double cost_per_item, F&& fn) {
  if (n <= 0) return;
  const int threads = region_threads();
  if (threads <= 1 || n == 1 || double(n) * cost_per_item < kParallelWork) {
    fn(int64_t(0), n);
    return;
  }
  const int64_t chunks = std::min<int64_t>(n, int64_t(threads) * 4);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t c = 0; c < chunks; ++c) fn(n * c / chunks, n * (c + 1) / chunks);
}

}  // namespace diffuse::kernels::cpu
