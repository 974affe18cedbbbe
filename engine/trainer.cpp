// See trainer.h. train() is a loop around the named step (engine/train_step.h): draw a batch, run
// the step, log it, and now and then write a sample grid or a checkpoint. Every random draw of
// step s uses Philox counters derived from s alone, so the state to resume is just: weights, EMA
// weights, AdamW moments, the batcher position, the dropout stream position and the step — all in
// checkpoints/step-N/.
#include "engine/trainer.h"

#include <chrono>
#include <exception>
#include <filesystem>
#include <fstream>
#include <optional>
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
#include "nn/collective.h"
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
    // Named without the option (the CLI's --classes, the library's TrainRequest::classes): the
    // dataset is what is wrong for the run.
    if (!data.has_labels())
      throw Error(data.source() + ": has no labels, and the run is class-conditional (" + std::to_string(o.classes) +
                      " classes)",
                  ErrorKind::bad_input);
    if (data.num_classes() > o.classes)
      throw Error(data.source() + ": has " + std::to_string(data.num_classes()) + " classes, more than the run's " +
                      std::to_string(o.classes),
                  ErrorKind::bad_input);
  }
  return data;
}

// The data event before the first step: what was loaded, so that a wrong path (6 images where
// 60,000 were meant) or a conversion (RGB files to a 1-channel config) shows before the run does.
std::string describe_data(const Dataset& data) {
  const auto n = [](int64_t v, const char* one, const char* many) {
    return std::to_string(v) + " " + (v == 1 ? one : many);
  };
  std::string s = "data " + data.source() + ": " + n(data.count(), "image", "images") + ", " +
                  std::to_string(data.width()) + "x" + std::to_string(data.height()) + ", " +
                  n(data.channels(), "channel", "channels");
  if (data.has_labels()) s += ", " + n(data.num_classes(), "class", "classes");
  return s;
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
  create_directories(dir.string(), "the samples directory");
  std::string path = (dir / ("step-" + std::to_string(step) + ".png")).string();
  save_png_grid(path, images);
  return path;
}

// config.json's "train" object: the options, with "batch" the GLOBAL batch (ranks × --batch), so
// that a resume at another rank count can check and split it (docs/distributed.md).
json saved_train_options(const TrainOptions& o, int ranks) {
  json t = options::train_options_json(o);
  t["batch"] = o.batch * ranks;
  return t;
}

// Every rank must stop at the same step (Ctrl-C, a callback's "stop"): rank 0's answer decides.
bool all_keep_going(collective::Communicator& comm, bool keep_going, int64_t step) {
  if (!comm.distributed()) return keep_going;
  const double stop = comm.allreduce_mean(comm.rank() == 0 && !keep_going ? 1.0 : 0.0,
                                          "the continue-or-stop vote of step " + std::to_string(step));
  return stop == 0;
}

// The weights of every rank must stay identical; checked this often, at checkpoints and at the end.
constexpr int64_t kAgreementEvery = 100;
// --precision bf16 skips a step whose loss or gradient norm is not finite (no update; the weights,
// moments and EMA stay those of the step before) instead of stopping, as loss scalers do; at most
// this many in a row are skipped: the next non-finite step in a row stops the run, which is then
// diverging rather than overflowing.
constexpr int64_t kMaxSkippedInARow = 10;

TrainResult train_ranks(const TrainOptions& o, const TrainCallback& callback);

}  // namespace

std::string latest_checkpoint(const std::string& run_dir) { return find_latest_checkpoint(run_dir); }

TrainResult train(const TrainOptions& o, const TrainCallback& callback) {
  collective::Communicator& comm = collective::world();
  if (!comm.distributed()) return train_ranks(o, callback);
  try {
    return train_ranks(o, callback);
  } catch (const std::exception& e) {
    comm.abort(e.what());  // the other ranks would wait at the next collective: end the job
  }
}

