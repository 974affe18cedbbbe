// The training step as one CUDA graph (engine/train_step.cpp, docs/design.md §4) on the emulated
// device. Its per-row draws (timesteps, label dropout, the schedule values at the drawn timesteps)
// made on the device from a step number in device memory are the host formula's bits, on the CPU
// and on CUDA. A run whose steps after the two eager warm-up steps replay one captured graph
// (forward, loss, backward, clipping, AdamW, EMA, zero_grad) ends with bit-identical weights, EMA
// weights, AdamW moments and losses to the same run stepped eagerly — class-conditional with label
// dropout, min-SNR weights and clipping that bites; with dropout in the UNet too (its mask position
// read from device memory, which gives the host position's mask and grad on the CPU and CUDA). Steps queued without a read make no host wait (counted by the
// emulated device) and, read back later, give the same bits; a batch staged through pinned memory
// gives a device batch's bits. The gated AdamW + EMA (lr and step counts in
// device memory, clipping and the non-finite skip decided there) gives the host path's bits on the
// CPU and on CUDA, and skips a step whose loss or grad norm is not finite. The status rows of several queued steps are
// read back in one collect(). A capture that meets a call the runtime refuses (a read back to the
// host inside the step) is reported once and the run goes on eagerly with the same bits. And the
// trainer: diffuse::train with cuda_graphs on and off writes the same checkpoint, status read every
// 4 steps or every step gives the same metrics and checkpoint (a stop taking effect at the end of
// the group read), and the CLI takes `--cuda-graphs on|off`: two processes with
// `--conv-search heuristic`, graphs on and off, write the same losses and weights bit for bit.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "diffuse/diffuse.h"
#include "engine/dataset.h"
#include "engine/train_step.h"
#include "kernels/noise.h"
#include "kernels/philox.h"
#include "nn/autograd.h"
#include "nn/ops.h"
#include "nn/optim.h"
#include "support/cuda_compare.h"
#include "support/process.h"
#include "support/temp_dir.h"
#if DIFFUSE_CUDA_EMULATED
#include "kernels/emulated_device/device.h"
#endif

using namespace diffuse;
using namespace diffuse::test;
namespace fs = std::filesystem;

namespace {

bool same_bits(const Tensor& a, const Tensor& b) {
  const std::vector<double> va = a.to_vector(), vb = b.to_vector();
  return va.size() == vb.size() && std::memcmp(va.data(), vb.data(), va.size() * sizeof(double)) == 0;
}

bool same_bits(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!same_bits(a[i], b[i])) return false;
  return true;
}

// The CUDA optimizer against the host path: bit for bit on the emulated device, whose kernels run
// the host's arithmetic. On a GPU the AdamW + EMA kernel computes its bias corrections and EMA decay
// with the device's powf, and nvcc contracts its multiply-adds into FMAs, so the weights may differ
// from the host's in the last bits: there, within 1e-6 of each tensor's peak (a few f32 ulps).
bool matches_host_path(const std::vector<Tensor>& dev, const std::vector<Tensor>& host) {
#if DIFFUSE_CUDA_EMULATED
  return same_bits(dev, host);
#else
  if (dev.size() != host.size()) return false;
  for (size_t i = 0; i < dev.size(); ++i)
    if (!(rel_to_peak_error(dev[i], host[i]) <= 1e-6)) return false;
  return true;
#endif
}

// tiny at 8x8, class-conditional (3 classes + the null class), label dropout, min-SNR weights,
// v-prediction, weight decay and a clip norm small enough to scale every step's grads.
TrainOptions options(bool graphs) {
  TrainOptions o;
  o.config = "tiny";
  o.device = Device::cuda;
  o.batch = 3;
  o.lr = 1e-3;
  o.seed = 11;
  o.classes = 3;
  o.p_uncond = 0.4;
  o.snr_gamma = 5.0;
  o.prediction = "v_prediction";
  o.weight_decay = 0.01;
  o.grad_clip = 0.05;
  o.steps = 6;
  o.warmup = 2;
  o.cuda_graphs = graphs;
  return o;
}

