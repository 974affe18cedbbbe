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

#include "nn/allocator.h"

namespace diffuse {

struct TrainOptions {
  std::string data = "fashion-mnist";  // a dataset path or name (engine/dataset.h)
  std::string out;                     // the run directory
  std::string config = "tiny";         // a named UNet config or a config.json path
  int64_t steps = 1000;
  int64_t batch = 32;
  double lr = 1e-4;
  int64_t warmup = 0;                  // linear warmup steps
  std::string lr_schedule = "constant";  // constant | cosine (after warmup)
  double weight_decay = 0.0;
  double grad_clip = 1.0;              // max global grad norm; 0 disables clipping
  double ema_decay = 0.9999;           // the EMA's ceiling (diffusers' ema_max_decay)
  double ema_inv_gamma = 1.0;
  double ema_power = 0.75;
  std::string prediction = "epsilon";  // epsilon | v_prediction | sample
  std::string beta_schedule = "linear";
  int64_t num_train_timesteps = 1000;
  double snr_gamma = 0.0;              // min-SNR-γ weighting; 0 = off
  int64_t classes = 0;                 // >0: class-conditional with classes + 1 embeddings (last = null)
  double p_uncond = 0.1;               // label dropout probability for classifier-free guidance
  bool random_flip = false;
  int64_t sample_every = 0;            // steps between sample grids; 0 = never
  int64_t sample_count = 16;
  int64_t checkpoint_every = 0;        // steps between checkpoints; 0 = only at the end
  int64_t log_every = 10;
  int64_t max_images = 0;              // use only the first N dataset images (0 = all)
  bool resume = false;
  Device device = Device::cpu;
  std::string precision = "fp32";      // fp32 | bf16 (CUDA only)
  uint64_t seed = 0;
};

struct TrainProgress {
  int64_t step = 0;  // 1-based, the step just finished
  int64_t total = 0;
  double loss = 0, lr = 0, grad_norm = 0, images_per_second = 0, seconds = 0;
  std::string event;  // non-empty for "checkpoint <path>" / "samples <path>" notices
};

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
