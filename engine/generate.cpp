// See generate.h. Each batch is one run of the sampling loop, Sampler::sample, over the UNet denoise
// callback (engine/unet_denoiser.h): with guidance, the unconditional and conditional halves go
// through the UNet as one batch of 2B (null labels first), so a guided step costs one forward. The
// loop is the tensor-timestep one, so on CUDA the steps after the first two replay a CUDA graph
// (engine/sampler_graph.cpp) unless cuda_graphs is off.
#include "engine/generate.h"

#include <algorithm>
#include <cmath>
#include <iostream>

#include "engine/options.h"
#include "engine/sampler.h"
#include "engine/unet_denoiser.h"
#include "kernels/philox.h"
#include "nn/autograd.h"
#include "nn/layers.h"

namespace diffuse {

uint64_t batch_noise_seed(uint64_t seed, int64_t batch_index) {
  philox::U32x4 r = philox::block(seed, philox::kSampler, (uint64_t(1) << 63) + static_cast<uint64_t>(batch_index));
  return (static_cast<uint64_t>(r.v[1]) << 32) | r.v[0];
}

namespace {

// Restores the model's training flag however generate() exits.
struct EvalMode {
  UNet2D& m;
  bool was;
  explicit EvalMode(UNet2D& model) : m(model), was(model.training()) { m.set_training(false); }
  ~EvalMode() { m.set_training(was); }
};

// The caller's x_T as a host tensor of `shape`, or an undefined tensor when it gave none. Its size
// must match the request exactly and every value must be finite: noise with a NaN would sample
// NaN images without a word.
Tensor checked_initial_noise(const GenerateRequest& g, const Shape& shape) {
  if (g.initial_noise.empty()) return Tensor();
  const size_t need = static_cast<size_t>(shape_numel(shape));
  if (g.initial_noise.size() != need)
    throw Error("GenerateRequest::initial_noise holds " + std::to_string(g.initial_noise.size()) + " floats; " +
                    std::to_string(g.count) + " images of " + shape_str(Shape(shape.begin() + 1, shape.end())) +
                    " (NHWC) need " + std::to_string(need),
                ErrorKind::usage);
  for (size_t i = 0; i < need; ++i)
    if (!std::isfinite(g.initial_noise[i]))
      throw Error("GenerateRequest::initial_noise[" + std::to_string(i) + "] is not finite", ErrorKind::bad_input);
  Tensor noise = Tensor::empty(shape);
  std::copy(g.initial_noise.begin(), g.initial_noise.end(), noise.data<float>());
  return noise;
}

}  // namespace

Tensor generate(UNet2D& model, const SchedulerConfig& scheduler, const GenerateOptions& g,
                const GenerateCallback& callback) {
  const UNet2DConfig& mc = model.config();
  // The request's own checks are the option table's (engine/options.h), as for the public API.
  options::validate(static_cast<const GenerateRequest&>(g), options::Naming::field);
  if (mc.in_channels != mc.out_channels)
    throw Error("generate: the model maps " + std::to_string(mc.in_channels) + " channels to " +
                std::to_string(mc.out_channels) + "; sampling needs them equal");
  const bool conditional = mc.num_class_embeds.has_value();
  const int64_t null_class = conditional ? *mc.num_class_embeds - 1 : -1;
  options::check_class_label(g, static_cast<int>(conditional ? null_class : 0), options::Naming::field);
  options::check_precision(g, model.device(), options::Naming::field);
  const bool guided = conditional && g.class_label >= 0 && g.guidance != 1.0;

  SchedulerConfig cfg = scheduler;
  cfg.eta = g.eta;
  Sampler sampler(cfg, g.steps);
  NoGrad no_grad;
  const AutocastBf16 autocast(g.precision == "bf16");  // the UNet's GEMM-shaped layers (nn/layers.h)
  EvalMode eval(model);
  const Device device = model.device();
  const int64_t S = mc.sample_size, C = mc.in_channels;
  const Tensor given_noise = checked_initial_noise(g, {g.count, S, S, C});
  Tensor out = Tensor::empty({g.count, S, S, C});
  bool graphs = g.cuda_graphs;

  for (int64_t b0 = 0, k = 0; b0 < g.count; b0 += g.batch, ++k) {
    const int64_t nb = std::min(g.batch, g.count - b0);
    SampleOptions opt;
    opt.seed = batch_noise_seed(g.seed, k);
    if (guided) opt.guidance = g.guidance;

    Tensor labels;
    if (conditional) {
      int64_t label = g.class_label >= 0 ? g.class_label : null_class;
      std::vector<double> l(static_cast<size_t>(guided ? 2 * nb : nb), static_cast<double>(label));
      if (guided) std::fill(l.begin(), l.begin() + nb, static_cast<double>(null_class));
      labels = Tensor::from(l, {static_cast<int64_t>(l.size())}, DType::i64).to(device);
    }
    opt.cuda_graphs = graphs;
    opt.on_graph_fallback = [&](const std::string& why) {
      graphs = false;  // a capture that failed once fails again: later batches run eagerly, unannounced
      if (g.on_notice)
        g.on_notice(why);
      else
        std::cerr << "diffuse: " << why << "\n";
    };
    bool cancelled = false;
    Tensor x_T = given_noise.defined() ? given_noise.slice0(b0, b0 + nb).clone() : Sampler::initial_noise({nb, S, S, C}, opt.seed);
    Tensor x = sampler.sample(unet_tensor_denoiser(model, labels, guided), x_T.to(device),
                              opt, [&](int64_t i, int64_t n, const Tensor&, const Tensor&) {
                                cancelled = callback && !callback(k, i + 1, n);
                                return !cancelled;
                              });
    if (cancelled) throw Error("generate: cancelled");
    Tensor host = x.to(Device::cpu);
    if (g.clamp) {
      float* p = host.data<float>();
      for (int64_t j = 0; j < host.numel(); ++j) p[j] = std::clamp(p[j], -1.0f, 1.0f);
    }
    out.slice0(b0, b0 + nb).copy_from(host);
  }
  return out;
}

}  // namespace diffuse