UNet2DConfig small_config(const TrainOptions& o, double dropout = 0.0) {
  UNet2DConfig c = training_unet_config(o);
  c.sample_size = 8;
  c.dropout = dropout;
  return c;
}

// Step s's batch: Philox images in [-1, 1)-ish and labels s+i mod 3, on the host as the batcher gives them.
Batch batch_of(int64_t s) {
  Batch b;
  b.images = Tensor::randn({3, 8, 8, 1}, 100 + static_cast<uint64_t>(s));
  b.labels = Tensor::from({static_cast<double>(s % 3), static_cast<double>((s + 1) % 3), static_cast<double>((s + 2) % 3)},
                          {3}, DType::i64);
  return b;
}

struct Trained {
  std::vector<double> losses;
  std::vector<Tensor> weights, ema, exp_avg;
  std::vector<std::string> notices;
  int body_runs = 0;
  bool replaying = false;
  int64_t adam_steps = 0;
  uint64_t dropout_offset = 0;
};

Trained train_steps(bool graphs, int steps, const std::function<void()>& inside = {}, double dropout = 0.0) {
  const TrainOptions o = options(graphs);
  TrainStep step(small_config(o, dropout), o);
  Trained t;
  step.set_cuda_graphs(graphs, [&](const std::string& why) { t.notices.push_back(why); });
  step.set_inside_step_for_test([&] {
    ++t.body_runs;
    if (inside) inside();
  });
  for (int64_t s = 1; s <= steps; ++s) {
    const TrainStepResult r = step.run(s, batch_of(s));
    REQUIRE(r.non_finite.empty());
    REQUIRE(r.step == s);
    t.losses.push_back(r.loss);
  }
  t.replaying = step.replaying();
  t.adam_steps = step.adam().step_count();
  t.dropout_offset = step.model().dropout_offset();
  for (const Tensor& p : step.parameters()) t.weights.push_back(p.to(Device::cpu));
  for (const Tensor& e : step.ema().shadow()) t.ema.push_back(e.to(Device::cpu));
  for (const Tensor& m : step.adam().exp_avg()) t.exp_avg.push_back(m.to(Device::cpu));
  return t;
}

std::string file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Checks that every .safetensors file under checkpoint a has the same bytes under b; returns how many.
int same_safetensors(const std::string& a, const std::string& b) {
  int compared = 0;
  for (const auto& entry : fs::recursive_directory_iterator(a)) {
    if (!entry.is_regular_file() || entry.path().extension() != ".safetensors") continue;
    const fs::path rel = fs::relative(entry.path(), a);
    INFO(rel.string());
    CHECK(file_bytes(entry.path()) == file_bytes(fs::path(b) / rel));
    ++compared;
  }
  return compared;
}

}  // namespace

