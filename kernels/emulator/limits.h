// The SIMT emulator's hardware limits, in a header of their own so that code which includes the
// real CUDA headers (kernels/emulated_device/) can use them: runtime.h's types (dim3, float4, ...)
// would collide with the toolkit's.
#pragma once
#include <cstddef>

namespace diffuse::emulator {

// The most dynamic shared memory one block may have: an sm_90 card's opt-in limit (227 KiB), the
// card the emulated device reports (its cudaDevAttrMaxSharedMemoryPerBlockOptin is this value).
inline constexpr size_t kMaxDynamicSmemBytes = 227 * 1024;

}  // namespace diffuse::emulator
