// The sampler step as one CUDA graph (engine/sampler_graph.cpp, docs/design.md §4) on a small
// class-conditional UNet: 10-step DDIM (η 0.5, so steps draw noise), DDPM and DPM-Solver++(2M)
// runs, with and without classifier-free guidance, replayed from a graph are bit-identical to the
// eager loop that passes each step's coefficients and timestep by value. The per-step
// denoise_step descriptor read from device memory gives the by-value kernel's bits. A capture
// that meets a forbidden call (a read back to the host inside the step) is refused, the reason
// is reported once, and the run goes on eagerly with the same images. A replayed step makes no
// host-blocking call and no host copy (the emulated device counts them), guided or not; under
// bf16 autocast the loop casts the weights once and gives the bits of a loop casting them per
// forward. And the timestep embedding of one timestep broadcast over the batch by its kernel, as
// the UNet calls it.
#include <catch2/catch.hpp>

#include <cstring>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "engine/sampler.h"
#include "engine/unet_denoiser.h"
#include "nn/autograd.h"
#include "nn/layers.h"
#include "nn/ops.h"
#include "nn/unet2d.h"
#include "support/cuda_compare.h"
#if DIFFUSE_CUDA_EMULATED
#include "kernels/emulated_device/device.h"
#endif

using namespace diffuse;

namespace {

// tiny at 8x8 with 11 class embeddings (10 classes and the null class), on CUDA, in eval mode.
UNet2D conditional_tiny() {
  UNet2DConfig c = resolve_unet_config("tiny");
  c.sample_size = 8;
  c.num_class_embeds = 11;
  UNet2D m(c, 5);
  m.to(Device::cuda);
  m.set_training(false);
  return m;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  const std::vector<double> va = a.to_vector(), vb = b.to_vector();
  return va.size() == vb.size() && std::memcmp(va.data(), vb.data(), va.size() * sizeof(double)) == 0;
}

struct Run {
  mutable UNet2D model = conditional_tiny();
  Sampler sampler;
  SampleOptions opt;
  Tensor labels;  // on the device: [B], or [2B] with the null class first when guided
  Tensor x_T;
  bool guided;

  Run(SamplerKind kind, bool guided_run) : sampler(config(kind), 10), guided(guided_run) {
    opt.seed = 77;
    if (guided) opt.guidance = 3.0;
    labels = Tensor::from(guided ? std::vector<double>{10, 4} : std::vector<double>{4}, {guided ? 2 : 1}, DType::i64)
                 .to(Device::cuda);
    x_T = Sampler::initial_noise({1, 8, 8, 1}, opt.seed).to(Device::cuda);
  }
  static SchedulerConfig config(SamplerKind kind) {
    SchedulerConfig c;
    c.kind = kind;
    c.eta = kind == SamplerKind::ddim ? 0.5 : 0.0;
    return c;
  }
  // The eager reference: host timesteps, each step's descriptor passed by value.
  Tensor eager() const { return sampler.sample(unet_denoiser(model, labels, guided), x_T, opt); }
  // The tensor-timestep loop, with or without graphs; counts the host runs of the step's body.
  Tensor tensor_loop(bool graphs, int& body_runs, std::vector<std::string>& notices,
                     const std::function<void()>& inside = {}) const {
    SampleOptions o = opt;
    o.cuda_graphs = graphs;
    o.inside_capture_for_test = [&] {
      ++body_runs;
      if (inside) inside();
    };
    o.on_graph_fallback = [&](const std::string& why) { notices.push_back(why); };
    return sampler.sample(unet_tensor_denoiser(model, labels, guided), x_T, o);
  }
};

}  // namespace

TEST_CASE("sampler cuda graph: DDIM, DDPM and DPM-Solver++ replay bit-identically to eager, guided or not",
          "[cuda][graphs][sample]") {
  DIFFUSE_CUDA_TEST_GUARD();
  for (SamplerKind kind : {SamplerKind::ddim, SamplerKind::ddpm, SamplerKind::dpmpp_2m})
    for (bool guided : {false, true}) {
      INFO("sampler " << sampler_kind_name(kind) << (guided ? ", guided" : ""));
      const Run run(kind, guided);
      const Tensor eager = run.eager();
      int body_runs = 0;
      std::vector<std::string> notices;
      const Tensor graphed = run.tensor_loop(true, body_runs, notices);
      CHECK(notices.empty());
      // Two eager steps and the capture run the body on the host; the 8 replays do not.
      CHECK(body_runs == 3);
      CHECK(same_bits(graphed, eager));
      int eager_runs = 0;
      CHECK(same_bits(run.tensor_loop(false, eager_runs, notices), eager));
      CHECK(eager_runs == 10);
    }
}