TEST_CASE("train draws: timesteps, label dropout and schedule values made on the device are the host formula's bits",
          "[cuda][graphs][train]") {
  DIFFUSE_CUDA_TEST_GUARD();
  kernels::TrainDrawDesc d;
  d.batch = 5;
  d.first_row = 3;  // rank 1 of 2 ranks at batch 3... of a global batch of 9
  d.global_rows = 9;
  d.seed = 1234;
  d.num_timesteps = 50;
  d.p_uncond = 0.3;
  d.null_class = 7;
  d.weights = true;
  const int64_t T = d.num_timesteps;
  std::vector<double> table(3 * T);
  for (int64_t t = 0; t < T; ++t) {
    table[t] = std::sqrt(1.0 - 0.01 * t);
    table[T + t] = std::sqrt(0.01 * t);
    table[2 * T + t] = 1.0 / (1.0 + t);
  }
  const Tensor tables = Tensor::from(table, {3, T});
  const Tensor labels = Tensor::from({0, 1, 2, 3, 4}, {5}, DType::i64);
  int dropped = 0;
  for (int64_t step : {1, 2, 17, 100000}) {
    INFO("step " << step);
    const Tensor host_step = Tensor::from({static_cast<double>(step)}, {1}, DType::i64);
    const ops::TrainDraws cpu = ops::train_draws(d, host_step, tables, labels);
    const ops::TrainDraws dev =
        ops::train_draws(d, host_step.to(Device::cuda), tables.to(Device::cuda), labels.to(Device::cuda));
    CHECK(same_bits(dev.timesteps, cpu.timesteps));
    CHECK(same_bits(dev.coefs, cpu.coefs));
    CHECK(same_bits(dev.labels, cpu.labels));
    // The host formula the training step used before its draws moved to the device.
    const uint64_t block = static_cast<uint64_t>(step) * philox::blocks_for(static_cast<uint64_t>(d.global_rows));
    for (int64_t i = 0; i < d.batch; ++i) {
      const float u = philox::uniform_at(d.seed, philox::kTimesteps, block, static_cast<uint64_t>(d.first_row + i));
      const int64_t t = std::min<int64_t>(static_cast<int64_t>(u * static_cast<float>(T)), T - 1);
      CHECK(cpu.timesteps.data<int64_t>()[i] == t);
      for (int k = 0; k < 3; ++k) CHECK(cpu.coefs.data<float>()[k * d.batch + i] == static_cast<float>(table[k * T + t]));
      const bool drop =
          philox::uniform_at(d.seed, philox::kLabelDrop, block, static_cast<uint64_t>(d.first_row + i)) < d.p_uncond;
      dropped += drop;
      CHECK(cpu.labels.data<int64_t>()[i] == (drop ? d.null_class : i));
    }
  }
  CHECK(dropped > 0);  // the seed drops some labels and keeps others
  CHECK(dropped < 20);
}

TEST_CASE("train cuda graph: replayed steps give the eager steps' weights, EMA, moments and losses bit for bit",
          "[cuda][graphs][train]") {
  DIFFUSE_CUDA_TEST_GUARD();
  const Trained eager = train_steps(false, 5);
  const Trained graphed = train_steps(true, 5);
  CHECK(graphed.notices.empty());
  for (const std::string& n : graphed.notices) WARN(n);
  CHECK(graphed.replaying);
  CHECK_FALSE(eager.replaying);
  CHECK(eager.body_runs == 5);
  CHECK(graphed.body_runs == 3);  // two eager steps and the capture; steps 3, 4 and 5 are replays
  CHECK(eager.adam_steps == 5);
  CHECK(graphed.adam_steps == 5);
  REQUIRE(graphed.losses.size() == eager.losses.size());
  for (size_t i = 0; i < eager.losses.size(); ++i) {
    INFO("step " << i + 1);
    CHECK(std::memcmp(&graphed.losses[i], &eager.losses[i], sizeof(double)) == 0);
  }
  CHECK(same_bits(graphed.weights, eager.weights));
  CHECK(same_bits(graphed.ema, eager.ema));
  CHECK(same_bits(graphed.exp_avg, eager.exp_avg));
  // The steps did train: the weights moved.
  const TrainOptions o = options(false);
  TrainStep fresh(small_config(o), o);
  CHECK_FALSE(same_bits(fresh.parameters()[0].to(Device::cpu), eager.weights[0]));
}

TEST_CASE("train cuda graph: several queued steps are read back in one collect, in order", "[cuda][graphs][train]") {
  DIFFUSE_CUDA_TEST_GUARD();
  const Trained one_by_one = train_steps(true, 5);
  const TrainOptions o = options(true);
  TrainStep step(small_config(o), o);
  for (int64_t s = 1; s <= 5; ++s) step.enqueue(s, batch_of(s));
  const std::vector<TrainStepResult> rs = step.collect();
  REQUIRE(rs.size() == 5);
  for (size_t i = 0; i < rs.size(); ++i) {
    CHECK(rs[i].step == static_cast<int64_t>(i) + 1);
    CHECK(std::memcmp(&rs[i].loss, &one_by_one.losses[i], sizeof(double)) == 0);
    CHECK(rs[i].lr == step.lr_at(rs[i].step));
  }
  CHECK(step.replaying());
  CHECK(step.adam().step_count() == 5);
  CHECK(step.ema().optimization_step() == 5);
  CHECK(step.collect().empty());
}

