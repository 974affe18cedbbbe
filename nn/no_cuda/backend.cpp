// The CUDA side of nn/dispatch.h in a build without CUDA (CMake compiles nn/no_cuda/*.cpp instead
// of nn/cuda/*.cpp): there is no CUDA backend, so backend_for turns every CUDA tensor reaching an
// op into "<op>: this build has no CUDA backend"; no device, no device allocator, a null stream
// and nothing to synchronise.
#include "nn/device_context.h"
#include "nn/dispatch.h"
#include "nn/runtime.h"

namespace diffuse {

bool built_with_cuda() { return false; }
int cuda_device_count() { return 0; }
std::vector<CudaDeviceInfo> cuda_devices() { return {}; }

kernels::Stream current_stream() { return nullptr; }
void synchronize_device() {}

namespace dispatch {

const Backend* cuda_backend() { return nullptr; }
Allocator* cuda_device_allocator_if_available() { return nullptr; }
void set_cuda_conv_search(bool) {}
bool cuda_conv_search_heuristic() { return false; }
void append_cuda_build_info(std::vector<std::pair<std::string, std::string>>&) {}

}  // namespace dispatch

}  // namespace diffuse
