// `diffuse forward`: runs the UNet once on tensors from a safetensors file — the debugging handle
// for parity with any other implementation. Inputs are as PyTorch writes them: `sample` NCHW,
// `timestep` (int64 or float32; a scalar or one per sample), optional `class_labels`. Writes `out`
// NCHW. With --grad-out, also writes d(sum(out * weight))/d(parameter) for every parameter, in
// diffusers' names and layouts, using the input file's `weight` tensor (NCHW, out's shape).
// With --random-input instead of --input, the inputs are made up from the model's config under
// --seed (--batch samples of N(0, 1) noise, timesteps uniform in the scheduler's [0, T), labels
// among the model's classes) and written into the output file beside `out`, so that file is
// itself an --input for the next run or for benchmarks/reference/forward.py.
// Unlike train and sample, this stays on engine and nn internals: it is a developer's handle on
// tensors, autograd and parameter gradients, none of which the public API (a library user's view:
// images in, images out) has; exposing them would freeze nn's types as a stable surface.
#include <algorithm>
#include <cmath>
#include <cxxopts.hpp>
#include <iostream>

#include "engine/model_dir.h"
#include "engine/scheduler_config.h"
#include "kernels/philox.h"
#include "nn/autograd.h"
#include "nn/layers.h"
#include "nn/layout.h"
#include "nn/ops.h"
#include "nn/runtime.h"
#include "nn/safetensors.h"
#include "tools/commands.h"
#include "tools/cli_util.h"
#include "tools/option_flags.h"