TEST_CASE("train cuda graph: replayed steps queued without reads wait for nothing and one read gives every-step bits",
          "[cuda][graphs][train]") {
  DIFFUSE_CUDA_TEST_GUARD();
  const Trained every_step = train_steps(true, 9);  // run(): queued and read back one by one
  const TrainOptions o = options(true);
  TrainStep step(small_config(o), o);
  std::vector<Batch> batches;
  for (int64_t s = 1; s <= 9; ++s) batches.push_back(batch_of(s));
  std::vector<double> losses;
  for (int64_t s = 1; s <= 3; ++s) {  // two eager steps and the capture, read back each
    step.enqueue(s, batches[s - 1]);
    losses.push_back(step.collect().at(0).loss);
  }
  REQUIRE(step.replaying());
#if DIFFUSE_CUDA_EMULATED
  const emulated_device::HostTraffic before = emulated_device::host_traffic();
#endif
  for (int64_t s = 4; s <= 9; ++s) step.enqueue(s, batches[s - 1]);  // six replays: uploads and a launch each
#if DIFFUSE_CUDA_EMULATED
  // No synchronisation, no copy from pageable memory: each step's inputs came from a pinned slot
  // of its own (the emulated device reads pinned memory when the copy runs, so a slot rewritten
  // early would have changed the bits below).
  const emulated_device::HostTraffic queued = emulated_device::host_traffic();
  CHECK(queued.waits == before.waits);
  CHECK(queued.host_copies == before.host_copies);
  CHECK(step.staging_slots() == 6);
#endif
  const std::vector<TrainStepResult>& read = step.collect();
#if DIFFUSE_CUDA_EMULATED
  CHECK(emulated_device::host_traffic().waits == queued.waits + 1);  // the status copy's event, once
  CHECK(emulated_device::host_traffic().host_copies == queued.host_copies);  // into pinned memory
#endif
  REQUIRE(read.size() == 6);
  for (const TrainStepResult& r : read) losses.push_back(r.loss);
  REQUIRE(losses.size() == every_step.losses.size());
  for (size_t i = 0; i < losses.size(); ++i) {
    INFO("step " << i + 1);
    CHECK(std::memcmp(&losses[i], &every_step.losses[i], sizeof(double)) == 0);
  }
  std::vector<Tensor> weights;
  for (const Tensor& p : step.parameters()) weights.push_back(p.to(Device::cpu));
  CHECK(same_bits(weights, every_step.weights));
  CHECK(step.adam().step_count() == 9);
}

TEST_CASE("train step: a batch staged through pinned memory and one already on the device give the same bits",
          "[cuda][graphs][train]") {
  DIFFUSE_CUDA_TEST_GUARD();
  const TrainOptions o = options(true);
  // The device batches are made first: an allocation between the warm-up steps and the capture
  // could take a block the capture was to reuse (docs/design.md §4).
  std::vector<Batch> on_device(4);
  for (int64_t s = 1; s <= 4; ++s) {
    on_device[s - 1].images = batch_of(s).images.to(Device::cuda);
    on_device[s - 1].labels = batch_of(s).labels.to(Device::cuda);
  }
  // One run after the other: a run's steps between another's warm-up and capture would allocate.
  std::vector<std::vector<double>> losses(2);
  std::vector<std::vector<Tensor>> weights(2);
  for (int k = 0; k < 2; ++k) {
    TrainStep step(small_config(o), o);
    std::vector<std::string> notices;
    step.set_cuda_graphs(true, [&](const std::string& why) { notices.push_back(why); });
    for (int64_t s = 1; s <= 4; ++s) losses[k].push_back(step.run(s, k == 0 ? batch_of(s) : on_device[s - 1]).loss);
    CHECK(notices.empty());
    for (const std::string& n : notices) WARN(n);
    CHECK(step.replaying());
    for (const Tensor& p : step.parameters()) weights[k].push_back(p.to(Device::cpu));
  }
  for (size_t i = 0; i < 4; ++i) {
    INFO("step " << i + 1);
    CHECK(std::memcmp(&losses[0][i], &losses[1][i], sizeof(double)) == 0);
  }
  CHECK(same_bits(weights[0], weights[1]));
}

