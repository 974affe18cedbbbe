// See device_context.h. Without CUDA the stream is null and synchronisation does nothing; the
// CUDA build's definitions live in nn/cuda/context.cpp.
#include "nn/device_context.h"

#if !DIFFUSE_WITH_CUDA
namespace diffuse {
kernels::Stream current_stream() { return nullptr; }
void synchronize_device() {}
}  // namespace diffuse
#endif
