// A tiny kernel for test_launch_bridge.cpp, compiled like the library's kernels in the
// emulated-device flavour: DIFFUSE_LAUNCH here goes through emulator::launch_on_device and the
// emulated device's stream queues.
#include "kernels/compat.cuh"
#include "tests/emulated_device/launch_bridge_kernels.h"

namespace diffuse::kernels::DIFFUSE_DEVICE_NS::launch_bridge_test {
namespace {

struct Probe {
  int* host_runs;  // counts launches that ran (thread 0 of block 0 only)
};

__global__ void bridge_fill_kernel(float* out, int n, float value, Probe probe) {
  if (blockIdx.x == 0 && threadIdx.x == 0 && probe.host_runs) ++*probe.host_runs;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) out[i] = value;
}

}  // namespace

void fill(float* out, int n, float value, unsigned block_x, int* host_runs, Stream stream) {
  DIFFUSE_LAUNCH(bridge_fill_kernel, dim3(1), dim3(block_x), 0, stream, out, n, value, Probe{host_runs});
}

void fill_grid(float* out, int n, float value, unsigned blocks, unsigned block_x, size_t smem_bytes,
               int* host_runs, Stream stream) {
  DIFFUSE_LAUNCH(bridge_fill_kernel, dim3(blocks), dim3(block_x), smem_bytes, stream, out, n, value,
                 Probe{host_runs});
}

}  // namespace diffuse::kernels::DIFFUSE_DEVICE_NS::launch_bridge_test
