// One training step, named (docs/design.md §8): a batch is noised at Philox-drawn timesteps
// (q_sample), the UNet predicts the target, the (min-SNR weighted) MSE is backpropagated, the
// global gradient norm is clipped, and AdamW updates the weights fused with the EMA update. The
// trainer's loop (engine/trainer.cpp), `diffuse bench train` and the tests all run this one
// TrainStep, so what is timed and tested is what training does. Every random draw of step s
// (timesteps, noise, label dropout) is a Philox counter derived from s, and dropout's stream
// position lives in the model, so a step is a pure function of the weights, the optimizer state,
// the step number and the batch: what makes a resumed run continue bit-for-bit.
//
// Every per-step value of a step lives in memory of the model's device (docs/design.md §4): the
// step number (the draws and the noise are made there from it, kernels/noise.h), the lr, the
// optimizer's step counts, the loss, the grad norm and the skip decision (kernels/optim.h's gated
// AdamW + EMA). So a step queues its work without waiting for the host, and on CUDA it is captured
// once as a CUDA graph (after two eager steps) and replayed. Its loss, norm and skip flag land in
// a status ring on the device, read back by collect() for any number of steps at once.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/dataset.h"
#include "engine/noise_schedule.h"
#include "engine/trainer.h"
#include "nn/collective.h"
#include "nn/device_graph.h"
#include "nn/device_transfer.h"
#include "nn/optim.h"
#include "nn/unet2d.h"

namespace diffuse {

struct TrainStepResult {
  int64_t step = 0;
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
  // options.classes > 0): enqueue() then collect(). after_phase, when given, is called once the
  // forward and loss (a host read of the loss, so the device has finished them) and then the
  // backward have run; such a step always runs eagerly.
  TrainStepResult run(int64_t step, const Batch& batch, const PhaseFn& after_phase = {});

  // Queues step `step` on the device: the host batch, the step number, the lr and dropout's
  // position are written into a pinned staging slot and copied from it into the step's input
  // tensors on the stream (no host wait), then the step runs eagerly or as a replay of its CUDA
  // graph. Nothing is read back. At most kMaxPending steps may wait for collect().
  void enqueue(int64_t step, const Batch& batch);
  // The results of the steps queued since the last collect(), in order: one async copy of the
  // device's status rows and step counts into pinned memory and one wait for it (the counts are
  // copied into adam() and ema(), whose host counts then match). Valid until the next collect()
  // (a buffer kept across steps: a steady-state step allocates nothing).
  const std::vector<TrainStepResult>& collect();
  int64_t pending() const { return static_cast<int64_t>(pending_.size()); }
  static constexpr int64_t kMaxPending = 64;
  // Staging slots: a slot whose copies have not run yet is not rewritten; the next step takes
  // another (the ring grows to the steps in flight between collects, up to this many, then a
  // step waits for the oldest slot's copies).
  static constexpr size_t kMaxStagingSlots = 64;
  size_t staging_slots() const { return staging_.size(); }

  // CUDA graphs (docs/design.md §4): on (the default) a CUDA step is captured after kWarmupSteps
  // eager steps and replayed; a data-parallel step too, its gradient all-reduce's NCCL calls
  // inside the graph (every rank captures the same step and replays only if every rank's
  // capture succeeded). A capture that fails, or a run that cannot be one graph (an NCCL too old
  // to be captured), runs eagerly and calls on_fallback once with the reason. Dropout's
  // masks start at a position read from device memory, so replays draw each step's own masks
  // and the host position (model().dropout_offset(), saved in checkpoints) advances per replay.
  void set_cuda_graphs(bool on, std::function<void(const std::string&)> on_fallback = {});
  static constexpr int64_t kWarmupSteps = 2;
  bool replaying() const { return graph_.ok(); }  // whether steps now replay a captured graph
  // Tests: called inside every host run of the step's body (eager steps and the capture), after
  // the loss, to count those runs or plant a call a capture refuses.
  void set_inside_step_for_test(std::function<void()> f) { inside_step_for_test_ = std::move(f); }

  // The learning rate of 1-based step `step`: linear warmup, then constant or cosine.
  double lr_at(int64_t step) const;

  // Data-parallel training (docs/distributed.md): with a communicator of K ranks, run() takes
  // `batch` as rank r's rows [r·B, (r+1)·B) of a global batch of K·B and draws its timesteps,
  // noise and label dropouts as those global rows (so K ranks at B equal one process at K·B up
  // to summation order), logs the global loss, and averages the gradients over the ranks before
  // clipping, in buckets reduced while backward runs (collective::GradientSync). collect() waits
  // for the device step by step, each within the communicator's deadline (a replay holds the
  // all-reduce), and averages the group's losses in one host collective. Null (the
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
  void write_inputs(int64_t step, const Batch& batch);  // the batch, step number, lr, dropout position
  struct StagingSlot {
    PinnedBuffer host;   // step, lr, dropout position, labels, images
    DeviceEvent copied;  // after the copies out of `host`
  };
  StagingSlot& free_staging_slot(size_t bytes);
  void run_body(const PhaseFn& after_phase);            // the step's device work (what a graph captures)
  std::string why_not_graph() const;                    // "" when the step can be one graph


  TrainOptions options_;
  NoiseSchedule schedule_;
  std::unique_ptr<UNet2D> model_;  // layers keep pointers into the model: never moved
  std::vector<Tensor> params_;
  optim::AdamW adam_;
  optim::EMA ema_;
  collective::Communicator* communicator_ = nullptr;
  std::unique_ptr<collective::GradientSync> grad_sync_;  // created at the first distributed step

  // Device memory the step reads and writes (on options.device; made at the first step).
  Tensor tables_;            // f32 [3, T]: √ᾱ, √(1−ᾱ), min-SNR weight per timestep
  Tensor images_, labels_;   // this step's batch
  Tensor step_;              // i64 [1]: the step number
  Tensor dropout_base_;      // i64 [1]: dropout's position at the step's start (UNet2D::set_dropout_base)
  std::vector<StagingSlot> staging_;  // pinned sources of the per-step uploads
  size_t next_slot_ = 0;
  PinnedBuffer status_host_;  // the ring and the state words, read back by collect()
  DeviceEvent status_copied_;
  uint64_t dropout_per_step_ = 0;  // how far a step moves dropout's position (measured on the host runs)
  optim::DeviceStep dstep_;  // lr + step counts, Σg², loss
  Tensor ring_;              // f64 [kMaxPending, 4]: the status rows
  Tensor seed_grad_;         // the backward's seed (ones like the loss)
  std::vector<Tensor> grads_;  // the grads the optimizer reads: fixed addresses for its table and a graph
  int64_t step_now_ = 0;        // the step being queued (the host's copy, for messages)
  bool state_loaded_ = false;  // whether dstep_.state holds the host's step counts
  std::vector<int64_t> pending_;  // steps queued since the last collect() (capacity kMaxPending)
  std::vector<TrainStepResult> collected_;
  std::vector<double> losses_;    // collect()'s losses of the pending steps (capacity kMaxPending)
  // Data-parallel CUDA runs: a mark after each queued step (at its status row's index), for
  // collect()'s per-step waits within the communicator's deadline.
  std::array<DeviceEvent, kMaxPending> step_done_;
  int64_t eager_steps_ = 0;      // steps run eagerly towards the graph's warm-up

  bool graphs_ = true;
  bool graph_refused_ = false;
  std::function<void(const std::string&)> on_graph_fallback_;
  std::function<void()> inside_step_for_test_;
  DeviceGraph graph_;
};

}  // namespace diffuse
