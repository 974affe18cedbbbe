// `diffuse inspect PATH [--json]`: what a model directory, a training checkpoint or a run
// directory holds (size, UNet config, classes, scheduler, weights files; a checkpoint's step, loss
// and its run's options), from headers and small files only (engine/inspect.h). The text is for a
// person; --json prints inspection_json's object (keys in docs/cli.md) for scripts.
#include <cxxopts.hpp>
#include <iostream>
#include <sstream>

#include "engine/inspect.h"
#include "engine/noise_schedule.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/option_flags.h"

namespace diffuse::cli {

namespace {

// 1234567 -> "1,234,567".
std::string with_thousands(int64_t n) {
  std::string digits = std::to_string(n < 0 ? -n : n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return (n < 0 ? "-" : "") + out;
}

std::string human_bytes(uint64_t bytes) {
  std::ostringstream s;
  s.precision(bytes >= (10u << 20) ? 0 : 1);
  s << std::fixed;
  if (bytes >= (1u << 20)) s << bytes / 1048576.0 << " MiB";
  else if (bytes >= (1u << 10)) s << bytes / 1024.0 << " KiB";
  else s << bytes << " B";
  return s.str();
}

std::string join_ints(const std::vector<int>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + std::to_string(v[i]);
  return out;
}

// "32x32, 1 -> 1 channels; blocks 32, 64 (1 layer each); attention at 64 channels (head dim 32) and
// in the mid block; 8 norm groups".
std::string unet_summary(const UNet2DConfig& c) {
  std::ostringstream s;
  s << c.sample_size << "x" << c.sample_size << ", " << c.in_channels << " -> " << c.out_channels << " channels; blocks "
    << join_ints(c.block_out_channels) << " (" << c.layers_per_block << " layer" << (c.layers_per_block == 1 ? "" : "s")
    << " each); attention at ";
  std::string levels;
  for (size_t i = 0; i < c.down_block_types.size(); ++i) {
    if (c.down_block_types[i].rfind("Attn", 0) != 0) continue;
    const int ch = c.block_out_channels[i];
    levels += std::to_string(ch) + " channels (head dim " + std::to_string(c.head_dim_for(ch)) + ") and ";
  }
  s << levels << "the mid block; " << c.norm_num_groups << " norm groups";
  return s.str();
}

void print_text(const Inspection& in) {
  const ModelSummary& m = in.model;
  const char* what = in.kind == "checkpoint" ? "a training checkpoint" : in.kind == "run" ? "a training run" : "a model directory";
  std::cout << "path: " << in.path << " (" << what << ")\n";
  if (in.kind != "model") std::cout << "model: " << m.directory << " (the EMA weights `diffuse sample` uses)\n";
  std::cout << "layout: " << (m.layout == "pipeline" ? "diffusers pipeline (unet/, scheduler/)" : "bare UNet folder") << "\n";
  std::cout << "parameters: " << with_thousands(m.parameters) << "\n";
  std::cout << "unet: " << unet_summary(m.unet) << "\n";
  if (m.classes > 0)
    std::cout << "classes: " << m.classes << " (--class 0.." << m.classes - 1 << ", plus a null class for guidance)\n";
  else
    std::cout << "classes: none (unconditional)\n";
  if (m.scheduler) {
    const SchedulerConfig& s = *m.scheduler;
    std::cout << "scheduler: " << scheduler_class_name(s.kind) << ", prediction " << prediction_type_name(s.prediction_type)
              << ", " << beta_schedule_name(s.beta_schedule) << " betas " << s.beta_start << " -> " << s.beta_end << ", "
              << s.num_train_timesteps << " training timesteps\n";
  } else {
    std::cout << "scheduler: none in the directory (sampling uses diffusers' DDPMScheduler defaults)\n";
  }
  for (size_t i = 0; i < m.weights.size(); ++i) {
    const WeightsFileSummary& w = m.weights[i];
    std::cout << (i == 0 ? "weights: " : "         ") << (m.layout == "pipeline" ? "unet/" : "") << w.file << "  "
              << human_bytes(w.bytes) << ", " << w.tensors << " tensors,";
    for (const auto& [dtype, n] : w.dtype_parameters) std::cout << " " << dtype << " " << with_thousands(n);
    std::cout << (i == 0 ? "" : "  (variant)") << "\n";
  }
  if (in.checkpoint)
    std::cout << "checkpoint: " << in.checkpoint->directory << ", step " << in.checkpoint->step << ", loss "
              << in.checkpoint->loss << ", optimizer state " << human_bytes(in.checkpoint->optimizer_bytes) << "\n";
  if (in.run) {
    const RunSummary& r = *in.run;
    std::cout << "run: " << r.directory << ", checkpoints at step";
    for (size_t i = 0; i < r.checkpoint_steps.size(); ++i) std::cout << (i ? ", " : " ") << r.checkpoint_steps[i];
    std::cout << "\n";
    if (r.last_metrics.is_object())
      std::cout << "last step logged: " << r.last_metrics.value("step", int64_t{0}) << ", loss "
                << r.last_metrics.value("loss", 0.0) << ", lr " << r.last_metrics.value("lr", 0.0) << "\n";
    if (r.options.is_object()) {
      std::cout << "run options:";
      for (const auto& [key, value] : r.options.items()) std::cout << " " << key << "=" << value.dump();
      std::cout << "\n";
    }
  }
}

}  // namespace

int cmd_inspect(int argc, char** argv) {
  cxxopts::Options cli("diffuse inspect", "Describe a model directory, a training checkpoint or a run directory.");
  cli.positional_help("PATH");
  cli.add_options()
    ("model", "the model directory, checkpoint (RUN/checkpoints/step-N) or run directory", cxxopts::value<std::string>())
    ("json", "print one JSON object instead of text");
  add_help_flags(cli, /*has_option_tables=*/false);
  cli.parse_positional({"model"});
  auto args = parse_flags(cli, argc, argv);
  if (answer_help(args, cli, "")) return 0;
  if (!args.count("model"))
    throw Error("PATH is required: diffuse inspect PATH (a model directory, checkpoint or run directory)", ErrorKind::usage);
  const Inspection inspection = inspect_path(args["model"].as<std::string>());
  if (args.count("json")) std::cout << inspection_json(inspection).dump(2) << "\n";
  else print_text(inspection);
  return 0;
}

}  // namespace diffuse::cli
