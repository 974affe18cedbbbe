// See train_step.h. The Philox layout of step s: timesteps and label dropout read row i of block
// s·blocks_for(B) in streams kTimesteps and kLabelDrop; the noise of element k of the flat batch
// is element k from block s·blocks_for(B·H·W·C) of stream kNoise. Under data parallelism B is
// the global batch and i, k count from this rank's first global row (docs/distributed.md). The
// draws are made on the step's device from the step number in device memory (ops::train_draws,
// ops::q_sample with a step tensor), so eager steps and a replayed graph make the same ones.
#include "engine/train_step.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/q_sample.h"
#include "kernels/noise.h"
#include "kernels/optim.h"
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
      ema_(params_, ema_options(options)) {
  pending_.reserve(kMaxPending);
  collected_.reserve(kMaxPending);
  losses_.reserve(kMaxPending);
}

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

void TrainStep::set_cuda_graphs(bool on, std::function<void(const std::string&)> on_fallback) {
  graphs_ = on;
  on_graph_fallback_ = std::move(on_fallback);
}

TrainStep::StagingSlot& TrainStep::free_staging_slot(size_t bytes) {
  if (!staging_.empty() && staging_[0].host.bytes() != bytes) {  // a new batch shape: new slots
    for (StagingSlot& slot : staging_) slot.copied.wait();
    staging_.clear();
    next_slot_ = 0;
  }
  for (size_t k = 0; k < staging_.size(); ++k) {
    const size_t at = (next_slot_ + k) % staging_.size();
    if (staging_[at].copied.done()) {
      next_slot_ = at + 1;
      return staging_[at];
    }
  }
  if (staging_.size() < kMaxStagingSlots) {  // every slot still feeds queued copies: one more
    staging_.push_back(StagingSlot{PinnedBuffer(bytes, options_.device), DeviceEvent()});
    next_slot_ = staging_.size();
    return staging_.back();
  }
  StagingSlot& oldest = staging_[next_slot_ % staging_.size()];
  oldest.copied.wait();
  next_slot_ = next_slot_ % staging_.size() + 1;
  return oldest;
}

