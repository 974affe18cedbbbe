// `diffuse sample`: generates images from a model directory through the public API (Model,
// Pipeline, write_png in include/diffuse/diffuse.h) with DDPM, DDIM or DPM-Solver++(2M),
// optionally class-conditional with classifier-free guidance; writes one PNG grid (--out) or one
// PNG per image (--out-dir). Its flags are the option tables of SamplerOptions and GenerateRequest
// (engine/options.h) plus the CLI's own: the model directory, the outputs and the device.
#include <cstdio>
#include <cxxopts.hpp>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "diffuse/diffuse.h"
#include "engine/options.h"
#include "tools/cli_util.h"
#include "tools/commands.h"
#include "tools/option_flags.h"
#include "tools/progress.h"

namespace diffuse::cli {

namespace {

// What only the command line has: where the model comes from and where the images go.
struct SampleCliOptions {
  std::string model;
  std::string out;
  std::string out_dir;
  Device device = Device::cpu;
};

const options::Table<SampleCliOptions>& cli_table() {
  using C = SampleCliOptions;
  static const options::Table<C> table{
      "SampleCliOptions",
      {
          {"model", DIFFUSE_OPTION_FIELD(C, model), false,
           "the model directory (diffusers layout, a bare UNet directory, or a checkpoint's `model/` or `ema/`)",
           options::required()},
          {"out", DIFFUSE_OPTION_FIELD(C, out), false, "a PNG grid (4 per row for 16 images, 2-pixel padding)"},
          {"out-dir", DIFFUSE_OPTION_FIELD(C, out_dir), false, "a directory of single PNGs `00000.png`, ..."},
          {"device", DIFFUSE_OPTION_FIELD(C, device), false, "`cpu` or `cuda`", options::available_device()},
      }};
  return table;
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
  if (own.out.empty() && own.out_dir.empty()) throw Error("--out or --out-dir is required", ErrorKind::usage);

  Model model = Model::load(own.model, own.device);
  options::check_class_label(request, model.num_classes(), options::Naming::flag);
  Pipeline pipeline(model, sampler);
  const int side = model.sample_size(), channels = model.channels();
  std::vector<float> images(static_cast<size_t>(request.count) * pipeline.image_elements());
  const int64_t batches = (request.count + request.batch - 1) / request.batch;
  Progress progress("sample", batches * pipeline.steps(), stdout_is_terminal(), pipeline.steps());
  pipeline.generate(request, images.data(), images.size(), [&](int batch, int step, int steps) {
    progress.update(int64_t{batch} * steps + step, "batch " + std::to_string(batch + 1) + "/" + std::to_string(batches),
                    0.0);
    return true;
  });
  const int count = static_cast<int>(request.count);
  if (!own.out.empty()) {
    std::filesystem::path parent = std::filesystem::path(own.out).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent);
    write_png(own.out, images.data(), count, side, side, channels);
    std::cout << "wrote " << own.out << " (" << count << " images)\n";
  }
  if (!own.out_dir.empty()) {
    std::filesystem::path out_dir = own.out_dir;
    std::filesystem::create_directories(out_dir);
    for (int i = 0; i < count; ++i) {
      char name[32];
      std::snprintf(name, sizeof name, "%05d.png", i);
      write_png((out_dir / name).string(), images.data() + static_cast<size_t>(i) * pipeline.image_elements(), 1, side,
                side, channels);
    }
    std::cout << "wrote " << count << " images to " << out_dir.string() << "\n";
  }
  return 0;
}

}  // namespace diffuse::cli
