// `diffuse train`: trains a UNet on a dataset into a run directory (engine/trainer.h), with a live
// progress bar on a terminal and plain log lines when piped. Ctrl-C stops after the current step
// and writes a checkpoint, so --resume can continue.
#include <csignal>
#include <cstdio>
#include <cxxopts.hpp>
#include <iostream>

#include "engine/trainer.h"
#include "nn/unet_config.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/progress.h"

namespace diffuse::cli {

namespace {
volatile std::sig_atomic_t g_interrupted = 0;
void on_sigint(int) { g_interrupted = 1; }
}  // namespace

int cmd_train(int argc, char** argv) {
  std::string names;
  for (auto& n : named_unet_configs()) names += (names.empty() ? "" : "|") + n;
  cxxopts::Options options("diffuse train", "Train a diffusion UNet on a dataset.");
  TrainOptions d;  // defaults
  auto str = [](auto v) { return std::to_string(v); };
  options.add_options()
    ("data", "dataset: fashion-mnist, an IDX file, or a folder of images", cxxopts::value<std::string>()->default_value(d.data))
    ("out", "run directory (checkpoints, samples, metrics.jsonl)", cxxopts::value<std::string>())
    ("config", "UNet config: " + names + " or a config.json", cxxopts::value<std::string>()->default_value(d.config))
    ("steps", "training steps", cxxopts::value<int64_t>()->default_value(str(d.steps)))
    ("batch", "batch size", cxxopts::value<int64_t>()->default_value(str(d.batch)))
    ("lr", "peak learning rate", cxxopts::value<double>()->default_value("1e-4"))
    ("warmup", "linear warmup steps", cxxopts::value<int64_t>()->default_value(str(d.warmup)))
    ("lr-schedule", "after warmup: constant or cosine", cxxopts::value<std::string>()->default_value(d.lr_schedule))
    ("weight-decay", "AdamW weight decay", cxxopts::value<double>()->default_value("0"))
    ("grad-clip", "max global grad norm (0: off)", cxxopts::value<double>()->default_value("1"))
    ("ema-decay", "EMA max decay", cxxopts::value<double>()->default_value("0.9999"))
    ("prediction", "epsilon, v_prediction or sample", cxxopts::value<std::string>()->default_value(d.prediction))
    ("beta-schedule", "linear, scaled_linear or squaredcos_cap_v2", cxxopts::value<std::string>()->default_value(d.beta_schedule))
    ("timesteps", "number of training timesteps T", cxxopts::value<int64_t>()->default_value(str(d.num_train_timesteps)))
    ("snr-gamma", "min-SNR-gamma loss weighting (0: off)", cxxopts::value<double>()->default_value("0"))
    ("classes", "class-conditional with this many classes (0: unconditional)", cxxopts::value<int64_t>()->default_value("0"))
    ("p-uncond", "label dropout probability for classifier-free guidance", cxxopts::value<double>()->default_value("0.1"))
    ("random-flip", "random horizontal flips", cxxopts::value<bool>()->default_value("false"))
    ("max-images", "use only the first N images (0: all)", cxxopts::value<int64_t>()->default_value("0"))
    ("sample-every", "steps between sample grids (0: never)", cxxopts::value<int64_t>()->default_value("0"))
    ("checkpoint-every", "steps between checkpoints (0: only at the end)", cxxopts::value<int64_t>()->default_value("0"))
    ("log-every", "steps between log lines when not on a terminal", cxxopts::value<int64_t>()->default_value(str(d.log_every)))
    ("resume", "continue the run in --out from its latest checkpoint", cxxopts::value<bool>()->default_value("false"))
    ("device", "cpu or cuda", cxxopts::value<std::string>()->default_value("cpu"))
    ("precision", "fp32 or bf16 (cuda only)", cxxopts::value<std::string>()->default_value(d.precision))
    ("seed", "random seed", cxxopts::value<uint64_t>()->default_value("0"))
    ("h,help", "show this help");
  auto args = parse_or_usage(options, argc, argv);
  if (!args) return 2;
  if (args->count("help")) {
    std::cout << options.help() << "\n";
    return 0;
  }
  if (!args->unmatched().empty()) {
    std::fprintf(stderr, "diffuse train: unexpected argument '%s' (see --help)\n", args->unmatched()[0].c_str());
    return 2;
  }
  TrainOptions o;
  o.out = required(*args, "out");
  o.data = (*args)["data"].as<std::string>();
  o.config = (*args)["config"].as<std::string>();
  o.steps = (*args)["steps"].as<int64_t>();
  o.batch = (*args)["batch"].as<int64_t>();
  o.lr = (*args)["lr"].as<double>();
  o.warmup = (*args)["warmup"].as<int64_t>();
  o.lr_schedule = (*args)["lr-schedule"].as<std::string>();
  o.weight_decay = (*args)["weight-decay"].as<double>();
  o.grad_clip = (*args)["grad-clip"].as<double>();
  o.ema_decay = (*args)["ema-decay"].as<double>();
  o.prediction = (*args)["prediction"].as<std::string>();
  o.beta_schedule = (*args)["beta-schedule"].as<std::string>();
  o.num_train_timesteps = (*args)["timesteps"].as<int64_t>();
  o.snr_gamma = (*args)["snr-gamma"].as<double>();
  o.classes = (*args)["classes"].as<int64_t>();
  o.p_uncond = (*args)["p-uncond"].as<double>();
  o.random_flip = (*args)["random-flip"].as<bool>();
  o.max_images = (*args)["max-images"].as<int64_t>();
  o.sample_every = (*args)["sample-every"].as<int64_t>();
  o.checkpoint_every = (*args)["checkpoint-every"].as<int64_t>();
  o.log_every = (*args)["log-every"].as<int64_t>();
  o.resume = (*args)["resume"].as<bool>();
  o.device = parse_device(*args);
  o.precision = (*args)["precision"].as<std::string>();
  o.seed = (*args)["seed"].as<uint64_t>();

  Progress progress("train", o.steps, stdout_is_terminal(), o.log_every);
  std::signal(SIGINT, on_sigint);
  TrainResult r = train(o, [&](const TrainProgress& p) {
    if (!p.event.empty()) {
      if (stdout_is_terminal()) std::printf("\n");
      std::printf("train step %lld: %s\n", static_cast<long long>(p.step), p.event.c_str());
      return true;
    }
    char fields[96];
    std::snprintf(fields, sizeof fields, "loss %.4f  lr %.2e  grad %.3f", p.loss, p.lr, p.grad_norm);
    progress.update(p.step, fields, p.images_per_second);
    return g_interrupted == 0;
  });
  std::signal(SIGINT, SIG_DFL);
  progress.finish(std::string(r.cancelled ? "interrupted" : "finished") + " at step " + std::to_string(r.last_step) +
                  ", last loss " + std::to_string(r.final_loss) +
                  (r.last_checkpoint.empty() ? "" : ", checkpoint " + r.last_checkpoint));
  return r.cancelled ? 130 : 0;
}

}  // namespace diffuse::cli
