// The CUDA execution context every op on CUDA tensors uses: one stream per process (docs/design.md §4).
// Host code passes current_stream() to the kernel launchers; in a build without CUDA it is null.
// Defined by the device seam (nn/dispatch.h): nn/cuda/context.cpp or nn/no_cuda/backend.cpp.
#pragma once
#include "kernels/common.h"

namespace diffuse {

kernels::Stream current_stream();
// Blocks until all work queued on current_stream() has finished (no-op without CUDA).
void synchronize_device();

}  // namespace diffuse
