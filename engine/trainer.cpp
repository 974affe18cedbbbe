// See trainer.h. train() is a loop around the named step (engine/train_step.h): draw a batch, run
// the step, log it, and now and then write a sample grid or a checkpoint. Every random draw of
// step s uses Philox counters derived from s alone, so the state to resume is just: weights, EMA
// weights, AdamW moments, the batcher position, the dropout stream position and the step — all in
// checkpoints/step-N/.
#include "engine/trainer.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/checkpoint.h"
#include "engine/dataset.h"
#include "engine/generate.h"
#include "engine/image_io.h"
#include "engine/memory_estimate.h"
#include "engine/options.h"
#include "engine/report.h"
#include "engine/noise_schedule.h"
#include "engine/scheduler_config.h"
#include "engine/train_step.h"
#include "nn/atomic_file.h"
#include "nn/json_input.h"
#include "nn/runtime.h"

namespace diffuse {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Keeps the metrics lines of steps <= last_step (a resumed run rewrites what came after).
void truncate_metrics(const std::string& path, int64_t last_step) {
  if (!fs::exists(path)) return;
  std::ifstream in(path);
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    try {
      const json entry = parse_json_input(line, path);
      if (!entry.is_object()) break;
      const auto step = entry.find("step");
      if (step == entry.end() || !step->is_number_integer() || step->get<int64_t>() <= last_step) kept += line + "\n";
    } catch (const Error&) {
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

Dataset training_data(const TrainOptions& o, const UNet2DConfig& cfg) {
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
  return data;
}

// samples/step-N.png: sample_count unconditional images, DDIM-50 from the EMA weights under the
// run's seed. Returns the file written.
std::string write_sample_grid(const TrainOptions& o, int64_t step, TrainStep& train_step, UNet2D& ema_model,
                              const SchedulerConfig& sampler_cfg) {
  train_step.ema().copy_to(ema_model.parameters());
  GenerateOptions g;
  g.count = o.sample_count;
  g.batch = o.sample_count;
  g.steps = 50;
  g.seed = o.seed;
  g.class_label = -1;
  SchedulerConfig ddim = sampler_cfg;
  ddim.kind = SamplerKind::ddim;
  Tensor images = generate(ema_model, ddim, g);
  const fs::path dir = fs::path(o.out) / "samples";
  fs::create_directories(dir);
  std::string path = (dir / ("step-" + std::to_string(step) + ".png")).string();
  save_png_grid(path, images);
  return path;
}

}  // namespace

std::string latest_checkpoint(const std::string& run_dir) { return find_latest_checkpoint(run_dir); }

TrainResult train(const TrainOptions& o, const TrainCallback& callback) {
  options::validate(o, options::Naming::flag);
  set_cpu_threads(o.threads);
  ignore_file_size_signal();  // a write past ulimit -f becomes an error naming the file (metrics too)
  // Leftovers of a killed run (checkpoints/step-N.tmp-<pid>/, <file>.tmp-<pid>-<n>) go first.
  for (const std::string& path : remove_stale_temporaries(o.out))
    if (callback) callback(TrainProgress{0, o.steps, 0, 0, 0, 0, 0, "removed " + path + ", left by a run that was killed"});
  const fs::path run(o.out);
  const bool has_checkpoints = !find_latest_checkpoint(o.out).empty();
  if (!o.resume && has_checkpoints)
    throw Error(o.out + ": the run directory already has checkpoints; pass --resume to continue it or choose another --out");
  if (o.resume && !has_checkpoints) throw Error(o.out + ": --resume given but the run has no checkpoint");

  const UNet2DConfig cfg = training_unet_config(o);
  // Refuse what cannot fit before allocating anything, and again once the dataset's size is known.
  const std::string batch_name = "--batch " + std::to_string(o.batch), config_name = "--config " + o.config;
  require_memory(training_memory(cfg, o.batch, 0), o.device, "training", batch_name, config_name);
  Dataset data = training_data(o, cfg);
  const double dataset_bytes = static_cast<double>(data.count()) * static_cast<double>(data.height()) *
                               static_cast<double>(data.width()) * static_cast<double>(data.channels());
  require_memory(training_memory(cfg, o.batch, dataset_bytes), o.device, "training", batch_name, config_name);
  TrainStep train_step(cfg, o);
  UNet2D ema_model(cfg, o.seed);  // the EMA weights as a model: for sample grids and checkpoints
  ema_model.to(o.device);
  Batcher batcher(data, o.batch, o.seed, o.random_flip);
  const SchedulerConfig sampler_cfg = training_scheduler_config(train_step.schedule().options());
  const std::string scheduler_json = scheduler_config_to_json(sampler_cfg);

  fs::create_directories(run);
  TrainResult result;
  int64_t start = 1;
  if (o.resume) {
    std::string ckpt = find_latest_checkpoint(o.out);
    TrainState st = load_checkpoint(ckpt, train_step.model(), ema_model, train_step.ema(), train_step.adam());
    batcher.set_position(st.batch_position);
    train_step.model().set_dropout_state(o.seed, st.dropout_offset);
    start = st.step + 1;
    result.last_checkpoint = ckpt;
    if (start > o.steps) throw Error(o.out + ": already trained to step " + std::to_string(st.step) + "; raise --steps to continue");
    // config.json records the options this run now trains with (the may-change ones as applied).
    const std::string config_path = (run / "config.json").string();
    json run_config = parse_json_input(read_json_input_file(config_path, "the run's config"), config_path);
    if (!run_config.is_object()) throw Error(config_path + ": not a run's config.json", ErrorKind::bad_input);
    run_config["train"] = options::train_options_json(o);
    run_config["session"] = session_json(o.device == Device::cuda);  // where this session runs (the report shows it)
    write_file_atomic(config_path, run_config.dump(2) + "\n");
    for (const std::string& change : o.resume_changes)
      if (callback) callback(TrainProgress{st.step, o.steps, st.loss, 0, 0, 0, 0, "resumed with " + change});
  } else {
    json run_config = {{"train", options::train_options_json(o)}, {"unet", json::parse(unet_config_to_json(cfg))},
                       {"scheduler", json::parse(scheduler_json)}, {"session", session_json(o.device == Device::cuda)}};
    write_file_atomic((run / "config.json").string(), run_config.dump(2) + "\n");
  }
  const std::string metrics_path = (run / "metrics.jsonl").string();
  truncate_metrics(metrics_path, start - 1);
  std::ofstream metrics(metrics_path, std::ios::app);
  if (!metrics) throw Error(metrics_path + ": cannot open for writing");
  LiveReport report(o.out);  // report.html: rewritten at grids, checkpoints, every ~15 s and at the end
  report.update(true);

  result.first_step = start;
  const auto t_start = std::chrono::steady_clock::now();
  for (int64_t step = start; step <= o.steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    const TrainStepResult r = train_step.run(step, batcher.next());
    if (!r.non_finite.empty()) {
      report.finish();
      throw Error("step " + std::to_string(step) + ": " + r.non_finite + "; training stopped" +
                  (result.last_checkpoint.empty() ? std::string(" (no checkpoint written yet)")
                                                  : "; the last good checkpoint is " + result.last_checkpoint));
    }

    const auto t1 = std::chrono::steady_clock::now();
    const double dt = std::chrono::duration<double>(t1 - t0).count();
    const double images_per_second = dt > 0 ? static_cast<double>(o.batch) / dt : 0;
    const double seconds = std::chrono::duration<double>(t1 - t_start).count();
    json line = {{"step", step}, {"loss", r.loss}, {"lr", r.lr}, {"grad_norm", r.grad_norm},
                 {"images_per_second", images_per_second}, {"seconds", seconds}};
    metrics << line.dump() << "\n";
    metrics.flush();
    if (!metrics) throw Error(metrics_path + ": cannot append the step's metrics (disk full or over `ulimit -f`?)");
    report.add(line);
    result.last_step = step;
    result.final_loss = r.loss;

    auto progress = [&](std::string event) {
      return TrainProgress{step, o.steps, r.loss, r.lr, r.grad_norm, images_per_second, seconds, std::move(event)};
    };
    const bool keep_going = !callback || callback(progress(""));
    bool wrote_file = false;  // a grid or checkpoint: the report shows it at once
    if (o.sample_every > 0 && step % o.sample_every == 0) {
      const std::string path = write_sample_grid(o, step, train_step, ema_model, sampler_cfg);
      report.add_grid(step, path);
      wrote_file = true;
      if (callback) callback(progress("samples " + path));
    }
    if (step == o.steps || !keep_going || (o.checkpoint_every > 0 && step % o.checkpoint_every == 0)) {
      TrainState st;
      st.step = step;
      st.batch_position = batcher.position();
      st.dropout_offset = train_step.model().dropout_offset();
      st.loss = r.loss;
      result.last_checkpoint =
          save_checkpoint(o.out, st, train_step.model(), ema_model, train_step.ema(), train_step.adam(), scheduler_json,
                          o.save_dtype == "fp32" ? "" : o.save_dtype);
      if (callback) callback(progress("checkpoint " + result.last_checkpoint));
      wrote_file = true;
    }
    if (step < o.steps && keep_going) report.update(wrote_file);
    if (!keep_going) {
      result.cancelled = true;
      break;
    }
  }
  report.finish();
  return result;
}

}  // namespace diffuse
