// `diffuse bench train` and `diffuse bench sample`. The training step is the trainer's own
// TrainStep (engine/train_step.h) with the trainer's default options: q_sample, UNet forward, MSE,
// backward, grad-norm clipping, AdamW fused with the EMA, zero_grad — on a batch already resident
// on the device (data loading is not timed, here or in the PyTorch reference). On CUDA the step
// replays its CUDA graph as `diffuse train` does (unless cuda_graphs is off), so the timed steps
// are whole replays and their phase split is not measured; eager steps are split into forward +
// loss, backward and optimizer by waiting for the device between the phases. Sampling times the
// one sampling loop, Sampler::sample, over the UNet denoise callback the CLI uses
// (engine/unet_denoiser.h) that generate() runs: one UNet forward and one denoise_step per step,
// on CUDA replayed as one CUDA graph after the warm-up steps unless --cuda-graphs off. Every step
// costs the same whatever its timestep, so a run may stop the loop after the first K steps and
// extrapolate to the sampler's full count; the output says when it did. Under `mpirun -np K` the training
// step is data-parallel (docs/distributed.md): each rank times its own steps, rank 0 reports
// every rank's images/s, the aggregate (K·B over the slowest rank's median step) and the time the
// gradient all-reduce took.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <ostream>

#include "benchmarks/bench.h"
#include "benchmarks/flops.h"
#include "benchmarks/measure.h"
#include "benchmarks/op_profile_run.h"
#include "engine/dataset.h"
#include "engine/sampler.h"
#include "engine/train_step.h"
#include "engine/unet_denoiser.h"
#include "kernels/philox.h"
#include "nn/autograd.h"
#include "nn/collective.h"
#include "nn/device_context.h"
#include "nn/layers.h"
#include "nn/ops.h"
#include "nn/optim.h"
#include "nn/runtime.h"
#include "nn/unet2d.h"

