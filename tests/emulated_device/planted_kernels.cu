// Kernels with planted bugs for test_planted_kernels.cpp: the proof that the emulated device's
// checks fire (uninitialised device memory is NaN, an out-of-bounds write faults and is reported
// with the kernel and its launch site, racecheck reports a missing __syncthreads). Written as
// kernels/cuda/*.cu are (kernels/compat.cuh first, launchers in DIFFUSE_DEVICE_NS, DIFFUSE_LAUNCH)
// and compiled the same way, so the reports come from the same machinery a real kernel meets.
#include "kernels/compat.cuh"

#include "tests/emulated_device/planted_kernels.h"

namespace diffuse::kernels::DIFFUSE_DEVICE_NS::planted {

namespace {

// One thread per row.
__global__ void planted_row_sums(const float* x, float* out, int64_t rows, int64_t cols, bool init_sum) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  if (init_sum) out[r] = 0.0f;  // the bug when false: out[r] keeps whatever the allocation held
  for (int64_t c = 0; c < cols; ++c) out[r] += x[r * cols + c];
}

__global__ void planted_fill_index(float* dst, int64_t n, bool off_by_one) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (off_by_one ? i <= n : i < n) dst[i] = static_cast<float>(i);
}

__global__ void planted_neighbour_exchange(const float* in, float* out, bool with_barrier) {
  DIFFUSE_SHARED(float, tile, 64);
  const int t = static_cast<int>(threadIdx.x);
  const int64_t base = static_cast<int64_t>(blockIdx.x) * 64;
  tile[t] = in[base + t];
  if (with_barrier) __syncthreads();  // block-uniform: every thread sees the same flag
  out[base + t] = tile[(t + 1) % 64];
}

constexpr int kThreads = 64;

}  // namespace

void row_sums(const float* x, float* out, int64_t rows, int64_t cols, bool init_sum, Stream stream) {
  DIFFUSE_LAUNCH(planted_row_sums, static_cast<unsigned>((rows + kThreads - 1) / kThreads), kThreads, 0, stream, x,
                 out, rows, cols, init_sum);
}

namespace {
constexpr int kFillIndexLine = __LINE__ + 4;  // the DIFFUSE_LAUNCH line below
}

void fill_index(float* dst, int64_t n, bool off_by_one, Stream stream) {
  DIFFUSE_LAUNCH(planted_fill_index, static_cast<unsigned>((n + kThreads) / kThreads), kThreads, 0, stream, dst, n,
                 off_by_one);
}
int fill_index_launch_line() { return kFillIndexLine; }

namespace {
constexpr int kExchangeLine = __LINE__ + 4;
}

void neighbour_exchange(const float* in, float* out, int blocks, bool with_barrier, Stream stream) {
  DIFFUSE_LAUNCH(planted_neighbour_exchange, static_cast<unsigned>(blocks), 64, 0, stream, in, out, with_barrier);
}
int neighbour_exchange_launch_line() { return kExchangeLine; }

}  // namespace diffuse::kernels::DIFFUSE_DEVICE_NS::planted