TEST_CASE("dropout: a mask position read from device memory gives the host position's mask and grad, CPU and CUDA",
          "[cuda][graphs][train]") {
  DIFFUSE_CUDA_TEST_GUARD();
  const Tensor x = Tensor::randn({3, 5, 7}, 21), g = Tensor::randn({3, 5, 7}, 22);
  for (Device device : {Device::cpu, Device::cuda}) {
    INFO(device_name(device));
    std::vector<Tensor> ys, grads;
    for (bool from_memory : {false, true}) {
      Tensor xd = x.to(device);
      xd.set_requires_grad(true);
      // Block 17: the host position, or 5 past a position of 12 held in device memory.
      const Tensor y = from_memory ? ops::dropout(xd, 0.4, 9, 5, Tensor::from({12}, {1}, DType::i64).to(device))
                                   : ops::dropout(xd, 0.4, 9, 17);
      run_backward(y, g.to(device));
      ys.push_back(y.to(Device::cpu));
      grads.push_back(xd.grad().to(Device::cpu));
    }
    CHECK(same_bits(ys[0], ys[1]));
    CHECK(same_bits(grads[0], grads[1]));
    CHECK_FALSE(same_bits(ys[0], ops::dropout(x, 0.4, 9, 18)));  // another position, another mask
  }
  CHECK_THROWS_WITH(ops::dropout(x, 0.4, 9, 0, Tensor::from({1}, {1}, DType::f32)),
                    Catch::Contains("dropout: base must be i64[1] on x's device"));
}

TEST_CASE("train cuda graph: with dropout the replays draw each step's masks: the eager steps' bits",
          "[cuda][graphs][train]") {
  DIFFUSE_CUDA_TEST_GUARD();
  const Trained eager = train_steps(false, 5, {}, 0.3);
  const Trained graphed = train_steps(true, 5, {}, 0.3);
  const Trained no_dropout = train_steps(false, 5);
  CHECK(graphed.notices.empty());
  for (const std::string& n : graphed.notices) WARN(n);
  CHECK(graphed.replaying);
  CHECK(graphed.body_runs == 3);  // two eager steps and the capture; steps 3, 4 and 5 are replays
  REQUIRE(graphed.losses.size() == eager.losses.size());
  for (size_t i = 0; i < eager.losses.size(); ++i) {
    INFO("step " << i + 1);
    CHECK(std::memcmp(&graphed.losses[i], &eager.losses[i], sizeof(double)) == 0);
    CHECK(eager.losses[i] != no_dropout.losses[i]);  // dropout did draw
  }
  CHECK(same_bits(graphed.weights, eager.weights));
  CHECK(same_bits(graphed.ema, eager.ema));
  CHECK(same_bits(graphed.exp_avg, eager.exp_avg));
  // The host position, saved in checkpoints, moved as the eager steps moved it.
  CHECK(eager.dropout_offset > 0);
  CHECK(graphed.dropout_offset == eager.dropout_offset);
  CHECK(no_dropout.dropout_offset == 0);
}

TEST_CASE("train cuda graph: a capture that reads back to the host is refused once and the run goes on eagerly",
          "[cuda][graphs][train]") {
  DIFFUSE_CUDA_TEST_GUARD();
  const Trained eager = train_steps(false, 4);
  const Tensor probe = Tensor::zeros({4}, DType::f32, Device::cuda);
  const Trained got = train_steps(true, 4, [&] { (void)probe.to(Device::cpu); });
  REQUIRE(got.notices.size() == 1);
  INFO(got.notices[0]);
  CHECK_THAT(got.notices[0], Catch::StartsWith("cuda graphs: ") && Catch::EndsWith("; running eagerly") &&
                                 Catch::Contains("cudaErrorStreamCaptureUnsupported"));
  CHECK_FALSE(got.replaying);
  CHECK(got.body_runs == 5);  // four eager steps and the refused capture
  CHECK(same_bits(got.weights, eager.weights));
  CHECK(same_bits(got.ema, eager.ema));
}