namespace diffuse::bench {

namespace {

using clock = std::chrono::steady_clock;

// Milliseconds since t0 once the device has finished what was queued (the CPU runs synchronously;
// a CUDA build's stream exists only when a GPU does).
double ms_since(clock::time_point t0, Device device) {
  if (device == Device::cuda) synchronize_device();
  return std::chrono::duration<double, std::milli>(clock::now() - t0).count();
}

void check_precision(const std::string& precision, Device device) {
  if (precision == "fp32") return;
  if (precision != "bf16") throw Error("--precision " + precision + ": expected fp32 or bf16", ErrorKind::usage);
  if (device != Device::cuda) throw Error("--precision bf16 needs --device cuda", ErrorKind::usage);
}

}  // namespace

int64_t nominal_steps(const std::string& sampler) {
  if (sampler == "ddpm") return 1000;
  if (sampler == "ddim") return 50;
  if (sampler == "dpmpp-2m") return 20;
  throw Error("--samplers " + sampler + ": expected ddpm, ddim or dpmpp-2m", ErrorKind::usage);
}

nlohmann::json run_train_bench(const TrainBenchOptions& o, std::ostream& all_out) {
  collective::Communicator& comm = collective::world();
  std::ostream silent(nullptr);  // ranks other than 0 report through rank 0
  std::ostream& out = comm.rank() == 0 ? all_out : silent;
  check_precision(o.precision, o.device);
  if (o.device == Device::cuda) require_cuda_device();
  if (o.batch <= 0) throw Error("--batch must be positive, got " + std::to_string(o.batch), ErrorKind::usage);
  if (o.iters <= 0 || o.warmup < 0) throw Error("--iters must be positive and --warmup >= 0", ErrorKind::usage);
  const UNet2DConfig cfg = resolve_unet_config(o.config);
  const double baseline_rss = current_rss_mib();  // before the model and its buffers exist
  TrainOptions topt;  // the trainer's defaults (lr, clipping, EMA, schedule) for this model and batch
  topt.device = o.device;
  topt.batch = o.batch;
  topt.seed = o.seed;
  topt.precision = o.precision;  // bf16: TrainStep runs the forward under autocast (nn/layers.h)
  TrainStep train_step(cfg, topt);
  train_step.set_communicator(&comm);
  std::string graph_fallback;
  const bool graphs = o.device == Device::cuda && o.cuda_graphs;
  train_step.set_cuda_graphs(graphs, [&](const std::string& why) { graph_fallback = why; });
  UNet2D& model = train_step.model();
  const int64_t B = o.batch, S = cfg.sample_size;
  Batch batch;  // one batch, already on the device
  batch.images = Tensor::rand({B, S, S, int64_t(cfg.in_channels)}, o.seed, philox::kAugment).to(o.device);
  batch.images = ops::sub(ops::scale(batch.images, 2.0), Tensor::ones({1}, DType::f32, o.device));  // pixels in [-1, 1]

  out << strf("diffuse bench train: %s, batch %lld, %s, %lld parameters, %lld warm-up + %lld timed steps\n",
                o.config.c_str(), (long long)B, device_name(o.device), (long long)model.num_parameters(),
                (long long)o.warmup, (long long)o.iters);
  if (o.device == Device::cpu) out << cpu_setup_line();
  out << std::flush;
  // The gradient all-reduce per step (collective::GradientSync): the wait backward did not hide,
  // the whole span from the first bucket's start to the last one's completion, the buckets.
  std::vector<double> step_ms, fwd_ms, bwd_ms, opt_ms, allreduce_ms, allreduce_total_ms;
  collective::GradientSyncStats sync_before, sync_timed;
  double first_loss = 0, last_loss = 0;
  for (int64_t step = 1; step <= o.warmup + o.iters; ++step) {
    const auto t0 = clock::now();
    if (const collective::GradientSync* sync = train_step.gradient_sync()) sync_before = sync->stats();
    double f = 0, b = 0;
    // With graphs the step runs without phase callbacks (those force an eager step): queued, then
    // its status read back, which waits for the device.
    const TrainStepResult res = graphs ? train_step.run(step, batch)
                                       : train_step.run(step, batch, [&](TrainStep::Phase phase) {
                                           (phase == TrainStep::Phase::forward_loss ? f : b) = ms_since(t0, o.device);
                                         });
    if (!res.non_finite.empty()) throw Error("bench train: step " + std::to_string(step) + ": " + res.non_finite);
    const double total = ms_since(t0, o.device);
    const bool timed = step > o.warmup;
    if (graphs)
      out << strf("  step %lld%s: %.1f ms (%s), loss %.4f\n", (long long)step, timed ? "" : " (warm-up)", total,
                  train_step.replaying() ? "graph replay" : "eager", res.loss) << std::flush;
    else
      out << strf("  step %lld%s: %.1f ms (forward+loss %.1f, backward %.1f, optimizer %.1f), loss %.4f\n",
                  (long long)step, timed ? "" : " (warm-up)", total, f, b - f, total - b, res.loss) << std::flush;
    if (step == 1) first_loss = res.loss;
    last_loss = res.loss;
    if (!timed) continue;
    step_ms.push_back(total);
    if (!graphs) {
      fwd_ms.push_back(f);
      bwd_ms.push_back(b - f);
      opt_ms.push_back(total - b);
    }
    // A replayed step's all-reduce runs inside its graph: nothing the host can time apart from the step.
    if (const collective::GradientSync* sync = train_step.gradient_sync(); sync && sync->stats().steps > sync_before.steps) {
      const collective::GradientSyncStats& now = sync->stats();
      allreduce_ms.push_back((now.wait_seconds - sync_before.wait_seconds) * 1e3);
      allreduce_total_ms.push_back((now.total_seconds - sync_before.total_seconds) * 1e3);
      sync_timed.steps += now.steps - sync_before.steps;
      sync_timed.buckets += now.buckets - sync_before.buckets;
      sync_timed.buckets_during_backward += now.buckets_during_backward - sync_before.buckets_during_backward;
    }
  }
  // Every rank's throughput; the job's is the global batch over the slowest rank's step.
  const std::vector<double> rank_step_ms = comm.allgather(median_of(step_ms), "the benchmark's step times");
  std::vector<double> rank_images_per_second;
  for (double ms : rank_step_ms) rank_images_per_second.push_back(double(B) / (ms * 1e-3));
  const double slowest_ms = *std::max_element(rank_step_ms.begin(), rank_step_ms.end());
  nlohmann::json r = run_context(o.device);
  r["benchmark"] = "train";
  r["framework"] = "diffuse";
  r["mode"] = o.precision;
  r["config"] = o.config;
  r["batch"] = B;
  r["params"] = model.num_parameters();
  r["warmup"] = o.warmup;
  r["iters"] = o.iters;
  r["step_ms"] = median_of(step_ms);
  r["step_ms_all"] = step_ms;
  // Phases are null when the steps were not split (graphs on CUDA).
  const auto phase = [](const std::vector<double>& v) { return v.empty() ? nlohmann::json() : nlohmann::json(median_of(v)); };
  r["forward_ms"] = phase(fwd_ms);
  r["backward_ms"] = phase(bwd_ms);
  r["optimizer_ms"] = phase(opt_ms);
  // Whether the timed steps replayed the step's CUDA graph, and why not when graphs were asked for.
  r["cuda_graphs"] = train_step.replaying();
  if (!graph_fallback.empty()) r["cuda_graphs_fallback"] = graph_fallback;
  r["images_per_second"] = double(B * comm.size()) / (slowest_ms * 1e-3);
  r["ranks"] = comm.size();
  r["images_per_second_per_rank"] = rank_images_per_second;
  r["allreduce_ms"] = allreduce_ms.empty() ? 0.0 : median_of(allreduce_ms);
  r["allreduce_total_ms"] = allreduce_total_ms.empty() ? 0.0 : median_of(allreduce_total_ms);
  const double timed_steps = static_cast<double>(std::max<int64_t>(1, sync_timed.steps));
  r["allreduce_buckets"] = static_cast<double>(sync_timed.buckets) / timed_steps;
  r["allreduce_buckets_during_backward"] = static_cast<double>(sync_timed.buckets_during_backward) / timed_steps;
  // Data-parallel steps replayed as a CUDA graph: their all-reduce is NCCL nodes of the graph.
  const bool allreduce_in_graph = comm.distributed() && train_step.replaying() && allreduce_ms.empty();
  r["allreduce_in_graph"] = allreduce_in_graph;
  if (allreduce_in_graph && train_step.gradient_sync())
    r["allreduce_buckets"] = static_cast<double>(train_step.gradient_sync()->num_buckets());
  r["step_flops"] = unet_train_step_flops(cfg, B);
  r["gflops"] = r["step_flops"].get<double>() / (median_of(step_ms) * 1e-3) * 1e-9;
  r["loss_first"] = first_loss;
  r["loss_last"] = last_loss;
  r["baseline_rss_mib"] = baseline_rss;
  r["peak_rss_mib"] = peak_rss_mib();
  const std::string split =
      fwd_ms.empty() ? std::string(train_step.replaying() ? "CUDA graph replays" : "not split into phases")
                     : strf("forward+loss %.1f, backward %.1f, optimizer %.1f ms", median_of(fwd_ms), median_of(bwd_ms),
                            median_of(opt_ms));
  out << strf("median step %.1f ms = %.1f images/s (%s)\n", r["step_ms"].get<double>(),
              r["images_per_second"].get<double>(), split.c_str());
  if (!graph_fallback.empty()) out << graph_fallback << "\n";
  out << strf("%.1f GFLOP per step (convolutions, linears, attention; forward + backward) = %.1f GFLOP/s sustained; "
              "peak RSS %.0f MiB\n",
              r["step_flops"].get<double>() * 1e-9, r["gflops"].get<double>(), r["peak_rss_mib"].get<double>());
  if (o.profile_steps > 0) {
    r["profile"] = profile_train_steps(train_step, cfg, &comm, batch, o.warmup + o.iters + 1, o.profile_steps, out);
    out << strf("(the timed median step above: %.3f ms)\n", r["step_ms"].get<double>());
  }
  if (comm.distributed()) {
    std::string per_rank;
    for (size_t i = 0; i < rank_images_per_second.size(); ++i)
      per_rank += strf("%s%zu: %.1f", i ? ", " : "", i, rank_images_per_second[i]);
    out << strf("%d ranks (global batch %lld): images/s per rank {%s}; aggregate %.1f images/s\n", comm.size(),
                (long long)(B * comm.size()), per_rank.c_str(), r["images_per_second"].get<double>())
        << (allreduce_in_graph
                ? strf("gradient all-reduce per step: %.0f bucket%s of NCCL calls inside the replayed CUDA graph "
                       "(not timed apart from the step)\n",
                       r["allreduce_buckets"].get<double>(), r["allreduce_buckets"].get<double>() == 1 ? "" : "s")
                : strf("gradient all-reduce per step (median, rank 0): %.1f ms waited after backward, %.1f ms from the "
                       "first bucket's start to the last one's end; %.1f buckets, %.1f of them started during "
                       "backward\n",
                       r["allreduce_ms"].get<double>(), r["allreduce_total_ms"].get<double>(),
                       r["allreduce_buckets"].get<double>(), r["allreduce_buckets_during_backward"].get<double>()));
  }
  return r;
}

namespace {

// How a run's steps ran, for the table and the JSON: "graph" (the steps after the warm-up replayed
// one CUDA graph), "eager" (graphs off, or the CPU), "refused" (the capture failed; eager).
const char* graph_state(const SampleStats& st) {
  if (!st.graph_refused.empty()) return "refused";
  return st.graph_replays > 0 ? "graph" : "eager";
}

}  // namespace

nlohmann::json run_sample_bench(const SampleBenchOptions& o, std::ostream& out) {
  check_precision(o.precision, o.device);
  if (o.device == Device::cuda) require_cuda_device();
  for (const std::string& s : o.samplers) nominal_steps(s);
  for (int64_t b : o.batches)
    if (b <= 0) throw Error("--batch must be positive, got " + std::to_string(b), ErrorKind::usage);
  const UNet2DConfig cfg = resolve_unet_config(o.config);
  UNet2D model(cfg, o.seed);
  model.to(o.device);
  model.set_training(false);  // as generate() samples
  const int64_t S = cfg.sample_size;
  const bool graphs = o.cuda_graphs && o.device == Device::cuda;
  // The CPU cannot run 1000 UNet steps in a benchmark's time: by default it times 3 per sampler.
  const int64_t timed_default = o.device == Device::cpu ? 3 : 0;
  const int64_t timed_cap = o.timed_steps > 0 ? o.timed_steps : timed_default;
  // The steps before the steady state: with graphs the eager warm-up steps and the capture, else
  // the first step. The host waits for the device only at the end of these and of the timed steps.
  const int64_t head = graphs ? Sampler::kGraphWarmupSteps + 1 : 1;
  out << strf("diffuse bench sample: %s on %s, %s, %s\n", o.config.c_str(), device_name(o.device),
              o.precision.c_str(),
              timed_cap > 0 ? strf("at most the first %lld steps of each sampler timed, longer runs extrapolated",
                                   (long long)timed_cap).c_str()
                            : "every step timed");
  out << (o.device == Device::cpu ? std::string("sampling loop: Sampler::sample as `diffuse sample` runs it\n")
          : graphs ? strf("sampling loop: Sampler::sample as `diffuse sample` runs it, CUDA graphs on (%lld eager "
                          "steps, then one captured step replayed)\n", (long long)Sampler::kGraphWarmupSteps)
                   : std::string("sampling loop: Sampler::sample as `diffuse sample` runs it, CUDA graphs off (eager)\n"));
  if (o.device == Device::cpu) out << cpu_setup_line();
  out << strf("%-9s %6s %6s %6s %12s %12s %10s  %s\n", "sampler", "steps", "batch", "timed", "ms/step", "total s",
              "images/s", "steps ran")
      << std::string(80, '-') << "\n" << std::flush;
  nlohmann::json results = nlohmann::json::array();
  NoGrad no_grad;
  const AutocastBf16 autocast(o.precision == "bf16");  // every UNet forward of the benchmark
  std::string refused;  // the first refused capture's reason, said once
  for (int64_t B : o.batches) {
    Tensor warm = Tensor::zeros({B, S, S, int64_t(cfg.in_channels)}, DType::f32, o.device);
    model.forward(warm, Tensor::from({500.0}, {1}, DType::i64));  // allocator and scratch warm-up
    if (o.device == Device::cuda) synchronize_device();
    for (const std::string& name : o.samplers) {
      SchedulerConfig sc;
      sc.kind = parse_sampler_kind(name, "--samplers");
      const int64_t steps = nominal_steps(name);
      Sampler sampler(sc, steps);
      const int64_t n = sampler.num_steps();
      const int64_t timed = timed_cap > 0 ? std::min(timed_cap, n) : n;
      const Tensor x_T = Sampler::initial_noise({B, S, S, int64_t(cfg.in_channels)}, o.seed).to(o.device);
      SampleOptions opt;
      opt.seed = o.seed;
      opt.cuda_graphs = graphs;
      SampleStats stats;
      opt.stats = &stats;
      opt.on_graph_fallback = [&](const std::string& why) {
        if (refused.empty()) out << "diffuse bench sample: " << why << "\n";
        refused = why;
      };
      // The loop generate() runs (engine/generate.cpp): the tensor-timestep denoiser, graphs as
      // asked. The host waits for the device twice: after the head steps and after the last timed one.
      double head_ms = 0, run_ms = 0;
      if (o.device == Device::cuda) synchronize_device();
      const auto t0 = clock::now();
      sampler.sample(unet_tensor_denoiser(model, Tensor(), false), x_T, opt,
                     [&](int64_t i, int64_t, const Tensor&, const Tensor&) {
                       if (i + 1 == std::min(head, timed)) head_ms = ms_since(t0, o.device);
                       if (i + 1 == timed) run_ms = ms_since(t0, o.device);
                       return i + 1 < timed;  // stop after the timed steps
                     });
      const int64_t head_steps = std::min(head, timed);
      // Per step: the steady state's mean when it was reached, else the head's.
      const double per = timed > head_steps ? (run_ms - head_ms) / double(timed - head_steps)
                                            : run_ms / double(timed);
      const bool all = timed == n;
      const double total_s = (all ? run_ms : head_ms + per * double(n - head_steps)) * 1e-3;
      const std::string ran = strf("%lld eager%s", (long long)stats.eager_steps,
                                   stats.graph_replays > 0
                                       ? strf(" + %lld replayed", (long long)stats.graph_replays).c_str()
                                       : (stats.graph_refused.empty() ? "" : " (capture refused)"));
      nlohmann::json r = {{"sampler", name}, {"steps", n}, {"batch", B}, {"timed_steps", timed},
                          {"step_ms", per}, {"total_s", total_s}, {"extrapolated", !all},
                          {"images_per_second", double(B) / total_s}, {"head_steps", head_steps},
                          {"head_ms", head_ms}, {"graph", graph_state(stats)},
                          {"eager_steps", stats.eager_steps}, {"graph_replays", stats.graph_replays}};
      if (!stats.graph_refused.empty()) r["graph_refused"] = stats.graph_refused;
      out << strf("%-9s %6lld %6lld %6lld %12.2f %11.2f%s %10.2f  %s\n", name.c_str(), (long long)n, (long long)B,
                  (long long)timed, per, total_s, all ? " " : "*", double(B) / total_s, ran.c_str())
          << std::flush;
      results.push_back(r);
    }
  }
  bool any_extrapolated = false;
  for (const auto& x : results) any_extrapolated |= x["extrapolated"].get<bool>();
  out << strf("ms/step: the mean of the steps after the first %lld (%s), the host waiting for the device only "
              "at their start and end; total: the whole loop from x_T to x_0\n",
              (long long)head, graphs ? "the eager warm-up steps and the capture" : "the first step");
  if (any_extrapolated) out << "* extrapolated: the first steps' time + the remaining steps x ms/step\n";
  // --profile: after the table, a few more eager steps of each row under the op profiler.
  for (nlohmann::json& x : results) {
    if (o.profile_steps <= 0) break;
    const int64_t B = x["batch"].get<int64_t>();
    const Tensor x_T = Sampler::initial_noise({B, S, S, int64_t(cfg.in_channels)}, o.seed).to(o.device);
    x["profile"] = profile_sample_steps(model, x["sampler"].get<std::string>(), x_T, o.seed, o.precision == "bf16",
                                        o.profile_steps, out);
  }
  nlohmann::json r = run_context(o.device);
  r["benchmark"] = "sample";
  r["framework"] = "diffuse";
  r["mode"] = o.precision;
  r["cuda_graphs"] = graphs;
  if (!refused.empty()) r["graph_refused"] = refused;
  r["config"] = o.config;
  r["results"] = results;
  return r;
}

}  // namespace diffuse::bench
