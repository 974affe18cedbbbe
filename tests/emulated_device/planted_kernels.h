// Launchers for the planted-bug kernels of test_planted_kernels.cpp (kernels in
// planted_kernels.cu, compiled like kernels/cuda/*.cu for the emulated device). Each kernel
// carries one deliberate bug of a kind the emulated device must catch, next to a correct twin so
// that the tests can show the check stays quiet when the bug is absent. Device pointers; every
// launch queues on `stream` and runs when the host synchronises.
#pragma once
#include <cstdint>

#include "kernels/common.h"

namespace diffuse::kernels::cuda::planted {

// out[r] = Σ_c x[r, c]. With init_sum false the kernel adds into out without setting it first:
// out is read before anything wrote it (uninitialised device memory).
void row_sums(const float* x, float* out, int64_t rows, int64_t cols, bool init_sum, Stream stream);

// dst[i] = i for i < n; with off_by_one the bound is i <= n, so one thread writes dst[n].
void fill_index(float* dst, int64_t n, bool off_by_one, Stream stream);
// The source line of fill_index's DIFFUSE_LAUNCH (what a fault report must name).
int fill_index_launch_line();

// Blocks of 64 threads: out[b*64 + t] = in[b*64 + (t + 1) % 64], exchanged through shared memory.
// Without the barrier between the shared-memory write and the neighbour's read, two threads
// touch one shared word with nothing ordering them: a race.
void neighbour_exchange(const float* in, float* out, int blocks, bool with_barrier, Stream stream);
int neighbour_exchange_launch_line();

}  // namespace diffuse::kernels::cuda::planted