TEST_CASE("train cuda graph: diffuse::train with cuda_graphs on and off writes the same checkpoint",
          "[cuda][graphs][train]") {
  DIFFUSE_CUDA_TEST_GUARD();
  TempDir dir;
  std::vector<std::string> checkpoints;
  for (bool graphs : {true, false}) {
    TrainRequest t;
    t.data = "fashion-mnist";
    t.max_images = 16;
    t.config = "tiny";
    t.out = dir.file(graphs ? "on" : "off");
    t.steps = 4;
    t.batch = 2;
    t.lr = 1e-3;
    t.seed = 5;
    t.grad_clip = 0.5;  // clipping that bites: the device-side scale is part of what is compared
    t.device = Device::cuda;
    t.cuda_graphs = graphs;
    std::vector<std::string> events;
    const TrainSummary s = train(t, [&](const TrainUpdate& u) {
      if (!u.event.empty()) events.push_back(u.event);
      return true;
    });
    REQUIRE(s.last_step == 4);
    for (const std::string& e : events) CHECK(e.find("cuda graphs:") == std::string::npos);
    checkpoints.push_back(s.checkpoint);
  }
  CHECK(same_safetensors(checkpoints[0], checkpoints[1]) >= 3);  // the weights, the EMA weights, the optimizer state
}

TEST_CASE("train: status read every N steps: the same metrics and checkpoint, every step reported, a stop at the group's end",
          "[cuda][graphs][train]") {
  DIFFUSE_CUDA_TEST_GUARD();
  TempDir dir;
  auto request = [&](const std::string& name, int64_t every) {
    TrainRequest t;
    t.data = "fashion-mnist";
    t.max_images = 16;
    t.config = "tiny";
    t.out = dir.file(name);
    t.steps = 6;
    t.batch = 2;
    t.lr = 1e-3;
    t.seed = 5;
    t.device = Device::cuda;
    t.status_every = every;
    return t;
  };
  auto losses_of = [](const std::string& out) {
    std::vector<std::string> lines;
    std::ifstream in(out + "/metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      const size_t at = line.find("\"loss\":"), end = line.find(',', at);
      lines.push_back(line.substr(at, end - at));  // the loss as written, not the timing fields
    }
    return lines;
  };
  std::vector<std::string> checkpoints;
  std::vector<std::vector<int64_t>> reported;
  for (int64_t every : {1, 4}) {
    std::vector<int64_t> steps;
    const TrainSummary s = train(request("every-" + std::to_string(every), every), [&](const TrainUpdate& u) {
      if (u.event.empty()) steps.push_back(u.step);
      return true;
    });
    REQUIRE(s.last_step == 6);
    CHECK_FALSE(s.cancelled);
    checkpoints.push_back(s.checkpoint);
    reported.push_back(steps);
  }
  CHECK(reported[0] == std::vector<int64_t>{1, 2, 3, 4, 5, 6});
  CHECK(reported[1] == reported[0]);  // read at steps 4 and 6, still one update per step, in order
  const std::vector<std::string> every_1 = losses_of(request("every-1", 1).out);
  REQUIRE(every_1.size() == 6);
  CHECK(losses_of(request("every-4", 4).out) == every_1);
  CHECK(same_safetensors(checkpoints[0], checkpoints[1]) >= 3);

  // A stop asked at step 2 takes effect when steps 1-4 are read: steps 3 and 4 have run, are
  // reported and logged, and the checkpoint is step 4's.
  std::vector<int64_t> steps;
  const TrainSummary stopped = train(request("stopped", 4), [&](const TrainUpdate& u) {
    if (!u.event.empty()) return true;
    steps.push_back(u.step);
    return u.step < 2;
  });
  CHECK(stopped.cancelled);
  CHECK(stopped.last_step == 4);
  CHECK(steps == std::vector<int64_t>{1, 2, 3, 4});
  CHECK_THAT(stopped.checkpoint, Catch::EndsWith("step-4"));
  const std::vector<std::string> stopped_losses = losses_of(request("stopped", 4).out);
  CHECK(stopped_losses == std::vector<std::string>(every_1.begin(), every_1.begin() + 4));
}