TEST_CASE("sampler cuda graph: a replayed step makes no host wait and no host copy, guided or not",
          "[cuda][graphs][sample]") {
  DIFFUSE_CUDA_TEST_GUARD();
  for (SamplerKind kind : {SamplerKind::ddim, SamplerKind::dpmpp_2m})
    for (bool guided : {false, true}) {
      INFO("sampler " << sampler_kind_name(kind) << (guided ? ", guided" : ""));
      const Run run(kind, guided);
      const Tensor eager = run.eager();
      SampleOptions o = run.opt;
      o.cuda_graphs = true;
      SampleStats stats;
      o.stats = &stats;
      std::vector<std::string> notices;
      o.on_graph_fallback = [&](const std::string& why) { notices.push_back(why); };
#if DIFFUSE_CUDA_EMULATED
      // The device's count of host waits and host copies after each step (the callback itself
      // reads no device memory).
      std::vector<emulated_device::HostTraffic> after;
      const auto on_step = [&](int64_t, int64_t, const Tensor&, const Tensor&) {
        after.push_back(emulated_device::host_traffic());
        return true;
      };
#else
      const Sampler::StepFn on_step;
#endif
      const Tensor graphed = run.sampler.sample(unet_tensor_denoiser(run.model, run.labels, guided), run.x_T, o, on_step);
      CHECK(notices.empty());
      CHECK(stats.eager_steps == Sampler::kGraphWarmupSteps);
      CHECK(stats.graph_replays == 10 - Sampler::kGraphWarmupSteps);
      CHECK(stats.graph_refused.empty());
      CHECK(same_bits(graphed, eager));
#if DIFFUSE_CUDA_EMULATED
      REQUIRE(after.size() == 10);
      // The replays after the capture step: the host queued one device copy and one graph launch each.
      for (size_t i = Sampler::kGraphWarmupSteps + 1; i < after.size(); ++i) {
        INFO("step " << i);
        CHECK(after[i].waits == after[i - 1].waits);
        CHECK(after[i].host_copies == after[i - 1].host_copies);
      }
      // The counters count: the run's result read back waited for the device and copied to the host.
      const emulated_device::HostTraffic before_read = emulated_device::host_traffic();
      (void)graphed.to(Device::cpu);
      CHECK(emulated_device::host_traffic().waits > before_read.waits);
      CHECK(emulated_device::host_traffic().host_copies > before_read.host_copies);
#endif
    }
}

TEST_CASE("sampler cuda graph: under bf16 autocast the loop casts the weights once and replays give per-forward casting's bits",
          "[cuda][graphs][sample][bf16]") {
  DIFFUSE_CUDA_TEST_GUARD();
  const Run run(SamplerKind::ddim, true);
  const AutocastBf16 autocast;
  // The reference: each step's forward casts every weight afresh (no KeepBf16Weights).
  Tensor want = run.x_T.clone(), x0;
  {
    NoGrad no_grad;
    const Sampler::ModelFn model = unet_denoiser(run.model, run.labels, true);
    for (int64_t i = 0; i < run.sampler.num_steps(); ++i)
      run.sampler.step(i, model(want, run.sampler.timesteps()[i]), want, x0, run.opt);
  }
  for (bool graphs : {false, true}) {
    INFO("cuda graphs " << graphs);
    SampleOptions o = run.opt;
    o.cuda_graphs = graphs;
    std::vector<uint64_t> casts;  // ops::casts_run() after each step
    const uint64_t before = ops::casts_run();
    const Tensor got = run.sampler.sample(unet_tensor_denoiser(run.model, run.labels, true), run.x_T, o,
                                          [&](int64_t, int64_t, const Tensor&, const Tensor&) {
                                            casts.push_back(ops::casts_run());
                                            return true;
                                          });
    CHECK(same_bits(got, want));
    REQUIRE(casts.size() == 10);
    CHECK(casts[0] - before > 20);  // the first step casts the weights
    // Later steps cast the UNet's sample in and its output out; a replay runs no host op at all.
    for (size_t i = 1; i < casts.size(); ++i) {
      INFO("step " << i);
      const bool replayed = graphs && i > size_t(Sampler::kGraphWarmupSteps);
      CHECK(casts[i] - casts[i - 1] == (replayed ? 0u : 2u));
    }
  }
}

TEST_CASE("sampler cuda graph: a capture that reads back to the host is refused once and the run goes on eagerly",
          "[cuda][graphs][sample]") {
  DIFFUSE_CUDA_TEST_GUARD();
  const Run run(SamplerKind::ddim, true);
  const Tensor eager = run.eager();
  const Tensor probe = Tensor::zeros({4}, DType::f32, Device::cuda);
  int body_runs = 0;
  std::vector<std::string> notices;
  const Tensor got = run.tensor_loop(true, body_runs, notices, [&] { (void)probe.to(Device::cpu); });
  REQUIRE(notices.size() == 1);
  INFO(notices[0]);
  CHECK_THAT(notices[0], Catch::Contains("sampler: CUDA graph capture failed, the steps run eagerly") &&
                             Catch::Contains("cudaErrorStreamCaptureUnsupported"));
  CHECK(body_runs == 11);  // ten eager steps and the refused capture
  CHECK(same_bits(got, eager));
}