void TrainStep::write_inputs(int64_t step, const Batch& batch) {
  const TrainOptions& o = options_;
  if (!batch.images.defined() || batch.images.ndim() != 4)
    throw Error("train step: expected a batch of images [B, H, W, C], got " + batch.images.describe());
  if (o.classes > 0 && !batch.labels.defined())
    throw Error("train step: --classes " + std::to_string(o.classes) + " needs labels");
  const Device device = o.device;
  if (!tables_.defined()) {  // the first step: the device memory every step reads and writes
    const int64_t T = schedule_.num_train_timesteps();
    Tensor tables = Tensor::empty({3, T});
    float* tab = tables.data<float>();
    for (int64_t t = 0; t < T; ++t) {  // the host's rounding of each value, so the draws are its bits
      tab[t] = static_cast<float>(schedule_.sqrt_alpha_bar(t));
      tab[T + t] = static_cast<float>(schedule_.sqrt_one_minus_alpha_bar(t));
      tab[2 * T + t] = o.snr_gamma > 0 ? static_cast<float>(schedule_.min_snr_weight(t, o.snr_gamma)) : 1.0f;
    }
    tables_ = tables.to(device);
    step_ = Tensor::empty({1}, DType::i64, device);
    dropout_base_ = Tensor::empty({1}, DType::i64, device);
    model_->set_dropout_base(dropout_base_);
    dstep_.state = Tensor::zeros({kernels::kStateWords}, DType::f64, device);
    dstep_.sum_sq = Tensor::zeros({1}, DType::f64, device);
    dstep_.max_norm = o.grad_clip > 0 ? o.grad_clip : 0.0;
    ring_ = Tensor::zeros({kMaxPending, kernels::kStatusWords}, DType::f64, device);
  }
  if (!images_.defined() || images_.shape() != batch.images.shape()) {  // static shapes: a new one is a new graph
    images_ = Tensor::empty(batch.images.shape(), DType::f32, device);
    labels_ = o.classes > 0 ? Tensor::empty({batch.images.dim(0)}, DType::i64, device) : Tensor();
    graph_ = DeviceGraph();
    eager_steps_ = 0;
  }
  if (labels_.defined() && batch.labels.numel() != images_.dim(0))
    throw Error("train step: " + std::to_string(batch.labels.numel()) + " labels for a batch of " +
                std::to_string(images_.dim(0)));
  const double lr = lr_at(step);
  if (!state_loaded_) {  // the optimizer's counts as the host has them (fresh, or a checkpoint's)
    const Tensor state = Tensor::from({lr, static_cast<double>(adam_.step_count()),
                                       static_cast<double>(ema_.optimization_step())},
                                      {kernels::kStateWords}, DType::f64);
    dstep_.state.copy_from(state);
    state_loaded_ = true;
  }
  step_now_ = step;
  // One pinned slot per step: [step, lr, dropout position, labels (i64), images (f32)], each
  // copied into its device tensor on the stream; the slot is rewritten only after those copies ran.
  const int64_t B = images_.dim(0);
  const size_t labels_at = 3 * sizeof(int64_t), images_at = labels_at + (labels_.defined() ? B : 0) * sizeof(int64_t);
  StagingSlot& slot = free_staging_slot(images_at + images_.nbytes());
  slot.host.as<int64_t>()[0] = step;
  slot.host.as<double>()[1] = lr;
  slot.host.as<int64_t>()[2] = static_cast<int64_t>(model_->dropout_offset());
  copy_to_device_async(step_, slot.host.as<int64_t>());
  copy_to_device_async(dstep_.state.slice0(kernels::kStateLr, kernels::kStateLr + 1), slot.host.as<double>(8));
  copy_to_device_async(dropout_base_, slot.host.as<int64_t>(16));
  if (labels_.defined()) {
    if (batch.labels.device() == Device::cpu) {
      const Tensor labels = batch.labels.to(DType::i64);
      std::memcpy(slot.host.as<int64_t>(labels_at), labels.data<int64_t>(), labels_.nbytes());
      copy_to_device_async(labels_, slot.host.as<int64_t>(labels_at));
    } else {
      labels_.copy_from(batch.labels.to(DType::i64).view({B}));
    }
  }
  if (batch.images.device() == Device::cpu) {
    const Tensor images = batch.images.to(DType::f32);
    std::memcpy(slot.host.as<float>(images_at), images.data<float>(), images_.nbytes());
    copy_to_device_async(images_, slot.host.as<float>(images_at));
  } else {
    images_.copy_from(batch.images.to(DType::f32));
  }
  slot.copied.record(device);
}