// Two processes may time cuDNN's algorithms differently (cudnnFind*Ex picks the fastest, per
// process), which changes f32 summation orders; with `--conv-search heuristic` both processes
// take cuDNN's ranking instead, so the CLI's runs with graphs on and off must agree bit for bit,
// as the in-process comparison above does.
TEST_CASE("train cuda graph: diffuse train --device cuda --cuda-graphs on and off give the same bits",
          "[cuda][graphs][train][cli]") {
  DIFFUSE_CUDA_TEST_GUARD();
  TempDir dir;
  std::vector<std::vector<double>> curves;
  std::vector<std::string> weights;
  for (const char* graphs : {"on", "off"}) {
    const std::string out = dir.file(graphs);
    const RunResult r = run_cli({"train", "--data", "fashion-mnist", "--max-images", "16", "--config", "tiny",
                                 "--out", out, "--steps", "4", "--batch", "2", "--lr", "1e-3", "--seed", "5",
                                 "--device", "cuda", "--cuda-graphs", graphs, "--conv-search", "heuristic"});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    CHECK(r.output.find("cuda graphs:") == std::string::npos);  // no fallback reported
    std::vector<double> curve;
    std::ifstream in(out + "/metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      const size_t at = line.find("\"loss\":");
      REQUIRE(at != std::string::npos);
      curve.push_back(std::stod(line.substr(at + 7)));
    }
    REQUIRE(curve.size() == 4);
    curves.push_back(curve);
    weights.push_back(slurp(out + "/checkpoints/step-4/model/unet/diffusion_pytorch_model.safetensors"));
  }
  CHECK(curves[0] == curves[1]);
  CHECK(weights[0] == weights[1]);
}

namespace {

// Three parameters with grads on `device` (the same values on every device), AdamW with weight
// decay and the warmup EMA over them.
struct Optimized {
  std::vector<Tensor> params;
  optim::AdamW adam;
  optim::EMA ema;
  explicit Optimized(Device device)
      : params(make(device)),
        adam(params, {1e-3, 0.9, 0.999, 1e-8, 0.01}),
        ema(params, [] {
          optim::EMAOptions e;
          e.use_ema_warmup = true;
          e.decay = 0.999;
          return e;
        }()) {}
  static std::vector<Tensor> make(Device device) {
    std::vector<Tensor> ps;
    const std::vector<Shape> shapes = {{5, 7}, {33}, {2, 3, 4, 5}};
    for (size_t i = 0; i < shapes.size(); ++i) {
      Tensor p = Tensor::randn(shapes[i], 40 + i).to(device);
      p.set_requires_grad(true);
      ps.push_back(p);
    }
    return ps;
  }
  void set_grads(uint64_t seed) {
    for (size_t i = 0; i < params.size(); ++i)
      params[i].set_grad(Tensor::randn(params[i].shape(), seed + i).to(params[i].device()));
  }
};

// One gated step at `lr` with `loss`; returns the status row.
std::vector<double> gated_step(Optimized& o, optim::DeviceStep& d, const Tensor& step, const Tensor& ring, double lr,
                               float loss) {
  const Device device = o.params[0].device();
  Tensor lr_word = Tensor::from({lr}, {1}, DType::f64);
  d.state.slice0(0, 1).copy_from(lr_word);
  d.loss = Tensor::from({static_cast<double>(loss)}, {1}, DType::f32).to(device);
  optim::grad_sum_of_squares(o.params, d.sum_sq);
  o.adam.step_on_device(d, &o.ema);
  optim::record_step(d, step, ring);
  o.adam.zero_grad();
  const Tensor host = ring.to(Device::cpu);
  return {host.data<double>(), host.data<double>() + 4};
}

}  // namespace