TEST_CASE("denoise_step cuda: the per-step descriptor in device memory gives the by-value kernel's bits",
          "[cuda][denoise_step][graphs]") {
  DIFFUSE_CUDA_TEST_GUARD();
  using kernels::DenoiseUpdate;
  for (DenoiseUpdate update : {DenoiseUpdate::ddpm, DenoiseUpdate::ddim, DenoiseUpdate::dpm_first,
                               DenoiseUpdate::dpm_second})
    for (bool guided : {false, true}) {
      INFO("update " << static_cast<int>(update) << (guided ? ", guided" : ""));
      kernels::DenoiseStepDesc d;
      d.numel = 2 * 3 * 5 * 2;
      d.update = static_cast<int32_t>(update);
      d.guided = guided;
      d.guidance = 2.5;
      d.x0_from_x = 1.3, d.x0_from_m = -0.7, d.clip = 1, d.clip_range = 1.5;
      d.eps_from_x = 0.4, d.eps_from_m = 0.9, d.c_x = 0.8, d.c_x0 = 0.3, d.c_eps = -0.2, d.c_d1 = 0.6;
      d.noise_std = update == DenoiseUpdate::ddpm || update == DenoiseUpdate::ddim ? 0.25 : 0.0;
      d.seed = 9, d.noise_offset = 40;
      const Tensor m = Tensor::randn({guided ? 4 : 2, 3, 5, 2}, 31).to(Device::cuda);
      const Tensor x_host = Tensor::randn({2, 3, 5, 2}, 32), x0_host = Tensor::randn({2, 3, 5, 2}, 33);
      Tensor x_a = x_host.to(Device::cuda), x0_a = x0_host.to(Device::cuda);
      Tensor x_b = x_host.to(Device::cuda), x0_b = x0_host.to(Device::cuda);
      ops::denoise_step(d, m, x_a, x0_a);
      // The launch descriptor carries numel and guided only; every scalar comes from memory.
      kernels::DenoiseStepDesc launch;
      launch.numel = d.numel;
      launch.guided = d.guided;
      Tensor words = Tensor::empty({ops::denoise_step_desc_words()}, DType::i64);
      std::memcpy(words.raw(), &d, sizeof d);
      ops::denoise_step(launch, m, x_b, x0_b, words.to(Device::cuda));
      CHECK(same_bits(x_b, x_a));
      CHECK(same_bits(x0_b, x0_a));
      // The CPU backend reads the same bytes from host memory.
      Tensor x_c = x_host.clone(), x0_c = x0_host.clone(), x_d = x_host.clone(), x0_d = x0_host.clone();
      const Tensor m_host = m.to(Device::cpu);
      ops::denoise_step(d, m_host, x_c, x0_c);
      ops::denoise_step(launch, m_host, x_d, x0_d, words);
      CHECK(same_bits(x_d, x_c));
      CHECK(same_bits(x0_d, x0_c));
    }
  kernels::DenoiseStepDesc d;
  d.numel = 4;
  const Tensor x = Tensor::zeros({4}, DType::f32, Device::cuda);
  CHECK_THROWS_WITH(ops::denoise_step(d, x, x, x, Tensor::zeros({3}, DType::i64, Device::cuda)),
                    Catch::Contains("denoise_step: per_step i64[3] cuda must be an i64 ["));
}

TEST_CASE("timestep_embedding: one timestep broadcast over the rows by the kernel, on the CPU and on CUDA",
          "[cuda][embedding][graphs]") {
  DIFFUSE_CUDA_TEST_GUARD();
  for (DType dt : {DType::f32, DType::i64}) {
    INFO("timestep " << dtype_name(dt));
    const Tensor rows = ops::timestep_embedding(Tensor::from({417, 417, 417}, {3}, dt), 9, true, 0.0);
    const Tensor one = Tensor::from({417}, {1}, dt);
    CHECK(same_bits(ops::timestep_embedding(one, 9, true, 0.0, 3), rows));
    const Tensor on_device = ops::timestep_embedding(one.to(Device::cuda), 9, true, 0.0, 3);
    REQUIRE(on_device.device() == Device::cuda);
#if DIFFUSE_CUDA_EMULATED
    CHECK(same_bits(on_device, rows));  // the emulated device runs the host's expf/sinf/cosf
#else
    // A GPU's expf/sinf/cosf differ from the host's by an ulp or two (the bound of test_ops_cuda's
    // embedding check); the rows, computed from the one broadcast value, are identical.
    const Tensor host = on_device.to(Device::cpu);
    CHECK(test::rel_to_peak_error(host, rows) < 2e-4);
    for (int64_t r = 1; r < 3; ++r)
      CHECK(std::memcmp(host.data<float>(), host.data<float>() + r * host.dim(1), sizeof(float) * host.dim(1)) == 0);
#endif
  }
  CHECK_THROWS_WITH(ops::timestep_embedding(Tensor::zeros({2}), 8, true, 0.0, 3),
                    Catch::Contains("timestep_embedding: t f32[2] cpu must have one value or 3 for 3 rows"));
}