void TrainStep::run_body(const PhaseFn& after_phase) {
  const TrainOptions& o = options_;
  const int64_t step = step_now_;  // for messages only: the device reads step_
  const int64_t B = images_.dim(0);
  const int64_t per_image = images_.numel() / std::max<int64_t>(1, B);
  // This rank's rows of the global batch (docs/distributed.md): every draw is by global row.
  const int64_t ranks = communicator_ ? communicator_->size() : 1;
  const int64_t first_row = communicator_ ? communicator_->rank() * B : 0;
  const int64_t global_rows = ranks * B;
  if ((first_row * per_image) % 4 != 0)
    throw Error("data-parallel training needs --batch x image size (" + std::to_string(B) + " x " +
                std::to_string(per_image) + ") to be a multiple of 4: each rank's noise starts on a Philox block");

  kernels::TrainDrawDesc dd;
  dd.batch = B;
  dd.first_row = first_row;
  dd.global_rows = global_rows;
  dd.seed = o.seed;
  dd.num_timesteps = schedule_.num_train_timesteps();
  dd.p_uncond = o.p_uncond;
  dd.null_class = o.classes;  // the index of the unconditional embedding
  dd.weights = o.snr_gamma > 0;
  const ops::TrainDraws draws = ops::train_draws(dd, step_, tables_, labels_);
  const Tensor coefs = draws.coefs;
  const uint64_t step_blocks = philox::blocks_for(static_cast<uint64_t>(global_rows * per_image));
  const QSampleResult q =
      q_sample(images_, coefs.slice0(0, 1).view({B}), coefs.slice0(1, 2).view({B}),
               schedule_.options().prediction_type, o.seed, static_cast<uint64_t>(first_row * per_image / 4), step_,
               step_blocks);
  const Tensor weights = o.snr_gamma > 0 ? coefs.slice0(2, 3).view({B}) : Tensor();

  Tensor prediction;
  {
    // --precision bf16: the UNet's GEMM-shaped layers in bf16 (nn/layers.h); the output is f32,
    // so the loss, its backward into the model and every optimizer input stay f32.
    const AutocastBf16 autocast(o.precision == "bf16");
    prediction = model_->forward(q.x_t, draws.timesteps, draws.labels);
  }
  Tensor loss = ops::mse_loss(prediction, q.target, weights);
  if (inside_step_for_test_) inside_step_for_test_();
  if (after_phase) {
    (void)loss.item();  // the device has finished the forward and the loss
    after_phase(Phase::forward_loss);
  }
  if (!seed_grad_.defined()) seed_grad_ = Tensor::ones(loss.shape(), loss.dtype(), loss.device());
  if (communicator_ && communicator_->distributed()) {
    // The global batch's gradient, the mean of the shards': buckets of gradients are reduced as
    // backward finishes them, the rest (and the wait) after it (nn/collective.h, GradientSync).
    if (!grad_sync_) grad_sync_ = std::make_unique<collective::GradientSync>(*communicator_, params_);
    grad_sync_->begin("the gradients of step " + std::to_string(step));
    run_backward(loss, seed_grad_, grad_sync_.get());
    grad_sync_->finish();
  } else {
    run_backward(loss, seed_grad_);
  }
  if (after_phase) after_phase(Phase::backward);
  // The optimizer reads the grads from buffers kept across steps: its multi-tensor table is then
  // the same every step (uploaded once, nn/cuda/backend_dense.cpp), as a graph needs.
  grads_.resize(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor g = params_[i].grad();
    if (!g.defined()) continue;
    if (!grads_[i].defined()) grads_[i] = Tensor::empty(g.shape(), g.dtype(), g.device());
    grads_[i].copy_from(g);
    params_[i].set_grad(grads_[i]);
  }
  optim::DeviceStep d = dstep_;
  d.loss = loss;
  d.loss_gates = !(communicator_ && communicator_->distributed());  // there the global norm decides alike on every rank
  optim::grad_sum_of_squares(params_, d.sum_sq);
  adam_.step_on_device(d, &ema_);
  optim::record_step(d, step_, ring_);
  adam_.zero_grad();
}

// Data-parallel steps are captured too: the gradient all-reduce's NCCL calls, on the comm stream
// forked off the capturing stream and joined back through events, become nodes of the graph
// (nn/collective.h, GradientSync). What remains refused is an NCCL that cannot be captured.
std::string TrainStep::why_not_graph() const {
  if (communicator_ && communicator_->distributed()) return communicator_->why_not_capturable();
  return "";
}

void TrainStep::enqueue(int64_t step, const Batch& batch) {
  const KeepDeviceTables keep;  // the optimizer's tables are the same every step (kept grads)
  if (static_cast<int64_t>(pending_.size()) >= kMaxPending)
    throw Error("train step: " + std::to_string(kMaxPending) + " steps queued without collect()");
  for (int64_t s : pending_)
    if ((s - 1) % kMaxPending == (step - 1) % kMaxPending)
      throw Error("train step: steps " + std::to_string(s) + " and " + std::to_string(step) +
                  " would share a status row; collect() between them");
  write_inputs(step, batch);
  const uint64_t dropout_before = model_->dropout_offset();
  bool host_ran = false;  // whether the step's body ran on the host (eagerly or captured)
  if (graphs_ && !graph_refused_ && options_.device == Device::cuda && !graph_.ok() && eager_steps_ >= kWarmupSteps) {
    std::string why = why_not_graph();
    if (why.empty()) {
      graph_ = DeviceGraph::capture([&] { run_body({}); });
      if (!graph_.ok()) why = graph_.why();
      // NCCL: whether a collective is captured must be the same on every rank, and a graph holding
      // captured collectives must be launched by every rank of the capture. So the ranks agree
      // (one host collective, after the capture, before any replay) and replay only if every
      // rank captured; otherwise all of them run eagerly, the same collectives in the same order.
      if (communicator_ && communicator_->distributed() &&
          communicator_->allreduce_mean(graph_.ok() ? 0.0 : 1.0,
                                        "the capture of step " + std::to_string(step) + " on every rank") != 0.0 &&
          graph_.ok()) {
        graph_ = DeviceGraph();
        why = "another rank's capture of the step failed, and every rank must replay the same captured collectives";
      }
      host_ran = graph_.ok();
      if (!graph_.ok()) {
        adam_.zero_grad();  // what the capture left on the host: grads, a tape, dropout's position
        clear_tape();
        model_->set_dropout_state(options_.seed, dropout_before);
      }
    }
    if (!graph_.ok()) {
      graph_refused_ = true;
      if (on_graph_fallback_) on_graph_fallback_("cuda graphs: " + why + "; running eagerly");
    }
  }
  if (graph_.ok()) {
    graph_.replay();
  } else {
    run_body({});
    host_ran = true;
    ++eager_steps_;
  }
  if (host_ran)
    dropout_per_step_ = model_->dropout_offset() - dropout_before;
  else  // a replay: the device drew at dropout_base_; the host position moves as an eager step's would
    model_->set_dropout_state(options_.seed, dropout_before + dropout_per_step_);
  pending_.push_back(step);
  // Data-parallel CUDA runs: the mark collect() waits for within the deadline, step by step.
  if (communicator_ && communicator_->distributed() && options_.device == Device::cuda)
    step_done_[(step - 1) % kMaxPending].record(Device::cuda);
}

