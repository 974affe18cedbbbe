// `diffuse sample`: generates images from a model directory with DDPM, DDIM or DPM-Solver++(2M),
// optionally class-conditional with classifier-free guidance; writes one PNG grid (--out) or one
// PNG per image (--out-dir). The sampler's settings come from the directory's scheduler config
// (or diffusers' DDPM defaults when it has none); --sampler switches the update rule.
#include <cstdio>
#include <cxxopts.hpp>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "engine/generate.h"
#include "engine/image_io.h"
#include "engine/model_dir.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/progress.h"

namespace diffuse::cli {

int cmd_sample(int argc, char** argv) {
  cxxopts::Options options("diffuse sample", "Generate images from a model directory.");
  options.add_options()
    ("model", "model directory (diffusers layout or a checkpoint's model/ or ema/)", cxxopts::value<std::string>())
    ("sampler", "ddpm, ddim or dpmpp-2m", cxxopts::value<std::string>()->default_value("ddim"))
    ("steps", "inference steps", cxxopts::value<int64_t>()->default_value("50"))
    ("eta", "DDIM eta (0: deterministic)", cxxopts::value<double>()->default_value("0"))
    ("n", "number of images (also --n)", cxxopts::value<int64_t>()->default_value("16"))
    ("class", "class label for a class-conditional model (-1: unconditional)", cxxopts::value<int64_t>()->default_value("-1"))
    ("guidance", "classifier-free guidance weight", cxxopts::value<double>()->default_value("1"))
    ("seed", "random seed", cxxopts::value<uint64_t>()->default_value("0"))
    ("out", "PNG grid to write", cxxopts::value<std::string>())
    ("out-dir", "directory for one PNG per image", cxxopts::value<std::string>())
    ("device", "cpu or cuda", cxxopts::value<std::string>()->default_value("cpu"))
    ("batch", "images per sampler batch", cxxopts::value<int64_t>()->default_value("16"))
    ("h,help", "show this help");
  // cxxopts treats one-letter names as short options; accept `--n 16` and `--n=16` too (docs/cli.md writes `--n 16`).
  std::vector<std::string> rewritten(argv, argv + argc);
  for (size_t i = 1; i < rewritten.size(); ++i) {
    if (rewritten[i] == "--n") rewritten[i] = "-n";
    else if (rewritten[i].rfind("--n=", 0) == 0) rewritten[i] = "-n" + rewritten[i].substr(4);
  }
  std::vector<char*> argv2;
  for (auto& a : rewritten) argv2.push_back(a.data());
  auto args = parse_or_usage(options, argc, argv2.data());
  if (!args) return 2;
  if (args->count("help")) {
    std::cout << options.help() << "\n";
    return 0;
  }
  if (!args->unmatched().empty()) {
    std::fprintf(stderr, "diffuse sample: unexpected argument '%s' (see --help)\n", args->unmatched()[0].c_str());
    return 2;
  }
  const std::string model_path = required(*args, "model");
  if (!args->count("out") && !args->count("out-dir")) throw Error("--out or --out-dir is required");
  const Device device = parse_device(*args);

  ModelDirectory dir = locate_model_dir(model_path);
  SchedulerConfig sched = dir.scheduler_config_path.empty() ? SchedulerConfig{} : read_scheduler_config(dir.scheduler_config_path);
  sched.kind = parse_sampler_kind((*args)["sampler"].as<std::string>(), "--sampler");
  auto model = load_unet(dir);
  model->to(device);

  GenerateOptions g;
  g.count = (*args)["n"].as<int64_t>();
  g.batch = (*args)["batch"].as<int64_t>();
  g.steps = (*args)["steps"].as<int64_t>();
  g.eta = (*args)["eta"].as<double>();
  g.class_label = (*args)["class"].as<int64_t>();
  g.guidance = (*args)["guidance"].as<double>();
  g.seed = (*args)["seed"].as<uint64_t>();

  const int64_t batches = (g.count + g.batch - 1) / g.batch;
  Progress progress("sample", batches * g.steps, stdout_is_terminal(), g.steps);
  Tensor images = generate(*model, sched, g, [&](int64_t batch, int64_t step, int64_t steps) {
    progress.update(batch * steps + step, "batch " + std::to_string(batch + 1) + "/" + std::to_string(batches), 0.0);
    return true;
  });
  if (args->count("out")) {
    std::string out = (*args)["out"].as<std::string>();
    std::filesystem::path parent = std::filesystem::path(out).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent);
    save_png_grid(out, images);
    std::cout << "wrote " << out << " (" << g.count << " images)\n";
  }
  if (args->count("out-dir")) {
    std::filesystem::path out_dir = (*args)["out-dir"].as<std::string>();
    std::filesystem::create_directories(out_dir);
    for (int64_t i = 0; i < g.count; ++i) {
      char name[32];
      std::snprintf(name, sizeof name, "%05lld.png", static_cast<long long>(i));
      save_png((out_dir / name).string(), images.slice0(i, i + 1));
    }
    std::cout << "wrote " << g.count << " images to " << out_dir.string() << "\n";
  }
  return 0;
}

}  // namespace diffuse::cli
