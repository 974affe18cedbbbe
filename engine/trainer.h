// The training loop (docs/design.md §8, §9): draws batches, timesteps and noise from counter-based
// Philox streams keyed by the step number, so a run resumed from a checkpoint continues
// bit-for-bit; optimizes the UNet with AdamW (warmup, then constant or cosine lr), clips the
// global grad norm, keeps an EMA of the weights, writes metrics.jsonl, sample grids and atomic
// checkpoints into the run directory. A NaN/inf loss stops the run with the step named and the
// last good checkpoint kept.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "diffuse/diffuse.h"

namespace diffuse {

// The engine's training options are the public TrainRequest (include/diffuse/diffuse.h): every
// option is defined there once, with its flag, saved JSON key and check in engine/options.cpp.
// A distinct type only so that the engine's train() and the public diffuse::train() overload
// cleanly: build one with TrainOptions{request}. A resumed run's request is already merged with
// the run's saved options (options::resume_train_request); `resume_changes` are that merge's lines
// for the options it changed, which train() reports as events and saves in config.json.
struct TrainOptions : TrainRequest {
  std::vector<std::string> resume_changes;
};

// After every step, and after each checkpoint or sample grid ("checkpoint DIR" / "samples FILE").
using TrainProgress = TrainUpdate;

// Called after every step (and for events); return false to stop the run early (a checkpoint of
// the last finished step is still written).
using TrainCallback = std::function<bool(const TrainProgress&)>;

struct TrainResult {
  int64_t first_step = 1, last_step = 0;
  double final_loss = 0;
  std::string last_checkpoint;  // directory, empty if none written
  bool cancelled = false;
};

TrainResult train(const TrainOptions& options, const TrainCallback& callback = nullptr);

// The newest complete checkpoint directory of a run ("" when there is none).
std::string latest_checkpoint(const std::string& run_dir);

}  // namespace diffuse
