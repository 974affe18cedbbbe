// The op profiler's CUDA clock (nn/op_profile.h) in a build without CUDA: there is none, so a
// Device::cuda profiler is refused with "this build has no CUDA backend".
#include "nn/op_profile.h"

namespace diffuse::op_profile {

std::unique_ptr<EventTimer> make_cuda_event_timer() { return nullptr; }

}  // namespace diffuse::op_profile