namespace {

// train() for any rank count: rank r of K trains on rows [r·B, (r+1)·B) of each global batch of
// K·B (engine/train_step.h), and rank 0 alone writes into the run directory and reports progress.
TrainResult train_ranks(const TrainOptions& o, const TrainCallback& callback_in) {
  collective::Communicator& comm = collective::world();
  const bool writer = comm.rank() == 0;
  const TrainCallback callback = writer ? callback_in : TrainCallback{};
  options::validate(o, options::Naming::flag);
  set_cpu_threads(o.threads);
  set_conv_search(o.conv_search);
  ignore_file_size_signal();  // a write past ulimit -f becomes an error naming the file (metrics too)
  // Leftovers of a killed run (checkpoints/step-N.tmp-<pid>/, <file>.tmp-<pid>-<n>) go first.
  if (writer)
    for (const std::string& path : remove_stale_temporaries(o.out))
      if (callback) callback(TrainProgress{0, o.steps, 0, 0, 0, 0, 0, "removed " + path + ", left by a run that was killed"});
  const fs::path run(o.out);

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
  train_step.set_communicator(&comm);
  int64_t step_now = 0;  // the step the graph's fallback message is reported at
  train_step.set_cuda_graphs(o.cuda_graphs, [&](const std::string& why) {
    if (callback) callback(TrainProgress{step_now, o.steps, 0, 0, 0, 0, 0, why});
  });
  Batcher batcher(data, o.batch * comm.size(), o.seed, o.random_flip);  // draws the global batch
  const SchedulerConfig sampler_cfg = training_scheduler_config(train_step.schedule().options());
  const std::string scheduler_json = scheduler_config_to_json(sampler_cfg);

  create_directories(run.string(), "the run directory");
  TrainResult result;
  int64_t start = 1;
  if (o.resume) {
    std::string ckpt = find_latest_checkpoint(o.out);
    TrainState st = load_checkpoint(ckpt, train_step.model(), ema_model, train_step.ema(), train_step.adam());
    batcher.set_position(st.batch_position);
    train_step.model().set_dropout_state(o.seed, st.dropout_offset);
    start = st.step + 1;
    result.last_checkpoint = ckpt;
    // config.json records the options this run now trains with (the may-change ones as applied).
    const std::string config_path = (run / "config.json").string();
    json run_config = parse_json_input(read_json_input_file(config_path, "the run's config"), config_path);
    if (!run_config.is_object()) throw Error(config_path + ": not a run's config.json", ErrorKind::bad_input);
    run_config["train"] = saved_train_options(o, comm.size());
    run_config["session"] = session_json(o.device == Device::cuda);  // where this session runs (the report shows it)
    if (writer) write_file_atomic(config_path, run_config.dump(2) + "\n");
    for (const std::string& change : o.resume_changes)
      if (callback) callback(TrainProgress{st.step, o.steps, st.loss, 0, 0, 0, 0, "resumed with " + change});
  } else {
    json run_config = {{"train", saved_train_options(o, comm.size())}, {"unet", json::parse(unet_config_to_json(cfg))},
                       {"scheduler", json::parse(scheduler_json)}, {"session", session_json(o.device == Device::cuda)}};
    if (writer) write_file_atomic((run / "config.json").string(), run_config.dump(2) + "\n");
  }
  if (callback) callback(TrainProgress{start - 1, o.steps, 0, 0, 0, 0, 0, describe_data(data)});
  // Rank 0's weights on every rank, fresh or resumed (they start equal anyway: same seed, same
  // checkpoint); from here on identical updates keep them so, and kAgreementEvery checks it.
  comm.broadcast(train_step.parameters(), 0, "the initial weights");
  const std::string metrics_path = (run / "metrics.jsonl").string();
  std::ofstream metrics;
  std::optional<LiveReport> report;  // report.html: rewritten at grids, checkpoints, every ~15 s and at the end
  // However the run ends, the page stops reloading itself: a run that throws (a NaN loss, disk
  // full, out of memory, a CUDA error, a callback's own exception) finishes it on the way out, best
  // effort (the error being thrown is the one to report).
  struct FinishReportOnThrow {
    std::optional<LiveReport>& report;
    const int uncaught = std::uncaught_exceptions();
    ~FinishReportOnThrow() {
      if (!report || std::uncaught_exceptions() == uncaught) return;
      try {
        report->finish();
      } catch (...) {
      }
    }
  } finish_report_on_throw{report};
  if (writer) {
    truncate_metrics(metrics_path, start - 1);
    metrics.open(metrics_path, std::ios::app);
    if (!metrics) throw Error(metrics_path + ": cannot open for writing");
    report.emplace(o.out);
    report->update(true);
  }

  result.first_step = start;
  // bf16 runs: steps skipped so far in this invocation, written as "skipped" on every metrics line.
  int64_t skipped_steps = 0, skipped_in_a_row = 0;
  const bool skip_non_finite = o.precision == "bf16";
  const auto t_start = std::chrono::steady_clock::now();
  // The steps' status is read back in groups (TrainRequest::status_every): on CUDA a step is
  // queued without waiting for the device, and the host waits once per group (data-parallel runs
  // too: step by step within the deadline, TrainStep::collect, and every rank reads at the same
  // steps, so the votes on stopping below pair up). The CPU has nothing to overlap: every step.
  const int64_t status_every = o.device == Device::cuda ? o.status_every : 1;
  auto read_after = [&](int64_t step) {
    return step % status_every == 0 || step == o.steps || train_step.pending() >= TrainStep::kMaxPending ||
           (o.checkpoint_every > 0 && step % o.checkpoint_every == 0) ||
           (o.sample_every > 0 && step % o.sample_every == 0) ||
           (comm.distributed() && step % kAgreementEvery == 0);  // the ranks' weights compared there
  };
  auto t_group = t_start;  // when the group being queued began
  bool keep_going = true;
  for (int64_t step = start; step <= o.steps && keep_going; ++step) {
    step_now = step;
    train_step.enqueue(step, batcher.next_rows(comm.rank() * o.batch, o.batch));
    if (!read_after(step)) continue;
    const std::vector<TrainStepResult>& group = train_step.collect();  // the one wait of the group
    const auto t1 = std::chrono::steady_clock::now();
    const double dt = std::chrono::duration<double>(t1 - t_group).count();
    t_group = t1;
    // The group's average: its steps ran back to back on the device.
    const double images_per_second =
        dt > 0 ? static_cast<double>(o.batch * comm.size()) * static_cast<double>(group.size()) / dt : 0;  // all ranks
    const double seconds = std::chrono::duration<double>(t1 - t_start).count();
    bool skipped = false;
    for (const TrainStepResult& r : group) {
      skipped = !r.non_finite.empty() && skip_non_finite && ++skipped_in_a_row <= kMaxSkippedInARow;
      if (skipped) {
        ++skipped_steps;
      } else if (!r.non_finite.empty()) {
        throw Error("step " + std::to_string(r.step) + ": " + r.non_finite + "; training stopped" +
                    (result.last_checkpoint.empty() ? std::string(" (no checkpoint written yet)")
                                                    : "; the last good checkpoint is " + result.last_checkpoint));
      }
      json line = {{"step", r.step}, {"loss", r.loss}, {"lr", r.lr}, {"grad_norm", r.grad_norm},
                   {"images_per_second", images_per_second}, {"seconds", seconds}};
      if (skip_non_finite) line["skipped"] = skipped_steps;
      if (!skipped) skipped_in_a_row = 0;
      if (writer && !skipped) {  // a skipped step has no finite loss or norm to log; the next line counts it
        metrics << line.dump() << "\n";
        if (!metrics) throw Error(metrics_path + ": cannot append the step's metrics (disk full or over `ulimit -f`?)");
        report->add(line);
      }
      result.last_step = r.step;
      if (!skipped) result.final_loss = r.loss;
      const TrainProgress update{r.step, o.steps, r.loss, r.lr, r.grad_norm, images_per_second, seconds, ""};
      if (skipped && callback) {
        TrainProgress event = update;
        event.event = "skipped (bf16): " + r.non_finite + "; no update, " + std::to_string(skipped_steps) +
                      " skipped so far";
        callback(event);
      }
      // Every step is reported; once a callback has asked to stop, the group's later steps (already
      // run) are reported too and the run ends after them.
      const bool wants_more = !callback || skipped || callback(update);
      if (keep_going) keep_going = all_keep_going(comm, wants_more, r.step);
    }
    if (writer) {
      metrics.flush();
      if (!metrics) throw Error(metrics_path + ": cannot append the step's metrics (disk full or over `ulimit -f`?)");
    }
    const TrainStepResult& r = group.back();
    auto progress = [&](std::string event) {
      return TrainProgress{step, o.steps, r.loss, r.lr, r.grad_norm, images_per_second, seconds, std::move(event)};
    };
    bool wrote_file = false;  // a grid or checkpoint: the report shows it at once
    if (writer && o.sample_every > 0 && step % o.sample_every == 0) {
      const std::string path = write_sample_grid(o, step, train_step, ema_model, sampler_cfg);
      report->add_grid(step, path);
      wrote_file = true;
      if (callback) callback(progress("samples " + path));
    }
    const bool checkpoint_now =
        step == o.steps || !keep_going || (o.checkpoint_every > 0 && step % o.checkpoint_every == 0);
    if (comm.distributed() && (checkpoint_now || step % kAgreementEvery == 0))
      comm.check_agreement(collective::checksum(train_step.parameters()),
                           "the weights after step " + std::to_string(step));
    if (writer && checkpoint_now) {
      TrainState st;
      st.step = step;
      st.batch_position = batcher.position();
      st.dropout_offset = train_step.model().dropout_offset();
      st.loss = skipped ? result.final_loss : r.loss;  // the last finite loss
      result.last_checkpoint =
          save_checkpoint(o.out, st, train_step.model(), ema_model, train_step.ema(), train_step.adam(), scheduler_json,
                          o.save_dtype == "fp32" ? "" : o.save_dtype);
      if (callback) callback(progress("checkpoint " + result.last_checkpoint));
      wrote_file = true;
    }
    if (report && step < o.steps && keep_going) report->update(wrote_file);
    // The next group's throughput counts its own steps: not this group's grid, checkpoint or
    // report (a sample grid used to show as a dip in images/s at the step after it).
    t_group = std::chrono::steady_clock::now();
  }
  if (!keep_going) result.cancelled = true;
  if (report) report->finish();
  return result;
}

}  // namespace

}  // namespace diffuse
