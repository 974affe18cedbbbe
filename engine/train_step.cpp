// See train_step.h. The Philox layout of step s: timesteps and label dropout read row i of block
// s·blocks_for(B) in streams kTimesteps and kLabelDrop; the noise of element k of the flat batch
// is element k from block s·blocks_for(B·H·W·C) of stream kNoise. Under data parallelism B is
// the global batch and i, k count from this rank's first global row (docs/distributed.md).
#include "engine/train_step.h"

#include <algorithm>
#include <cmath>

#include "engine/q_sample.h"
#include "kernels/philox.h"
#include "nn/autograd.h"
#include "nn/layers.h"
#include "nn/ops.h"

namespace diffuse {

namespace {

ScheduleOptions schedule_options(const TrainOptions& o) {
  ScheduleOptions s;
  s.num_train_timesteps = o.num_train_timesteps;
  s.beta_schedule = parse_beta_schedule(o.beta_schedule, "--beta-schedule");
  s.prediction_type = parse_prediction_type(o.prediction, "--prediction");
  return s;
}

std::unique_ptr<UNet2D> training_model(const UNet2DConfig& cfg, const TrainOptions& o) {
  auto model = std::make_unique<UNet2D>(cfg, o.seed);
  model->to(o.device);
  model->set_requires_grad(true);
  model->set_training(true);
  model->set_dropout_state(o.seed, 0);
  return model;
}

optim::EMAOptions ema_options(const TrainOptions& o) {
  optim::EMAOptions e;
  e.decay = o.ema_decay;
  e.use_ema_warmup = true;
  e.inv_gamma = o.ema_inv_gamma;
  e.power = o.ema_power;
  return e;
}

}  // namespace

UNet2DConfig training_unet_config(const TrainOptions& o) {
  UNet2DConfig cfg = resolve_unet_config(o.config);
  if (o.classes > 0) cfg.num_class_embeds = static_cast<int>(o.classes + 1);
  cfg.num_train_timesteps = static_cast<int>(o.num_train_timesteps);
  return cfg;
}

TrainStep::TrainStep(const UNet2DConfig& cfg, const TrainOptions& options)
    : options_(options),
      schedule_(schedule_options(options)),
      model_(training_model(cfg, options)),
      params_(model_->parameters()),
      adam_(params_, {options.lr, 0.9, 0.999, 1e-8, options.weight_decay}),
      ema_(params_, ema_options(options)) {}

double TrainStep::lr_at(int64_t step) const {
  const TrainOptions& o = options_;
  const int64_t step0 = step - 1;  // counts from 0, like torch's LambdaLR
  if (step0 < o.warmup) return o.lr * static_cast<double>(step0) / static_cast<double>(std::max<int64_t>(1, o.warmup));
  if (o.lr_schedule == "cosine") {
    double progress = static_cast<double>(step0 - o.warmup) / static_cast<double>(std::max<int64_t>(1, o.steps - o.warmup));
    return o.lr * 0.5 * (1.0 + std::cos(M_PI * progress));
  }
  return o.lr;
}

TrainStepResult TrainStep::run(int64_t step, const Batch& batch, const PhaseFn& after_phase) {
  const TrainOptions& o = options_;
  if (!batch.images.defined() || batch.images.ndim() != 4)
    throw Error("train step: expected a batch of images [B, H, W, C], got " + batch.images.describe());
  const int64_t B = batch.images.dim(0);
  const int64_t T = schedule_.num_train_timesteps();
  const int64_t per_image = batch.images.numel() / std::max<int64_t>(1, B);
  // This rank's rows of the global batch (docs/distributed.md): every draw is by global row.
  const int64_t ranks = communicator_ ? communicator_->size() : 1;
  const int64_t first_row = communicator_ ? communicator_->rank() * B : 0;
  const int64_t global_rows = ranks * B;
  if ((first_row * per_image) % 4 != 0)
    throw Error("data-parallel training needs --batch x image size (" + std::to_string(B) + " x " +
                std::to_string(per_image) + ") to be a multiple of 4: each rank's noise starts on a Philox block");

  const uint64_t row_block = static_cast<uint64_t>(step) * philox::blocks_for(static_cast<uint64_t>(global_rows));
  // Every per-sample value goes straight into a host tensor: the step allocates nothing but
  // tensors, which the caches serve once a step has run (docs/design.md §4).
  Tensor t_tensor = Tensor::empty({B}, DType::i64);
  int64_t* timesteps = t_tensor.data<int64_t>();
  for (int64_t i = 0; i < B; ++i) {
    float u = philox::uniform_at(o.seed, philox::kTimesteps, row_block, static_cast<uint64_t>(first_row + i));
    timesteps[i] = std::min<int64_t>(static_cast<int64_t>(u * static_cast<float>(T)), T - 1);
  }
  const uint64_t noise_block = static_cast<uint64_t>(step) * philox::blocks_for(static_cast<uint64_t>(global_rows * per_image)) +
                               static_cast<uint64_t>(first_row * per_image / 4);
  QSampleResult q = q_sample(batch.images.to(o.device), schedule_, {timesteps, static_cast<size_t>(B)}, o.seed,
                             noise_block);

  Tensor labels;
  if (o.classes > 0) {
    if (!batch.labels.defined()) throw Error("train step: --classes " + std::to_string(o.classes) + " needs labels");
    labels = batch.labels.clone();
    int64_t* l = labels.data<int64_t>();
    const int64_t null_class = o.classes;  // the index of the unconditional embedding
    for (int64_t i = 0; i < B; ++i)
      if (philox::uniform_at(o.seed, philox::kLabelDrop, row_block, static_cast<uint64_t>(first_row + i)) < o.p_uncond)
        l[i] = null_class;
  }
  Tensor weights;
  if (o.snr_gamma > 0) {
    Tensor host_weights = Tensor::empty({B});
    for (int64_t i = 0; i < B; ++i)
      host_weights.data<float>()[i] = static_cast<float>(schedule_.min_snr_weight(timesteps[i], o.snr_gamma));
    weights = host_weights.to(o.device);
  }

  TrainStepResult r;
  Tensor prediction;
  {
    // --precision bf16: the UNet's GEMM-shaped layers in bf16 (nn/layers.h); the output is f32,
    // so the loss, its backward into the model and every optimizer input stay f32.
    const AutocastBf16 autocast(o.precision == "bf16");
    prediction = model_->forward(q.x_t, t_tensor, labels);
  }
  Tensor loss = ops::mse_loss(prediction, q.target, weights);
  r.loss = loss.item();
  if (communicator_ && communicator_->distributed())  // the global batch's loss, so every rank decides alike
    r.loss = communicator_->allreduce_mean(r.loss, "the loss of step " + std::to_string(step));
  if (!std::isfinite(r.loss)) {
    clear_tape();
    r.non_finite = "loss is " + std::to_string(r.loss);
    return r;
  }
  if (after_phase) after_phase(Phase::forward_loss);
  if (communicator_ && communicator_->distributed()) {
    // The global batch's gradient, the mean of the shards': buckets of gradients are reduced as
    // backward finishes them, the rest (and the wait) after it (nn/collective.h, GradientSync).
    if (!grad_sync_) grad_sync_ = std::make_unique<collective::GradientSync>(*communicator_, params_);
    grad_sync_->begin("the gradients of step " + std::to_string(step));
    run_backward(loss, Tensor::ones(loss.shape(), loss.dtype(), loss.device()), grad_sync_.get());
    grad_sync_->finish();
  } else {
    loss.backward();
  }
  if (after_phase) after_phase(Phase::backward);
  r.grad_norm = o.grad_clip > 0 ? optim::clip_grad_norm(params_, o.grad_clip) : optim::grad_norm(params_);
  if (!std::isfinite(r.grad_norm)) {
    r.non_finite = "gradient norm is " + std::to_string(r.grad_norm);
    adam_.zero_grad();  // a bf16 run skips the step and goes on: the next backward starts from zero
    return r;
  }
  r.lr = lr_at(step);
  adam_.step(r.lr, &ema_);
  adam_.zero_grad();
  return r;
}

}  // namespace diffuse
