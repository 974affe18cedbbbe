// Launchers of the test kernels in launch_bridge_kernels.cu (built only in the emulated-device
// flavour), declared without CUDA types so that test_launch_bridge.cpp can include the toolkit's
// headers: the .cu sees the emulator's dim3 and float4, never NVIDIA's.
#pragma once
#include "kernels/common.h"

namespace diffuse::kernels::cuda::launch_bridge_test {

// out[i] = value for i < n (one block of `block_x` threads, grid-stride), and ++*host_runs once
// per launch that actually runs. host_runs is a host address hidden inside a struct parameter:
// a probe only a test may use (the bridge checks pointer parameters, not struct members).
void fill(float* out, int n, float value, unsigned block_x, int* host_runs, Stream stream);

// The same kernel launched with `blocks` blocks (0: an empty grid) and dynamic shared memory.
void fill_grid(float* out, int n, float value, unsigned blocks, unsigned block_x, size_t smem_bytes,
               int* host_runs, Stream stream);

}  // namespace diffuse::kernels::cuda::launch_bridge_test