namespace diffuse::cli {

namespace {

// The input file's tensors as `forward` uses them (host, NCHW): sample and weight f32, timestep
// f32 or i64 as stored, class_labels i64.
std::vector<std::pair<std::string, Tensor>> read_inputs(const std::string& input) {
  SafetensorsFile in = SafetensorsFile::open(input);
  for (const char* name : {"sample", "timestep"})
    if (!in.contains(name)) throw Error(input + ": tensor `" + std::string(name) + "` is missing");
  std::vector<std::pair<std::string, Tensor>> tensors{{"sample", in.get("sample", DType::f32)}};
  std::string tdt = in.dtype("timestep");
  tensors.emplace_back("timestep", in.get("timestep", tdt == "F32" || tdt == "F64" || tdt == "F16" || tdt == "BF16"
                                                          ? DType::f32
                                                          : DType::i64));
  if (in.contains("class_labels")) tensors.emplace_back("class_labels", in.get("class_labels", DType::i64));
  if (in.contains("weight")) tensors.emplace_back("weight", in.get("weight", DType::f32));
  return tensors;
}

// `batch` uniform integers in [0, n) from Philox stream `stream` under `seed`, as i64.
Tensor random_integers(int64_t batch, int64_t n, uint64_t seed, uint32_t stream) {
  std::vector<double> u = Tensor::rand({batch}, seed, stream).to_vector();
  for (double& v : u) v = std::min(std::floor(v * static_cast<double>(n)), static_cast<double>(n - 1));
  return Tensor::from(u, {batch}, DType::i64);
}

// T of the model's scheduler config (diffusers' default T = 1000 without one).
int64_t train_timesteps(const ModelDirectory& located) {
  return located.scheduler_config_path.empty() ? SchedulerConfig{}.num_train_timesteps
                                               : read_scheduler_config(located.scheduler_config_path).num_train_timesteps;
}

// A file's inputs must be numbers the model can mean: a finite sample, and timesteps in [0, T]
// (a NaN or a float's bits stored as I32 would otherwise run and print a result).
void check_inputs(const std::string& input, const std::vector<std::pair<std::string, Tensor>>& tensors, int64_t T) {
  for (const auto& [name, t] : tensors) {
    if (name != "sample" && name != "timestep") continue;
    const std::vector<double> v = t.to_vector();
    for (size_t i = 0; i < v.size(); ++i) {
      const bool ok = name == "sample" ? std::isfinite(v[i]) : (v[i] >= 0 && v[i] <= static_cast<double>(T));
      if (!ok)
        throw Error(input + ": `" + name + "` element " + std::to_string(i) + " is " + std::to_string(v[i]) +
                        (name == "sample" ? ": expected a finite number"
                                          : ": expected a timestep in [0, " + std::to_string(T) + "] (the scheduler's T)"),
                    ErrorKind::bad_input);
    }
  }
}

// An input of the model's shape: `sample` N(0, 1) NCHW, `timestep` uniform in [0, T) of the
// model's scheduler config (diffusers' default T = 1000 without one), `class_labels` among its
// class embeddings (the null class too), and with --grad-out a N(0, 1) `weight`.
std::vector<std::pair<std::string, Tensor>> random_inputs(const UNet2D& model, const ModelDirectory& located,
                                                          int64_t batch, uint64_t seed, bool with_weight) {
  const UNet2DConfig& c = model.config();
  const int64_t T = train_timesteps(located);
  const Shape in_shape{batch, c.in_channels, c.sample_size, c.sample_size};
  std::vector<std::pair<std::string, Tensor>> tensors{
      {"sample", Tensor::randn(in_shape, seed, philox::kNoise)},
      {"timestep", random_integers(batch, T, seed, philox::kTimesteps)}};
  if (c.num_class_embeds) tensors.emplace_back("class_labels", random_integers(batch, *c.num_class_embeds, seed, philox::kLabelDrop));
  if (with_weight) {
    const Shape out_shape{batch, c.out_channels, c.sample_size, c.sample_size};
    // After the sample's Philox blocks, so the weight is independent of it.
    tensors.emplace_back("weight", Tensor::randn(out_shape, seed, philox::kNoise,
                                                 philox::blocks_for(static_cast<uint64_t>(shape_numel(in_shape)))));
  }
  return tensors;
}

}  // namespace

int cmd_forward(int argc, char** argv) {
  cxxopts::Options cli("diffuse forward", "Run the UNet once on tensors from a safetensors file.");
  cli.add_options()
    ("model", "model directory (diffusers layout or bare UNet), or a checkpoint or training run: their ema/",
     cxxopts::value<std::string>())
    ("variant", "load the weights variant diffusion_pytorch_model.VARIANT.safetensors (e.g. fp16)",
     cxxopts::value<std::string>()->default_value(""))
    ("input", "safetensors with `sample` (NCHW), `timestep`, optional `class_labels`", cxxopts::value<std::string>())
    ("random-input", "make the input from the model's config instead (written into --out too)")
    ("batch", "samples in a --random-input", cxxopts::value<int64_t>()->default_value("1"))
    ("seed", "seed of a --random-input", cxxopts::value<uint64_t>()->default_value("0"))
    ("out", "output safetensors (tensor `out`, NCHW)", cxxopts::value<std::string>())
    ("grad-out", "also write parameter gradients of sum(out * weight) here", cxxopts::value<std::string>())
    ("device", "cpu or cuda", cxxopts::value<std::string>()->default_value("cpu"))
    ("precision", "fp32, or bf16 with --device cuda (the UNet's activations in bf16 with f32 math; f32 output)",
     cxxopts::value<std::string>()->default_value("fp32"))
    ("h,help", "show this help");
  add_flags(cli, options::compute_table());
  auto args = parse_flags(cli, argc, argv);
  if (args.count("help")) {
    std::cout << cli.help() << "\n";
    return 0;
  }
  options::ComputeOptions compute;
  read_flags(args, options::compute_table(), compute);
  options::check(options::compute_table(), compute, options::Naming::flag);
  const bool random_input = args.count("random-input") > 0;
  if (random_input == (args.count("input") > 0))
    throw Error(random_input ? "--input and --random-input exclude each other" : "--input or --random-input is required",
                ErrorKind::usage);
  const int64_t random_batch = args["batch"].as<int64_t>();
  if (args.count("batch") && !random_input) throw Error("--batch needs --random-input", ErrorKind::usage);
  if (random_input && random_batch < 1)
    throw Error("--batch must be positive, got " + std::to_string(random_batch), ErrorKind::usage);
  std::string model_path = required(args, "model"), out_path = required(args, "out");
  Device device = parse_device(args);
  const std::string precision = args["precision"].as<std::string>();
  if (precision != "fp32" && precision != "bf16")
    throw Error("--precision " + precision + ": expected fp32 or bf16", ErrorKind::usage);
  if (precision == "bf16" && device != Device::cuda)
    throw Error("--precision bf16 needs --device cuda (the CPU has no bf16 kernels); use fp32", ErrorKind::usage);
  const AutocastBf16 autocast(precision == "bf16");  // the whole command: forward and backward
  set_cpu_threads(compute.threads);
  set_conv_search(compute.conv_search);

  ModelDirectory located = locate_model_dir(model_path, args["variant"].as<std::string>());
  auto model = load_unet(located);
  if (located.root != model_path) std::cout << "forward: model " << located.root << "\n";
  model->to(device);
  const bool want_grads = args.count("grad-out") > 0;
  const std::string input = random_input ? "--random-input" : args["input"].as<std::string>();
  std::vector<std::pair<std::string, Tensor>> inputs =
      random_input ? random_inputs(*model, located, random_batch, args["seed"].as<uint64_t>(), want_grads)
                   : read_inputs(input);
  if (!random_input) check_inputs(input, inputs, train_timesteps(located));
  auto find = [&](const std::string& name) {
    for (auto& [n, t] : inputs)
      if (n == name) return t;
    return Tensor();
  };
  Tensor sample = find("sample");
  if (sample.ndim() != 4) throw Error(input + ": `sample` must be NCHW, got " + sample.describe());
  Tensor x = nchw_to_nhwc(sample).to(device);
  Tensor t = find("timestep");
  Tensor labels = find("class_labels");

  if (want_grads) {
    if (!find("weight").defined()) throw Error(input + ": --grad-out needs a tensor `weight` shaped like the output");
    model->set_requires_grad(true);
  }
  Tensor out;
  if (want_grads) {
    out = model->forward(x, t, labels);
    Tensor w = nchw_to_nhwc(find("weight")).to(device);
    if (w.shape() != out.shape()) throw Error(input + ": `weight` " + w.describe() + " does not match the output " + out.describe());
    ops::sum(ops::mul(out, w)).backward();
    std::vector<std::pair<std::string, Tensor>> grads;
    for (auto& [name, p] : model->named_parameters()) {
      Tensor g = p->grad().to(Device::cpu);
      grads.emplace_back(name, g.ndim() == 4 ? ohwi_to_oihw(g) : g);
    }
    save_safetensors(args["grad-out"].as<std::string>(), grads);
  } else {
    NoGrad no_grad;
    out = model->forward(x, t, labels);
  }
  Tensor out_nchw = nhwc_to_nchw(out.to(Device::cpu));
  std::vector<std::pair<std::string, Tensor>> written{{"out", out_nchw}};
  if (random_input) written.insert(written.end(), inputs.begin(), inputs.end());
  save_safetensors(out_path, written);
  std::cout << "wrote " << out_path << " (out " << shape_str(out_nchw.shape())
            << (random_input ? " and the random input it was given" : "") << ")\n";
  return 0;
}

}  // namespace diffuse::cli