const std::vector<TrainStepResult>& TrainStep::collect() {
  std::vector<TrainStepResult>& results = collected_;
  results.clear();
  if (pending_.empty()) return results;
  // The ring and the state words in one pinned buffer, copied after the steps and waited for once.
  if (!status_host_.data()) status_host_ = PinnedBuffer(ring_.nbytes() + dstep_.state.nbytes(), options_.device);
  copy_to_host_async(status_host_.data(), ring_);
  copy_to_host_async(status_host_.as<double>(ring_.nbytes()), dstep_.state);
  status_copied_.record(options_.device);
  const bool distributed = communicator_ && communicator_->distributed();
  if (distributed && options_.device == Device::cuda) {
    // A replayed step's graph holds the gradient all-reduce: the host waits for the queued steps
    // one by one, each within the communicator's deadline, so a dead or hung rank ends the job
    // naming it and the step, and a group of healthy steps may take longer than the deadline in
    // all (an eager step already waited in GradientSync::finish, and its wait returns at once).
    for (int64_t step : pending_)
      communicator_->wait_for_device(step_done_[(step - 1) % kMaxPending],
                                     "the all-reduce of the gradients of step " + std::to_string(step));
  }
  status_copied_.wait();
  const double* ring_rows = status_host_.as<double>();
  const double* state = status_host_.as<double>(ring_.nbytes());
  adam_.set_step_count(static_cast<int64_t>(state[kernels::kStateAdamSteps]));
  ema_.set_optimization_step(static_cast<int64_t>(state[kernels::kStateEmaSteps]));
  const auto row_of = [&](int64_t step) { return ring_rows + ((step - 1) % kMaxPending) * kernels::kStatusWords; };
  losses_.clear();
  for (int64_t step : pending_) losses_.push_back(row_of(step)[0]);
  if (distributed) {  // the global batch's losses, so every rank logs and decides alike: one host collective
    const int64_t first = pending_.front(), last = pending_.back();
    communicator_->allreduce_mean(losses_, "the loss of step" + (first == last ? " " + std::to_string(last)
                                                                               : "s " + std::to_string(first) +
                                                                                     " to " + std::to_string(last)));
  }
  for (size_t i = 0; i < pending_.size(); ++i) {
    const double* row = row_of(pending_[i]);
    TrainStepResult r;
    r.step = pending_[i];
    r.loss = losses_[i];
    r.grad_norm = row[1];
    if (row[2] != 0.0) {
      r.non_finite = !std::isfinite(r.loss) ? "loss is " + std::to_string(r.loss)
                                            : "gradient norm is " + std::to_string(r.grad_norm);
    } else {
      r.lr = row[3];
    }
    results.push_back(r);
  }
  pending_.clear();
  return results;
}

TrainStepResult TrainStep::run(int64_t step, const Batch& batch, const PhaseFn& after_phase) {
  if (!after_phase) {
    enqueue(step, batch);
    return collect().back();
  }
  if (!pending_.empty()) (void)collect();
  write_inputs(step, batch);
  run_body(after_phase);  // timed by phase: eagerly
  pending_.push_back(step);
  return collect().back();
}

}  // namespace diffuse
