// Sampler::sample for a model that reads its timestep from a tensor (engine/sampler.h), and with
// it the sampler step as one CUDA graph (docs/design.md §4). A replay repeats its captured kernel
// arguments, so nothing that changes from step to step may be an argument: on CUDA every step's
// timestep and denoise_step descriptor are uploaded once, as tables, and before each step a
// device-to-device copy on the stream (queued outside any capture, no host wait) puts step i's
// row into the two small tensors the model and the per-step denoise_step kernel read. Eager
// steps run exactly the work a replay repeats, so graphs on or off give the same bits.
//
// Capture: after kWarmupSteps eager steps (the caching allocator then holds every block a step
// uses, nn/cuda/graph.h) the step is captured once, then replayed, the captured step included.
// The labels a replay reads were range-checked on the host by the eager steps (ops::embedding
// cannot read them back while capturing), and they do not change during a run.
#include <cstring>
#include <vector>

#include "engine/sampler.h"
#include "engine/sampler_units.h"
#include "nn/autograd.h"
#include "nn/device_graph.h"
#include "nn/ops.h"

namespace diffuse {

namespace k = kernels;

namespace {

constexpr int64_t kWarmupSteps = 2;

// Row i: step i's full descriptor as the i64 words a per_step tensor holds.
Tensor descriptor_table(const Sampler& sampler, const Tensor& x, const SampleOptions& opt) {
  const int64_t words = ops::denoise_step_desc_words();
  Tensor table = Tensor::empty({sampler.num_steps(), words}, DType::i64);
  for (int64_t i = 0; i < sampler.num_steps(); ++i) {
    const k::DenoiseStepDesc d = sampler.full_step_desc(i, x, opt);
    k::validate(d);  // the kernel reads these unchecked
    std::memcpy(table.data<int64_t>() + i * words, &d, sizeof d);
  }
  return table;
}

}  // namespace

Tensor Sampler::sample(const TensorModelFn& model, const Tensor& x_T, const SampleOptions& opt,
                       const StepFn& on_step) const {
  if (!x_T.defined()) sampler_detail::fail("x_T is undefined");
  NoGrad no_grad;
  Tensor x = x_T.detach().clone();
  Tensor x0 = Tensor::zeros(x.shape(), x.dtype(), x.device());
  const Device device = x.device();
  const bool on_cuda = device == Device::cuda;
  const int64_t n = num_steps();

  const std::vector<double> ts(plan_.timesteps.begin(), plan_.timesteps.end());
  const Tensor t_table = Tensor::from(ts, {n}, DType::i64).to(device);
  Tensor t = Tensor::empty({1}, DType::i64, device);
  const int64_t words = ops::denoise_step_desc_words();
  const Tensor desc_table = on_cuda ? descriptor_table(*this, x, opt).to(device) : Tensor();
  Tensor per_step = on_cuda ? Tensor::empty({words}, DType::i64, device) : Tensor();
  const k::DenoiseStepDesc launch = full_step_desc(0, x, opt);  // numel and guided: every step's

  int64_t i = 0;
  const auto run_step = [&] {
    Tensor out = model(x, t);
    check_step_buffers(out, x, x0, opt);
    if (opt.inside_capture_for_test) opt.inside_capture_for_test();
    if (on_cuda)
      ops::denoise_step(launch, out, x, x0, per_step);
    else
      ops::denoise_step(full_step_desc(i, x, opt), out, x, x0);
  };

  bool graphs = opt.cuda_graphs && on_cuda;
  DeviceGraph graph;
  for (i = 0; i < n; ++i) {
    t.copy_from(t_table.slice0(i, i + 1));
    if (on_cuda) per_step.copy_from(desc_table.slice0(i, i + 1).view({words}));
    if (graphs && i >= kWarmupSteps && !graph.ok()) {
      graph = DeviceGraph::capture(run_step);
      if (!graph.ok()) {
        graphs = false;
        if (opt.on_graph_fallback)
          opt.on_graph_fallback("sampler: CUDA graph capture failed, the steps run eagerly: " + graph.why());
      }
    }
    if (graph.ok())
      graph.replay();
    else
      run_step();
    if (on_step && !on_step(i, n, x, x0)) break;
  }
  return x;
}

}  // namespace diffuse
