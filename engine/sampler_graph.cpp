// Sampler::sample for a model that reads its timestep from a tensor (engine/sampler.h), and with
// it the sampler step as one CUDA graph (docs/design.md §4). A replay repeats its captured kernel
// arguments, so nothing that changes from step to step may be an argument: on CUDA every step's
// denoise_step descriptor and timestep are uploaded once, as one table, and before each step one
// device-to-device copy on the stream (queued outside any capture, no host wait) puts step i's
// row into the small tensor whose two views the per-step denoise_step kernel and the model read.
// Under bf16 autocast the layers' weight casts are kept for the loop (KeepBf16Weights, nn/layers.h):
// the first step makes them, so the captured step casts only the UNet's sample and output.
// Eager steps run exactly the work a replay repeats, so graphs on or off give the same bits. A
// replayed step thus costs the host that copy and one graph launch: no synchronisation and no
// host copy (tests/cuda/test_cuda_graphs_sampler.cpp counts both on the emulated device).
//
// Capture: after Sampler::kGraphWarmupSteps eager steps (the caching allocator then holds every
// block a step uses, nn/cuda/graph.h) the step is captured once, then replayed, the captured step
// included.
// The labels a replay reads were range-checked on the host by the eager steps (ops::embedding
// cannot read them back while capturing), and they do not change during a run.
#include <cstring>
#include <vector>

#include "engine/sampler.h"
#include "engine/sampler_units.h"
#include "nn/autograd.h"
#include "nn/device_graph.h"
#include "nn/layers.h"
#include "nn/ops.h"

namespace diffuse {

namespace k = kernels;

namespace {

// Row i: step i's full descriptor as the i64 words a per_step tensor holds, then its timestep.
Tensor step_table(const Sampler& sampler, const Tensor& x, const SampleOptions& opt) {
  const int64_t words = ops::denoise_step_desc_words();
  Tensor table = Tensor::empty({sampler.num_steps(), words + 1}, DType::i64);
  for (int64_t i = 0; i < sampler.num_steps(); ++i) {
    const k::DenoiseStepDesc d = sampler.full_step_desc(i, x, opt);
    k::validate(d);  // the kernel reads these unchecked
    int64_t* row = table.data<int64_t>() + i * (words + 1);
    std::memcpy(row, &d, sizeof d);
    row[words] = sampler.timesteps()[i];
  }
  return table;
}

}  // namespace

Tensor Sampler::sample(const TensorModelFn& model, const Tensor& x_T, const SampleOptions& opt,
                       const StepFn& on_step) const {
  if (!x_T.defined()) sampler_detail::fail("x_T is undefined");
  NoGrad no_grad;
  const KeepBf16Weights kept;  // under autocast, the weights' bf16 copies are made once (before any capture)
  Tensor x = x_T.detach().clone();
  Tensor x0 = Tensor::zeros(x.shape(), x.dtype(), x.device());
  const Device device = x.device();
  const bool on_cuda = device == Device::cuda;
  const int64_t n = num_steps();

  // One row per step, uploaded once: on CUDA the descriptor words then the timestep, so one
  // device-to-device copy a step fills both `per_step` and `t` (views of `row`); on the CPU the
  // timestep alone (its steps take their descriptor by value).
  const int64_t words = ops::denoise_step_desc_words();
  const Tensor table = on_cuda ? step_table(*this, x, opt).to(device)
                               : Tensor::from(std::vector<double>(plan_.timesteps.begin(), plan_.timesteps.end()),
                                              {n, 1}, DType::i64);
  Tensor row = Tensor::empty({table.dim(1)}, DType::i64, device);
  const Tensor t = row.slice0(table.dim(1) - 1, table.dim(1));
  const Tensor per_step = on_cuda ? row.slice0(0, words) : Tensor();
  std::vector<Tensor> rows;  // the table's rows as views, made before the loop
  for (int64_t r = 0; r < n; ++r) rows.push_back(table.slice0(r, r + 1).view({table.dim(1)}));
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

  SampleStats unused;
  SampleStats& stats = opt.stats ? *opt.stats : unused;
  stats = SampleStats{};
  bool graphs = opt.cuda_graphs && on_cuda;
  DeviceGraph graph;
  for (i = 0; i < n; ++i) {
    row.copy_from(rows[i]);  // no host wait: device to device on CUDA
    if (graphs && i >= kGraphWarmupSteps && !graph.ok()) {
      graph = DeviceGraph::capture(run_step);
      if (!graph.ok()) {
        graphs = false;
        stats.graph_refused = graph.why();
        if (opt.on_graph_fallback)
          opt.on_graph_fallback("sampler: CUDA graph capture failed, the steps run eagerly: " + graph.why());
      }
    }
    if (graph.ok()) {
      graph.replay();
      ++stats.graph_replays;
    } else {
      run_step();
      ++stats.eager_steps;
    }
    if (on_step && !on_step(i, n, x, x0)) break;
  }
  return x;
}

}  // namespace diffuse
