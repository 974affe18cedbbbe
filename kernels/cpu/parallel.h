// How a CPU kernel uses threads (docs/design.md §5, "CPU kernels"): at most one parallel region per
// op, none at all for small work, and the range handed out in chunks on demand (several per thread)
// rather than one static slice per thread. On a machine shared with other work the OS deschedules
// threads at will; with static slices the whole team then waits for the one slice whose thread is
// not running, while with chunks on demand the running threads take over the rest.
//
// The regions run on diffuse's own pool (kernels/cpu/parallel.cpp), not an OpenMP team: the calling
// thread starts on the chunks at once, woken workers join in, and the region ends when every chunk
// is done. A worker the OS has not yet run when the chunks run out is not waited for; an OpenMP
// region's closing barrier waits for every thread of the team to arrive, so beside other CPU-bound
// processes each of a step's ~300 regions paid a descheduled worker's wake-up. A waiting thread
// watches for at most 50 microseconds (about one futex wake-up on these VMs) and then sleeps on a
// futex; it never spins longer (kernels/cpu/parallel.cpp says why the bound). The thread count is OpenMP's setting (omp_get_max_threads, which
// `--threads` and OMP_NUM_THREADS set), so the rest of the program and OpenBLAS agree with it.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace diffuse::kernels::cpu {

// Below this much work (items × cost per item, roughly simple float operations) a loop runs on the
// calling thread: waking a sleeping worker costs several microseconds.
constexpr double kParallelWork = 1 << 16;

// Chunks a region is cut into, per thread. The region ends when its last chunk does, so the
// threads that finish first wait for about half a chunk: 16 per thread keeps that near 3% of the
// region where 4 per thread lost about 12% (the `tiny` step: 4% faster at 2 threads).
constexpr int64_t kChunksPerThread = 16;

// Whether this thread is running a chunk of a region (a region started inside runs serially).
bool in_parallel_region();

// The threads a region started here would use (1 inside a region already).
inline int region_threads() { return in_parallel_region() || omp_in_parallel() ? 1 : omp_get_max_threads(); }

// Runs call(context, c) for every c in [0, chunks) on the calling thread and up to threads − 1
// pool workers, and returns when all have run. An exception thrown by a chunk is rethrown here
// after every claimed chunk has finished (the first one, if several throw).
using ChunkFn = void (*)(void* context, int64_t chunk);
void run_chunks(int64_t chunks, int threads, ChunkFn call, void* context);

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
  struct Range {
    F* fn;
    int64_t n, chunks;
  } range{&fn, n, std::min<int64_t>(n, int64_t(threads) * kChunksPerThread)};
  run_chunks(range.chunks, threads, [](void* context, int64_t c) {
    const Range& r = *static_cast<const Range*>(context);
    (*r.fn)(r.n * c / r.chunks, r.n * (c + 1) / r.chunks);
  }, &range);
}

}  // namespace diffuse::kernels::cpu
