// One training step, named (docs/design.md §8): a batch is noised at Philox-drawn timesteps
// (q_sample), the UNet predicts the target, the (min-SNR weighted) MSE is backpropagated, the
// global gradient norm is clipped, and AdamW updates the weights fused with the EMA update. The
// trainer's loop (engine/trainer.cpp), `diffuse bench train` and the tests all run this one
// TrainStep, so what is timed and tested is what training does. Every random draw of step s
// (timesteps, noise, label dropout) is a Philox counter derived from s, and dropout's stream
// position lives in the model, so a step is a pure function of the weights, the optimizer state,
// the step number and the batch: what makes a resumed run continue bit-for-bit.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/dataset.h"
#include "engine/noise_schedule.h"
#include "engine/trainer.h"
#include "nn/collective.h"
#include "nn/optim.h"
#include "nn/unet2d.h"

namespace diffuse {

struct TrainStepResult {
  double loss = 0;
  double grad_norm = 0;  // the global norm before clipping
  double lr = 0;         // the learning rate the update used
  // Non-empty ("loss is nan", "gradient norm is inf") when the step stopped before the update:
  // the weights, moments and EMA are those of the previous step.
  std::string non_finite;
};

// The UNet the options train: the named config or config.json, with options.classes + 1 class
// embeddings (the last one the null class) when class-conditional, and the options' timestep count.
UNet2DConfig training_unet_config(const TrainOptions& options);

class TrainStep {
 public:
  // Where a step is; the benchmark times each part.
  enum class Phase { forward_loss, backward };
  using PhaseFn = std::function<void(Phase)>;

  // A fresh UNet from cfg (initial weights from options.seed) on options.device, in training mode
  // with dropout's stream at position 0; AdamW and the EMA (warmup form) over its parameters; the
  // noise schedule of options' beta schedule, prediction type and timestep count. Options are
  // expected to be validated already (the trainer's option checks).
  TrainStep(const UNet2DConfig& cfg, const TrainOptions& options);

  // Runs 1-based step `step` on `batch` (images [B, H, W, C] f32 on any device; labels [B] when
  // options.classes > 0). after_phase, when given, is called once the forward and loss (a host
  // read of the loss, so the device has finished them) and then the backward have run.
  TrainStepResult run(int64_t step, const Batch& batch, const PhaseFn& after_phase = {});

  // The learning rate of 1-based step `step`: linear warmup, then constant or cosine.
  double lr_at(int64_t step) const;

  // Data-parallel training (docs/distributed.md): with a communicator of K ranks, run() takes
  // `batch` as rank r's rows [r·B, (r+1)·B) of a global batch of K·B and draws its timesteps,
  // noise and label dropouts as those global rows (so K ranks at B equal one process at K·B up
  // to summation order), logs the global loss, and averages the gradients over the ranks before
  // clipping, in buckets reduced while backward runs (collective::GradientSync). Null (the
  // default) or one rank: the batch is the whole batch. Not owned.
  void set_communicator(collective::Communicator* communicator) {
    communicator_ = communicator;
    grad_sync_.reset();
  }
  // The gradient all-reduce's counts and times (null before the first distributed step).
  const collective::GradientSync* gradient_sync() const { return grad_sync_.get(); }

  UNet2D& model() { return *model_; }
  const std::vector<Tensor>& parameters() const { return params_; }
  optim::AdamW& adam() { return adam_; }
  optim::EMA& ema() { return ema_; }
  const NoiseSchedule& schedule() const { return schedule_; }
  const TrainOptions& options() const { return options_; }

 private:
  TrainOptions options_;
  NoiseSchedule schedule_;
  std::unique_ptr<UNet2D> model_;  // layers keep pointers into the model: never moved
  std::vector<Tensor> params_;
  optim::AdamW adam_;
  optim::EMA ema_;
  collective::Communicator* communicator_ = nullptr;
  std::unique_ptr<collective::GradientSync> grad_sync_;  // created at the first distributed step
};

}  // namespace diffuse
