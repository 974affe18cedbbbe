// See trainer.h. Every random draw of step s uses Philox counters derived from s alone, so the
// state to resume is just: weights, EMA weights, AdamW moments, the batcher position, the dropout
// stream position and the step — all in checkpoints/step-N/.
#include "engine/trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/checkpoint.h"
#include "engine/dataset.h"
#include "engine/generate.h"
#include "engine/image_io.h"
#include "engine/options.h"
#include "engine/q_sample.h"
#include "engine/schedule.h"
#include "engine/scheduler.h"
#include "kernels/philox.h"
#include "nn/atomic_file.h"
#include "nn/autograd.h"
#include "nn/ops.h"
#include "nn/optim.h"
#include "nn/runtime.h"

namespace diffuse {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

double lr_at(const TrainOptions& o, int64_t step0) {  // step0 counts from 0, like torch's LambdaLR
  if (step0 < o.warmup) return o.lr * static_cast<double>(step0) / static_cast<double>(std::max<int64_t>(1, o.warmup));
  if (o.lr_schedule == "cosine") {
    double progress = static_cast<double>(step0 - o.warmup) / static_cast<double>(std::max<int64_t>(1, o.steps - o.warmup));
    return o.lr * 0.5 * (1.0 + std::cos(M_PI * progress));
  }
  return o.lr;
}

// Keeps the metrics lines of steps <= last_step (a resumed run rewrites what came after).
void truncate_metrics(const std::string& path, int64_t last_step) {
  if (!fs::exists(path)) return;
  std::ifstream in(path);
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    try {
      if (json::parse(line).value("step", int64_t(0)) <= last_step) kept += line + "\n";
    } catch (const json::exception&) {
      break;  // a torn last line from a crash
    }
  }
  write_file_atomic(path, kept);
}

// The DDPMScheduler config saved with the model: the training schedule plus diffusers' defaults.
SchedulerConfig training_scheduler_config(const ScheduleOptions& s) {
  SchedulerConfig c;
  c.kind = SamplerKind::ddpm;
  c.num_train_timesteps = s.num_train_timesteps;
  c.beta_start = s.beta_start;
  c.beta_end = s.beta_end;
  c.beta_schedule = s.beta_schedule;
  c.rescale_betas_zero_snr = s.rescale_betas_zero_snr;
  c.prediction_type = s.prediction_type;
  return c;
}

}  // namespace

std::string latest_checkpoint(const std::string& run_dir) { return find_latest_checkpoint(run_dir); }

