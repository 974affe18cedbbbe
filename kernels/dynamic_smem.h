// Dynamic shared memory a CUDA kernel may take, raised before each launch that asks for some
// (kernels/compat.cuh's launchers on a GPU and on the emulated device). Without
// cudaFuncSetAttribute(MaxDynamicSharedMemorySize) a block's static and dynamic shared memory
// together get 48 KiB, so a launch whose dynamic bytes alone fit (47 KiB beside 2 KiB of static
// arrays) still fails; with it, the dynamic bytes get the value set. So every kernel that asks for
// dynamic shared memory has its limit set to at least what it asks for, whatever the size: once
// per (kernel, device) and again only when a launch asks for more, not one runtime call per launch.
// Host-only; CUDA and emulated-device builds (both have the CUDA runtime's declarations).
#pragma once
#include <cstddef>

namespace diffuse::kernels {

void reserve_dynamic_smem(const void* kernel, size_t bytes, const char* file, int line);

}  // namespace diffuse::kernels
