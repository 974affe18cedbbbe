// See op_profile_run.h: the profiled steps of `diffuse bench train|sample --profile`.
#include "benchmarks/op_profile_run.h"

#include <algorithm>
#include <memory>
#include <ostream>

#include "benchmarks/bench.h"
#include "benchmarks/measure.h"
#include "engine/sampler.h"
#include "engine/unet_denoiser.h"
#include "nn/autograd.h"
#include "nn/layers.h"

namespace diffuse::bench {

namespace {

// The profile's JSON and its table on out, with what the steps were.
nlohmann::json report(const op_profile::Profile& p, const std::string& what, std::ostream& out) {
  out << strf("op profile: %s, %lld profiled step%s (eager%s)\n", what.c_str(), (long long)p.steps,
              p.steps == 1 ? "" : "s",
              p.device == Device::cuda
                  ? ": a CUDA graph replay cannot be split by op; ms/step is GPU time between consecutive "
                    "ops' CUDA events, host ms/step the host's time between their seam entries"
                  : "; ms/step is the host clock between consecutive ops' seam entries")
      << op_profile::format_table(p, kProfileTableRows) << std::flush;
  nlohmann::json j = profile_json(p);
  j["what"] = what;
  return j;
}

}  // namespace

nlohmann::json profile_json(const op_profile::Profile& p) {
  nlohmann::json ops = nlohmann::json::array();
  for (const op_profile::OpRow& r : p.ops)
    ops.push_back({{"op", r.op}, {"calls_per_step", r.calls}, {"ms_per_step", r.ms}, {"host_ms_per_step", r.host_ms},
                   {"share", r.share}});
  return {{"device", device_name(p.device)}, {"steps", p.steps}, {"step_ms", p.step_ms},
          {"host_step_ms", p.host_step_ms}, {"rest_ms", p.rest_ms}, {"host_rest_ms", p.host_rest_ms},
          {"before_backward_ms", p.before_backward_ms}, {"backward_ms", p.backward_ms},
          {"after_backward_ms", p.after_backward_ms},
          {"ops", ops}};
}

nlohmann::json profile_train_steps(TrainStep& timed, const UNet2DConfig& cfg, collective::Communicator* comm,
                                   const Batch& batch, int64_t first_step, int64_t steps, std::ostream& out) {
  const Device device = timed.options().device;
  int64_t step = first_step;
  std::unique_ptr<TrainStep> fresh;
  if (timed.replaying()) {  // a replay cannot be split by op, and a captured step cannot go back to eager
    fresh = std::make_unique<TrainStep>(cfg, timed.options());
    fresh->set_communicator(comm);
  }
  TrainStep& train_step = fresh ? *fresh : timed;
  train_step.set_cuda_graphs(false);
  for (int64_t i = 0; fresh && i < TrainStep::kWarmupSteps; ++i, ++step) {
    const TrainStepResult& res = train_step.run(step, batch);
    if (!res.non_finite.empty())
      throw Error("bench train --profile: step " + std::to_string(step) + ": " + res.non_finite);
  }
  op_profile::Profiler profiler(device);
  for (int64_t counted = 0, tries = 0; counted < steps; ++tries) {
    if (tries >= steps + 2) throw Error("bench train --profile: the profiled steps kept outgrowing the event pool");
    profiler.begin_step();
    try {
      train_step.enqueue(step, batch);
    } catch (...) {
      profiler.cancel_step();
      throw;
    }
    if (profiler.end_step()) ++counted;
    const TrainStepResult& res = train_step.collect().back();
    if (!res.non_finite.empty())
      throw Error("bench train --profile: step " + std::to_string(step) + ": " + res.non_finite);
    ++step;
  }
  const TrainOptions& o = train_step.options();
  return report(profiler.result(),
                strf("training step, batch %lld, %s%s", (long long)batch.images.dim(0), o.precision.c_str(),
                     fresh ? " (a second TrainStep: the timed one replays a CUDA graph)" : ""),
                out);
}

nlohmann::json profile_sample_steps(UNet2D& model, const std::string& sampler_name, const Tensor& x_T, uint64_t seed,
                                    bool bf16, int64_t steps, std::ostream& out) {
  const Device device = x_T.device();
  SchedulerConfig sc;
  sc.kind = parse_sampler_kind(sampler_name, "--samplers");
  Sampler sampler(sc, nominal_steps(sampler_name));
  NoGrad no_grad;
  const AutocastBf16 autocast(bf16);
  SampleOptions opt;
  opt.seed = seed;
  opt.cuda_graphs = false;  // eager: a replay cannot be split by op
  op_profile::Profiler profiler(device);
  // Step 0 is not counted (it sets up what later steps reuse); a step the pool was too small for
  // is not counted either. The last begun step is dropped when the loop ends first.
  int64_t counted = 0;
  bool open = true;
  profiler.begin_step();
  try {
    sampler.sample(unet_tensor_denoiser(model, Tensor(), false), x_T, opt,
                   [&](int64_t i, int64_t, const Tensor&, const Tensor&) {
                     if (profiler.end_step(i > 0)) ++counted;
                     open = false;
                     if (counted >= steps) return false;
                     profiler.begin_step();
                     open = true;
                     return true;
                   });
  } catch (...) {
    if (open) profiler.cancel_step();
    throw;
  }
  if (open) profiler.cancel_step();
  if (counted < steps)
    throw Error("bench sample --profile: " + sampler_name + " has " + std::to_string(sampler.num_steps()) +
                " steps, too few for 1 + " + std::to_string(steps) + " profiled ones");
  return report(profiler.result(),
                strf("%s sampling step, batch %lld, %s", sampler_name.c_str(), (long long)x_T.dim(0),
                     bf16 ? "bf16" : "fp32"),
                out);
}

}  // namespace diffuse::bench