TEST_CASE("gated AdamW + EMA: device-held lr, step counts, clipping and the non-finite skip, on the CPU and CUDA",
          "[cuda][graphs][train][optim]") {
  DIFFUSE_CUDA_TEST_GUARD();
  Optimized reference(Device::cpu), cpu(Device::cpu), dev(Device::cuda);
  std::vector<optim::DeviceStep> steps(2);
  std::vector<Tensor> step_numbers, rings;
  const Device devices[2] = {Device::cpu, Device::cuda};
  for (int k = 0; k < 2; ++k) {
    steps[k].state = Tensor::zeros({3}, DType::f64, devices[k]);
    steps[k].sum_sq = Tensor::zeros({1}, DType::f64, devices[k]);
    steps[k].max_norm = 3.0;  // below the grads' norm (~7.7): every step is clipped
    step_numbers.push_back(Tensor::from({1}, {1}, DType::i64).to(devices[k]));
    rings.push_back(Tensor::zeros({1, 4}, DType::f64, devices[k]));
  }
  const double lrs[3] = {1e-3, 5e-4, 2e-3};
  for (int s = 0; s < 3; ++s) {
    INFO("step " << s + 1);
    for (Optimized* o : {&reference, &cpu, &dev}) o->set_grads(60 + 10 * s);
    // The host path: clip_grad_norm, then AdamW with host-computed bias corrections and EMA decay.
    const double norm = optim::clip_grad_norm(reference.params, 3.0);
    reference.adam.step(lrs[s], &reference.ema);
    reference.adam.zero_grad();
    const std::vector<double> row_cpu = gated_step(cpu, steps[0], step_numbers[0], rings[0], lrs[s], 0.25f);
    const std::vector<double> row_dev = gated_step(dev, steps[1], step_numbers[1], rings[1], lrs[s], 0.25f);
    CHECK(row_cpu == std::vector<double>{0.25, norm, 0.0, lrs[s]});
    // The norm: the device adds f64 squares per thread, the CPU twin its own vector partials, so
    // the sums round differently (~1e-9 relative here); the f32 clip factor they give is the same.
    CHECK(row_dev[0] == row_cpu[0]);
    CHECK(std::fabs(row_dev[1] - row_cpu[1]) <= 1e-7 * row_cpu[1]);
    CHECK(row_dev[2] == row_cpu[2]);
    CHECK(row_dev[3] == row_cpu[3]);
    CHECK(same_bits(cpu.params, reference.params));
    CHECK(same_bits(cpu.ema.shadow(), reference.ema.shadow()));
    CHECK(same_bits(cpu.adam.exp_avg_sq(), reference.adam.exp_avg_sq()));
    CHECK(matches_host_path(dev.params, reference.params));
    CHECK(matches_host_path(dev.ema.shadow(), reference.ema.shadow()));
    CHECK(matches_host_path(dev.adam.exp_avg(), reference.adam.exp_avg()));
  }
  // A non-finite loss, then a non-finite grad: no update, the counts stay, the row says skipped.
  for (int bad = 0; bad < 2; ++bad) {
    INFO((bad == 0 ? "nan loss" : "inf grad"));
    for (int k = 0; k < 2; ++k) {
      Optimized& o = k == 0 ? cpu : dev;
      o.set_grads(99);
      if (bad == 1) o.params[1].set_grad(Tensor::full({33}, INFINITY).to(devices[k]));
      const std::vector<Tensor> before = [&] {
        std::vector<Tensor> b;
        for (const Tensor& p : o.params) b.push_back(p.to(Device::cpu));
        return b;
      }();
      const std::vector<double> row = gated_step(o, steps[k], step_numbers[k], rings[k], 1e-3, bad == 0 ? NAN : 0.5f);
      CHECK(row[2] == 1.0);
      CHECK(same_bits(o.params, before));
      CHECK((k == 0 ? same_bits(o.ema.shadow(), reference.ema.shadow())
                   : matches_host_path(o.ema.shadow(), reference.ema.shadow())));
      const std::vector<double> state = steps[k].state.to_vector();
      CHECK(state[1] == 3.0);
      CHECK(state[2] == 3.0);
    }
  }
}