TrainResult train(const TrainOptions& o, const TrainCallback& callback) {
  options::validate(o, options::Naming::flag);
  const fs::path run(o.out);
  const bool has_checkpoints = !find_latest_checkpoint(o.out).empty();
  if (!o.resume && has_checkpoints)
    throw Error(o.out + ": the run directory already has checkpoints; pass --resume to continue it or choose another --out");
  if (o.resume && !has_checkpoints) throw Error(o.out + ": --resume given but the run has no checkpoint");

  UNet2DConfig cfg = resolve_unet_config(o.config);
  if (o.classes > 0) cfg.num_class_embeds = static_cast<int>(o.classes + 1);
  cfg.num_train_timesteps = static_cast<int>(o.num_train_timesteps);

  DatasetOptions dopt;
  dopt.max_images = o.max_images;
  dopt.load_labels = o.classes > 0;
  Dataset data = load_dataset(o.data, cfg.sample_size, cfg.in_channels, dopt);
  if (o.classes > 0) {
    if (!data.has_labels()) throw Error(data.source() + ": --classes needs labels, and this dataset has none");
    if (data.num_classes() > o.classes)
      throw Error(data.source() + ": has " + std::to_string(data.num_classes()) + " classes, more than --classes " +
                  std::to_string(o.classes));
  }

  ScheduleOptions sopt;
  sopt.num_train_timesteps = o.num_train_timesteps;
  sopt.beta_schedule = parse_beta_schedule(o.beta_schedule, "--beta-schedule");
  sopt.prediction_type = parse_prediction_type(o.prediction, "--prediction");
  NoiseSchedule schedule(sopt);
  SchedulerConfig sampler_cfg = training_scheduler_config(sopt);
  const std::string scheduler_json = scheduler_config_to_json(sampler_cfg);

  UNet2D model(cfg, o.seed);
  UNet2D ema_model(cfg, o.seed);
  model.to(o.device);
  ema_model.to(o.device);
  model.set_requires_grad(true);
  model.set_training(true);
  model.set_dropout_state(o.seed, 0);
  std::vector<Tensor> params = model.parameters();
  optim::AdamW adam(params, {o.lr, 0.9, 0.999, 1e-8, o.weight_decay});
  optim::EMAOptions eopt;
  eopt.decay = o.ema_decay;
  eopt.use_ema_warmup = true;
  eopt.inv_gamma = o.ema_inv_gamma;
  eopt.power = o.ema_power;
  optim::EMA ema(params, eopt);
  Batcher batcher(data, o.batch, o.seed, o.random_flip);

  fs::create_directories(run);
  TrainResult result;
  int64_t start = 1;
  if (o.resume) {
    std::string ckpt = find_latest_checkpoint(o.out);
    TrainState st = load_checkpoint(ckpt, model, ema_model, ema, adam);
    batcher.set_position(st.batch_position);
    model.set_dropout_state(o.seed, st.dropout_offset);
    start = st.step + 1;
    result.last_checkpoint = ckpt;
    if (start > o.steps) throw Error(o.out + ": already trained to step " + std::to_string(st.step) + "; raise --steps to continue");
  } else {
    json run_config = {{"train", options::train_options_json(o)}, {"unet", json::parse(unet_config_to_json(cfg))},
                       {"scheduler", json::parse(scheduler_json)}};
    write_file_atomic((run / "config.json").string(), run_config.dump(2) + "\n");
  }
  const std::string metrics_path = (run / "metrics.jsonl").string();
  truncate_metrics(metrics_path, start - 1);
  std::ofstream metrics(metrics_path, std::ios::app);
  if (!metrics) throw Error(metrics_path + ": cannot open for writing");

  const int64_t B = o.batch;
  const int64_t T = o.num_train_timesteps;
  const int64_t per_image = cfg.sample_size * cfg.sample_size * cfg.in_channels;
  const int64_t null_class = o.classes;  // index of the unconditional embedding
  result.first_step = start;
  auto t_start = std::chrono::steady_clock::now();
  double images_per_second = 0;

  for (int64_t step = start; step <= o.steps; ++step) {
    auto t0 = std::chrono::steady_clock::now();
    Batch batch = batcher.next();

    const uint64_t row_block = static_cast<uint64_t>(step) * philox::blocks_for(static_cast<uint64_t>(B));
    std::vector<int64_t> timesteps(static_cast<size_t>(B));
    for (int64_t i = 0; i < B; ++i) {
      float u = philox::uniform_at(o.seed, philox::kTimesteps, row_block, static_cast<uint64_t>(i));
      timesteps[i] = std::min<int64_t>(static_cast<int64_t>(u * static_cast<float>(T)), T - 1);
    }
    std::vector<QSampleCoef> coefs = schedule.q_sample_coefs(timesteps, o.snr_gamma);
    const uint64_t noise_block = static_cast<uint64_t>(step) * philox::blocks_for(static_cast<uint64_t>(B * per_image));
    Tensor x0 = batch.images.to(o.device);
    QSampleResult q = q_sample(x0, coefs, sopt.prediction_type, o.seed, noise_block);

    Tensor labels;
    if (o.classes > 0) {
      labels = batch.labels.clone();
      int64_t* l = labels.data<int64_t>();
      for (int64_t i = 0; i < B; ++i)
        if (philox::uniform_at(o.seed, philox::kLabelDrop, row_block, static_cast<uint64_t>(i)) < o.p_uncond) l[i] = null_class;
    }
    std::vector<double> tvals(timesteps.begin(), timesteps.end());
    Tensor t_tensor = Tensor::from(tvals, {B}, DType::i64);
    Tensor weights;
    if (o.snr_gamma > 0) {
      std::vector<double> w;
      for (auto& c : coefs) w.push_back(c.loss_weight);
      weights = Tensor::from(w, {B}).to(o.device);
    }

    Tensor pred = model.forward(q.x_t, t_tensor, labels);
    Tensor loss = ops::mse_loss(pred, q.target, weights);
    const double loss_value = loss.item();
    auto stop_nan = [&](const std::string& what) {
      clear_tape();
      throw Error("step " + std::to_string(step) + ": " + what + "; training stopped" +
                  (result.last_checkpoint.empty() ? std::string(" (no checkpoint written yet)")
                                                  : "; the last good checkpoint is " + result.last_checkpoint));
    };
    if (!std::isfinite(loss_value)) stop_nan("loss is " + std::to_string(loss_value));
    loss.backward();
    const double gnorm = o.grad_clip > 0 ? optim::clip_grad_norm(params, o.grad_clip) : optim::grad_norm(params);
    if (!std::isfinite(gnorm)) stop_nan("gradient norm is " + std::to_string(gnorm));
    const double lr = lr_at(o, step - 1);
    adam.step(lr, &ema);
    adam.zero_grad();

    auto t1 = std::chrono::steady_clock::now();
    double dt = std::chrono::duration<double>(t1 - t0).count();
    images_per_second = dt > 0 ? static_cast<double>(B) / dt : 0;
    double seconds = std::chrono::duration<double>(t1 - t_start).count();
    json line = {{"step", step}, {"loss", loss_value}, {"lr", lr}, {"grad_norm", gnorm},
                 {"images_per_second", images_per_second}, {"seconds", seconds}};
    metrics << line.dump() << "\n";
    metrics.flush();
    result.last_step = step;
    result.final_loss = loss_value;

    TrainProgress p{step, o.steps, loss_value, lr, gnorm, images_per_second, seconds, ""};
    bool keep_going = !callback || callback(p);

    if (o.sample_every > 0 && step % o.sample_every == 0) {
      ema.copy_to(ema_model.parameters());
      GenerateOptions g;
      g.count = o.sample_count;
      g.batch = o.sample_count;
      g.steps = 50;
      g.seed = o.seed;
      g.class_label = -1;
      SchedulerConfig ddim = sampler_cfg;
      ddim.kind = SamplerKind::ddim;
      Tensor images = generate(ema_model, ddim, g);
      fs::create_directories(run / "samples");
      std::string path = (run / "samples" / ("step-" + std::to_string(step) + ".png")).string();
      save_png_grid(path, images);
      if (callback) callback(TrainProgress{step, o.steps, loss_value, lr, gnorm, images_per_second, seconds, "samples " + path});
    }
    bool last = step == o.steps || !keep_going;
    if (last || (o.checkpoint_every > 0 && step % o.checkpoint_every == 0)) {
      TrainState st;
      st.step = step;
      st.batch_position = batcher.position();
      st.dropout_offset = model.dropout_offset();
      st.loss = loss_value;
      result.last_checkpoint = save_checkpoint(o.out, st, model, ema_model, ema, adam, scheduler_json);
      if (callback) callback(TrainProgress{step, o.steps, loss_value, lr, gnorm, images_per_second, seconds, "checkpoint " + result.last_checkpoint});
    }
    if (!keep_going) {
      result.cancelled = true;
      break;
    }
  }
  return result;
}

}  // namespace diffuse
