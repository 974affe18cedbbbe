// Training checkpoints (docs/design.md §9): checkpoints/step-N/ holds `model/` and `ema/` (diffusers
// model directories of the raw and EMA weights), optimizer.safetensors (AdamW moments, in
// diffuse's internal layout) and state.json (step, batcher position, dropout stream position,
// EMA and AdamW step counts). Written under a temporary name and renamed into place; the
// temporaries a killed run leaves behind are removed by the next run (remove_stale_temporaries).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

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

// "" when the run has no complete checkpoint (temporary directories are ignored); its step (the
// N of step-N) into *step when given and one is found.
std::string find_latest_checkpoint(const std::string& run_dir, int64_t* step = nullptr);

// What a path names: a checkpoint (state.json beside ema/ or model/), a run directory
// (checkpoints/ or metrics.jsonl), or neither.
bool is_checkpoint_dir(const std::string& dir);
bool is_run_dir(const std::string& dir);
// A checkpoint's model for sampling: ema/, or model/ when a copy lacks ema/.
std::string checkpoint_model_dir(const std::string& checkpoint);
// The model directory a path stands for wherever a model is loaded (`sample --model`, `forward
// --model`, Model::load): a checkpoint's checkpoint_model_dir, a run's latest complete checkpoint's
// (ErrorKind::bad_input naming the run when it has none yet), else the path itself.
std::string resolve_model_dir(const std::string& path);

// Crash leftovers of processes that are gone: removes RUN/checkpoints/step-<digits>.tmp-<pid>/
// directories (a checkpoint being written) and RUN/, RUN/samples/ files <name>.tmp-<pid>-<digits>
// (nn/atomic_file.h's temporaries) whose <pid> no longer exists (kill(pid, 0) fails with ESRCH).
// Nothing else is touched: not other names, not a live process's temporaries (another run may be
// writing), not a pid that cannot be checked. Returns the paths removed, for the log. Called by
// train() at start and at resume.
std::vector<std::string> remove_stale_temporaries(const std::string& run_dir);

// Returns the checkpoint directory written. A non-empty `ema_variant` ("fp16", "bf16") also writes
// ema/ as that weights variant (engine/model_dir.h save_weights_variant; --save-dtype).
std::string save_checkpoint(const std::string& run_dir, const TrainState& state, UNet2D& model, UNet2D& ema_model,
                            optim::EMA& ema, optim::AdamW& adam, const std::string& scheduler_json,
                            const std::string& ema_variant = "");

// Restores everything save_checkpoint wrote; model/ema_model/ema/adam must be built from the same config.
TrainState load_checkpoint(const std::string& dir, UNet2D& model, UNet2D& ema_model, optim::EMA& ema, optim::AdamW& adam);

}  // namespace diffuse
