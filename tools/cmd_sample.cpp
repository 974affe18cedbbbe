// `diffuse sample`: generates images from a model directory through the public API (Model,
// Pipeline, write_png in include/diffuse/diffuse.h) with DDPM, DDIM or DPM-Solver++(2M),
// optionally class-conditional with classifier-free guidance; writes one PNG grid (--out), one
// PNG per image (--out-dir) and/or the raw final samples (--out-raw), optionally starting from
// given noise (--noise); those two files are read and written by tools/sample_files.h. Its flags
// are the option tables of SamplerOptions and GenerateRequest (engine/options.h) plus the CLI's
// own: the model directory, the files and the device. Every flag and output path is checked
// before the model is loaded, and the noise file before sampling starts.
#include <cstdio>
#include <cxxopts.hpp>
#include <filesystem>
#include <iostream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "diffuse/diffuse.h"
#include "engine/memory_estimate.h"
#include "engine/options.h"
#include "engine/scheduler_config.h"
#include "nn/atomic_file.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/option_flags.h"
#include "tools/progress.h"
#include "tools/sample_files.h"

namespace diffuse::cli {

namespace {

// What only the command line has: where the model comes from and where the images go.
struct SampleCliOptions {
  std::string model;
  std::string variant;
  std::string out;
  std::string out_dir;
  std::string out_raw;
  std::string noise;
  Device device = Device::cpu;
};

const options::Table<SampleCliOptions>& cli_table() {
  using C = SampleCliOptions;
  static const options::Table<C> table{
      "SampleCliOptions",
      {
          {"model", DIFFUSE_OPTION_FIELD(C, model), false,
           "the model directory (diffusers layout, a bare UNet directory, or a checkpoint's `model/` or `ema/`); a "
           "checkpoint (`RUN/checkpoints/step-N`) stands for its `ema/`, a training run for its latest checkpoint's "
           "`ema/` (`model/` where a copy lacks `ema/`), and the command prints which",
           options::required()},
          {"variant", DIFFUSE_OPTION_FIELD(C, variant), false,
           "load the weights variant `diffusion_pytorch_model.VARIANT.safetensors` (e.g. `fp16`, as diffusers' `variant=`)"},
          {"out", DIFFUSE_OPTION_FIELD(C, out), false, "a PNG grid (4 per row for 16 images, 2-pixel padding)"},
          {"out-dir", DIFFUSE_OPTION_FIELD(C, out_dir), false, "a directory of single PNGs `00000.png`, ..."},
          {"out-raw", DIFFUSE_OPTION_FIELD(C, out_raw), false,
           "a `.safetensors` file of the final samples before clamping and quantisation (tensor `samples`, NCHW f32)"},
          {"noise", DIFFUSE_OPTION_FIELD(C, noise), false,
           "start from this noise instead of the seed's: a `.safetensors` file with tensor `noise`, NCHW f32, one per "
           "image"},
          {"device", DIFFUSE_OPTION_FIELD(C, device), false, "`cpu` or `cuda`", options::available_device()},
      }};
  return table;
}

// Every output is checked before any work: a wrong extension or an unwritable place is one line
// naming its flag, not a failure after all the sampling.
void check_outputs(const SampleCliOptions& own) {
  if (own.out.empty() && own.out_dir.empty() && own.out_raw.empty())
    throw Error("--out or --out-dir is required (or --out-raw for the raw samples)", ErrorKind::usage);
  if (!own.out.empty()) check_output_file("--out", own.out, ".png");
  if (!own.out_dir.empty()) options::check_output_directory(own.out_dir, "--out-dir");
  if (!own.out_raw.empty()) check_output_file("--out-raw", own.out_raw, ".safetensors");
  if (!own.noise.empty() && !std::filesystem::is_regular_file(own.noise))
    throw Error("--noise " + own.noise + ": no such file", ErrorKind::bad_input);
}

// --n images are held twice in f32 (the library's result and this command's buffer; the
// activations are checked by the library per batch): a count that cannot fit in memory, or that
// write_png's int cannot hold, is refused naming --n instead of ending in std::bad_alloc.
void check_image_memory(int64_t count, size_t image_elements) {
  if (count > std::numeric_limits<int>::max())
    throw Error("--n " + std::to_string(count) + ": at most " + std::to_string(std::numeric_limits<int>::max()),
                ErrorKind::usage);
  const double bytes = 2.0 * static_cast<double>(count) * static_cast<double>(image_elements) * sizeof(float);
  const double available = available_memory(Device::cpu);
  if (available > 0 && bytes > available) {
    char text[160];
    std::snprintf(text, sizeof text, ": the images need about %.1f GiB, more than the %.1f GiB available (MemAvailable)",
                  bytes / (1 << 30), available / (1 << 30));
    throw Error("--n " + std::to_string(count) + text, ErrorKind::usage);
  }
}

// Runs the pipeline with one progress display per batch: each batch counts its own steps
// 1..steps under its batch number, as the library's GenerateProgress reports them.
void sample_with_progress(const Pipeline& pipeline, const GenerateRequest& request, std::vector<float>& images) {
  const int64_t batches = (request.count + request.batch - 1) / request.batch;  // batch > 0: validated
  std::unique_ptr<Progress> progress;
  int shown_batch = -1;
  pipeline.generate(request, images.data(), images.size(), [&](int batch, int step, int steps) {
    if (batch != shown_batch) {
      std::string label = "sample";
      if (batches > 1) label += " batch " + std::to_string(batch + 1) + "/" + std::to_string(batches);
      progress = std::make_unique<Progress>(label, steps, stdout_is_terminal(), steps);
      shown_batch = batch;
    }
    progress->update(step, "", 0.0);
    return true;
  });
}

}  // namespace

int cmd_sample(int argc, char** argv) {
  cxxopts::Options cli("diffuse sample", "Generate images from a model directory.");
  add_flags(cli, cli_table());
  add_flags(cli, options::sampler_table());
  add_flags(cli, options::generate_table());
  add_help_flags(cli);
  auto args = parse_flags(cli, argc, argv);
  if (answer_help(args, cli,
                  options::kMarkdownHeader + options::markdown_rows(cli_table()) +
                      options::markdown_rows(options::sampler_table()) +
                      options::markdown_rows(options::generate_table())))
    return 0;
  SampleCliOptions own;
  SamplerOptions sampler;
  GenerateRequest request;
  read_flags(args, cli_table(), own);
  read_flags(args, options::sampler_table(), sampler);
  read_flags(args, options::generate_table(), request);
  if (args.count("print-options")) {
    nlohmann::json values;
    add_values(cli_table(), own, values);
    add_values(options::sampler_table(), sampler, values);
    add_values(options::generate_table(), request, values);
    std::cout << values.dump(2) << "\n";
    return 0;
  }
  options::check(cli_table(), own, options::Naming::flag);
  options::validate(sampler, options::Naming::flag);
  options::validate(request, options::Naming::flag);
  options::check_precision(request, own.device, options::Naming::flag);
  check_outputs(own);

  Model model = Model::load(own.model, own.device, own.variant);
  if (model.directory() != own.model) std::cout << "sample: model " << model.directory() << "\n";
  options::check_class_label(request, model.num_classes(), options::Naming::flag);
  options::check_inference_steps(
      sampler,
      sampling_scheduler_config(sampler.scheduler_config, model.scheduler_config_json(), model.directory())
          .num_train_timesteps,
      options::Naming::flag);
  Pipeline pipeline(model, sampler);
  const int side = model.sample_size(), channels = model.channels();
  if (!own.noise.empty()) request.initial_noise = read_noise_file(own.noise, request.count, channels, side);
  request.clamp = own.out_raw.empty();  // the PNGs clamp anyway; the raw file keeps what the sampler made
  check_image_memory(request.count, pipeline.image_elements());
  std::vector<float> images(static_cast<size_t>(request.count) * pipeline.image_elements());
  sample_with_progress(pipeline, request, images);

  const int count = static_cast<int>(request.count);
  if (!own.out.empty()) {
    std::filesystem::path parent = std::filesystem::path(own.out).parent_path();
    if (!parent.empty()) create_directories(parent.string(), "the directory of --out");
    write_png(own.out, images.data(), count, side, side, channels);
    std::cout << "wrote " << own.out << " (" << count << " images)\n";
  }
  if (!own.out_dir.empty()) {
    std::filesystem::path out_dir = own.out_dir;
    create_directories(out_dir.string(), "--out-dir");
    for (int i = 0; i < count; ++i) {
      char name[32];
      std::snprintf(name, sizeof name, "%05d.png", i);
      write_png((out_dir / name).string(), images.data() + static_cast<size_t>(i) * pipeline.image_elements(), 1, side,
                side, channels);
    }
    std::cout << "wrote " << count << " images to " << out_dir.string() << "\n";
  }
  if (!own.out_raw.empty()) {
    write_raw_samples(own.out_raw, images, request.count, side, channels);
    std::cout << "wrote " << own.out_raw << " (samples, " << count << " x " << channels << " x " << side << " x " << side
              << " f32)\n";
  }
  return 0;
}

}  // namespace diffuse::cli
