// Training checkpoints (docs/design.md §9): checkpoints/step-N/ holds `model/` and `ema/` (diffusers
// model directories of the raw and EMA weights), optimizer.safetensors (AdamW moments, in
// diffuse's internal layout) and state.json (step, batcher position, dropout stream position,
// EMA and AdamW step counts). Written under a temporary name and renamed into place.
#pragma once
#include <cstdint>
#include <string>

#include "engine/dataset.h"
#include "nn/optim.h"
#include "nn/unet2d.h"

namespace diffuse {

struct TrainState {
  int64_t step = 0;
  BatchPosition batch_position;
  uint64_t dropout_offset = 0;
  double loss = 0;
};

// "" when the run has no complete checkpoint (temporary directories are ignored).
std::string find_latest_checkpoint(const std::string& run_dir);

// Returns the checkpoint directory written.
std::string save_checkpoint(const std::string& run_dir, const TrainState& state, UNet2D& model, UNet2D& ema_model,
                            optim::EMA& ema, optim::AdamW& adam, const std::string& scheduler_json);

// Restores everything save_checkpoint wrote; model/ema_model/ema/adam must be built from the same config.
TrainState load_checkpoint(const std::string& dir, UNet2D& model, UNet2D& ema_model, optim::EMA& ema, optim::AdamW& adam);

}  // namespace diffuse
