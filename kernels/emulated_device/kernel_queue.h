// The bridge from kernel sources to the emulated device: under -DDIFFUSE_CUDA=EMULATED the
// kernels' .cu files are compiled by g++ for the SIMT emulator with DIFFUSE_DEVICE_NS = cuda, and
// DIFFUSE_LAUNCH queues the grid on the launch's stream instead of running it at once. This
// header names no CUDA type (kernel sources never include the toolkit's headers: the emulator
// defines dim3, float4, __nv_bfloat16 itself).
#pragma once
#include <cstddef>
#include <functional>

namespace diffuse::emulated_device {

// True when p points into the emulated device's memory region.
bool is_device_pointer(const void* p);

// Queues a kernel grid on `stream` (a cudaStream_t; nullptr is the legacy default stream).
// `kernel` and `file:line` name it in reports. Throws diffuse::Error naming the launch site for
// an unknown stream or a device that has already failed (as a real launch reports through
// cudaGetLastError).
void enqueue_kernel(void* stream, const char* kernel, const char* file, int line, std::function<void()> run);

// Before a launch of `kernel` with `bytes` of dynamic shared memory: raises the kernel's limit as a
// GPU launch does (kernels/dynamic_smem.h), then refuses the launch, as a real card would, when
// the bytes still exceed it (cudaFuncSetAttribute(MaxDynamicSharedMemorySize); 48 KiB without).
// Throws diffuse::Error naming the kernel and the launch site.
void prepare_dynamic_smem(const void* kernel, size_t bytes, const char* name, const char* file, int line);

// The current device's cudaDevAttrMaxSharedMemoryPerBlockOptin in bytes (the virtual sm_90 card:
// 227 KiB, the SIMT emulator's per-block limit), for launchers that size their shared memory by
// the device, as they ask cudaDeviceGetAttribute under nvcc. Throws diffuse::Error on failure.
int max_dynamic_smem_optin();

}  // namespace diffuse::emulated_device
