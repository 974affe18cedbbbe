// The bridge from kernel sources to the emulated device: under -DDIFFUSE_CUDA=EMULATED the
// kernels' .cu files are compiled by g++ for the SIMT emulator with DIFFUSE_DEVICE_NS = cuda, and
// DIFFUSE_LAUNCH queues the grid on the launch's stream instead of running it at once. This
// header names no CUDA type (kernel sources never include the toolkit's headers: the emulator
// defines dim3, float4, __nv_bfloat16 itself).
#pragma once
#include <functional>

namespace diffuse::emulated_device {

// True when p points into the emulated device's memory region.
bool is_device_pointer(const void* p);

// Queues a kernel grid on `stream` (a cudaStream_t; nullptr is the legacy default stream).
// `kernel` and `file:line` name it in reports. Throws diffuse::Error naming the launch site for
// an unknown stream or a device that has already failed (as a real launch reports through
// cudaGetLastError).
void enqueue_kernel(void* stream, const char* kernel, const char* file, int line, std::function<void()> run);

// The current device's cudaDevAttrMaxSharedMemoryPerBlockOptin in bytes (the virtual sm_90 card:
// 227 KiB, the SIMT emulator's per-block limit), for launchers that size their shared memory by
// the device, as they ask cudaDeviceGetAttribute under nvcc. Throws diffuse::Error on failure.
int max_dynamic_smem_optin();

}  // namespace diffuse::emulated_device
