// `diffuse forward`: runs the UNet once on tensors from a safetensors file — the debugging handle
// for parity with any other implementation. Inputs are as PyTorch writes them: `sample` NCHW,
// `timestep` (int64 or float32; a scalar or one per sample), optional `class_labels`. Writes `out`
// NCHW. With --grad-out, also writes d(sum(out * weight))/d(parameter) for every parameter, in
// diffusers' names and layouts, using the input file's `weight` tensor (NCHW, out's shape).
// Unlike train and sample, this stays on engine and nn internals: it is a developer's handle on
// tensors, autograd and parameter gradients, none of which the public API (a library user's view:
// images in, images out) has; exposing them would freeze nn's types as a stable surface.
#include <cxxopts.hpp>
#include <iostream>

#include "engine/model_dir.h"
#include "nn/autograd.h"
#include "nn/layout.h"
#include "nn/ops.h"
#include "nn/runtime.h"
#include "nn/safetensors.h"
#include "tools/commands.h"
#include "tools/cli_util.h"
#include "tools/option_flags.h"

namespace diffuse::cli {

int cmd_forward(int argc, char** argv) {
  cxxopts::Options cli("diffuse forward", "Run the UNet once on tensors from a safetensors file.");
  cli.add_options()
    ("model", "model directory (diffusers layout or bare UNet)", cxxopts::value<std::string>())
    ("input", "safetensors with `sample` (NCHW), `timestep`, optional `class_labels`", cxxopts::value<std::string>())
    ("out", "output safetensors (tensor `out`, NCHW)", cxxopts::value<std::string>())
    ("grad-out", "also write parameter gradients of sum(out * weight) here", cxxopts::value<std::string>())
    ("device", "cpu or cuda", cxxopts::value<std::string>()->default_value("cpu"))
    ("h,help", "show this help");
  add_flags(cli, options::thread_table());
  auto args = parse_flags(cli, argc, argv);
  if (args.count("help")) {
    std::cout << cli.help() << "\n";
    return 0;
  }
  options::ThreadOptions threads;
  read_flags(args, options::thread_table(), threads);
  options::check(options::thread_table(), threads, options::Naming::flag);
  std::string model_path = required(args, "model"), input = required(args, "input"), out_path = required(args, "out");
  Device device = parse_device(args);
  set_cpu_threads(threads.threads);

  auto model = load_unet(locate_model_dir(model_path));
  model->to(device);
  SafetensorsFile in = SafetensorsFile::open(input);
  for (const char* name : {"sample", "timestep"})
    if (!in.contains(name)) throw Error(input + ": tensor `" + std::string(name) + "` is missing");
  Tensor sample = in.get("sample", DType::f32);
  if (sample.ndim() != 4) throw Error(input + ": `sample` must be NCHW, got " + sample.describe());
  Tensor x = nchw_to_nhwc(sample).to(device);
  std::string tdt = in.dtype("timestep");
  Tensor t = in.get("timestep", tdt == "F32" || tdt == "F64" || tdt == "F16" || tdt == "BF16" ? DType::f32 : DType::i64);
  Tensor labels = in.contains("class_labels") ? in.get("class_labels", DType::i64) : Tensor();

  bool want_grads = args.count("grad-out") > 0;
  if (want_grads) {
    if (!in.contains("weight")) throw Error(input + ": --grad-out needs a tensor `weight` shaped like the output");
    model->set_requires_grad(true);
  }
  Tensor out;
  if (want_grads) {
    out = model->forward(x, t, labels);
    Tensor w = nchw_to_nhwc(in.get("weight", DType::f32)).to(device);
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
  save_safetensors(out_path, {{"out", nhwc_to_nchw(out.to(Device::cpu))}});
  std::cout << "wrote " << out_path << " (out " << shape_str(nhwc_to_nchw(out.to(Device::cpu)).shape()) << ")\n";
  return 0;
}

}  // namespace diffuse::cli
