// `diffuse bench train|sample --profile` (docs/performance.md "Reading a profile"): after the timed
// steps, a few more steps run eagerly with the op profiler (nn/op_profile.h) on, and the per-op
// table is printed and returned as JSON. Eager on purpose: a replayed CUDA graph makes no seam
// calls, so it cannot be split by op.
#pragma once
#include <cstdint>
#include <iosfwd>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/dataset.h"
#include "engine/train_step.h"
#include "nn/collective.h"
#include "nn/op_profile.h"
#include "nn/unet2d.h"

namespace diffuse::bench {

// How many rows of the printed table (the JSON keeps every op).
constexpr size_t kProfileTableRows = 25;

nlohmann::json profile_json(const op_profile::Profile& p);

// Profiles `steps` eager training steps numbered from first_step. They run on `timed` (its CUDA
// graphs switched off from here on) unless it already replays a graph: then on a fresh TrainStep of
// cfg and timed's options (and communicator), after two unprofiled eager steps that bring the
// allocator to its steady state. A step the event pool was too small for is run again.
nlohmann::json profile_train_steps(TrainStep& timed, const UNet2DConfig& cfg, collective::Communicator* comm,
                                   const Batch& batch, int64_t first_step, int64_t steps, std::ostream& out);

// Profiles `steps` steps of `sampler` (after one unprofiled first step) on x_T, eagerly, with the
// tensor-timestep UNet denoiser the benchmark times (CUDA graphs off); bf16 runs the UNet under autocast.
nlohmann::json profile_sample_steps(UNet2D& model, const std::string& sampler, const Tensor& x_T, uint64_t seed,
                                    bool bf16, int64_t steps, std::ostream& out);

}  // namespace diffuse::bench
