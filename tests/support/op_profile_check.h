// The op profiler's test (nn/op_profile.h) on one device, shared by the CPU test (tests/cpu) and
// the CUDA one (tests/cuda, the emulated device in CI): tiny training steps at 8x8, batch 2, run
// eagerly twice over from the same seed, one run profiled from its second step. The profile's op
// rows must count what the model must call (one conv2d per 4-D weight, one linear per 2-D weight
// but an attention block's q/k/v projection, one linear for three weights, one group_norm per
// GroupNorm layer, each forward and backward), every time is >= 0, the op
// times plus the rest are the step's time, and the profiled run ends with the unprofiled run's
// weights and losses, bit for bit.
#pragma once
#include <catch2/catch.hpp>

#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "engine/dataset.h"
#include "engine/train_step.h"
#include "nn/op_profile.h"
#include "nn/tensor.h"

namespace diffuse::test {

struct ProfiledRun {
  std::vector<double> losses;
  std::vector<std::vector<double>> weights;
  op_profile::Profile profile;
};

// `steps` tiny training steps; with `profiled`, steps 2.. run under the op profiler.
inline ProfiledRun run_tiny_training(Device device, int64_t steps, bool profiled, int64_t* convs = nullptr,
                                     int64_t* linears = nullptr, int64_t* norms = nullptr) {
  TrainOptions o;
  o.config = "tiny";
  o.device = device;
  o.batch = 2;
  o.seed = 5;
  o.lr = 1e-3;
  o.steps = steps;
  o.cuda_graphs = false;
  UNet2DConfig cfg = training_unet_config(o);
  cfg.sample_size = 8;
  TrainStep train_step(cfg, o);
  train_step.set_cuda_graphs(false);
  if (convs) {
    *convs = *linears = *norms = 0;
    for (const auto& [name, p] : train_step.model().named_parameters()) {
      const bool weight = name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0;
      if (!weight) continue;
      if (p->ndim() == 4) ++*convs;
      // An attention block's to_q, to_k and to_v are one linear (their weights stacked, nn/layers.cpp).
      const bool stacked = name.find(".to_k.") != std::string::npos || name.find(".to_v.") != std::string::npos;
      if (p->ndim() == 2 && !stacked) ++*linears;
      if (p->ndim() == 1 && name.find("norm") != std::string::npos) ++*norms;
    }
  }
  Batch batch;
  batch.images = Tensor::randn({2, 8, 8, int64_t(cfg.in_channels)}, 77).to(device);
  std::optional<op_profile::Profiler> profiler;
  if (profiled) profiler.emplace(device);
  ProfiledRun run;
  for (int64_t s = 1; s <= steps; ++s) {
    const bool on = profiled && s > 1;
    if (on) profiler->begin_step();
    train_step.enqueue(s, batch);
    if (on) profiler->end_step();
    const TrainStepResult r = train_step.collect().back();
    REQUIRE(r.non_finite.empty());
    run.losses.push_back(r.loss);
  }
  for (const Tensor& p : train_step.parameters()) run.weights.push_back(p.to(Device::cpu).to_vector());
  if (profiled) run.profile = profiler->result();
  return run;
}

inline const op_profile::OpRow* profile_row(const op_profile::Profile& p, const std::string& op) {
  for (const op_profile::OpRow& r : p.ops)
    if (r.op == op) return &r;
  return nullptr;
}

inline void check_training_profile(Device device) {
  int64_t convs = 0, linears = 0, norms = 0;
  // Four steps: the first profiled step may outgrow the initial event pool (then it is not
  // counted and the pool grows), so at least two of the three are counted.
  const ProfiledRun plain = run_tiny_training(device, 4, false);
  const ProfiledRun profiled = run_tiny_training(device, 4, true, &convs, &linears, &norms);
  REQUIRE(convs > 0);
  REQUIRE(linears > 0);
  REQUIRE(norms > 0);

  // Profiling changes nothing: the same losses and weights, bit for bit.
  REQUIRE(plain.losses.size() == profiled.losses.size());
  for (size_t i = 0; i < plain.losses.size(); ++i) CHECK(std::memcmp(&plain.losses[i], &profiled.losses[i], sizeof(double)) == 0);
  REQUIRE(plain.weights.size() == profiled.weights.size());
  for (size_t i = 0; i < plain.weights.size(); ++i) {
    REQUIRE(plain.weights[i].size() == profiled.weights[i].size());
    CHECK(std::memcmp(plain.weights[i].data(), profiled.weights[i].data(), plain.weights[i].size() * sizeof(double)) == 0);
  }

  const op_profile::Profile& p = profiled.profile;
  CHECK(p.device == device);
  CHECK(p.steps >= 2);
  CHECK(p.steps <= 3);
  std::string table;
  for (const op_profile::OpRow& r : p.ops) table += r.op + " " + std::to_string(r.calls) + "\n";
  INFO(table);
  // What the model must call, forward and backward apart.
  const struct {
    const char* op;
    int64_t calls;
  } expected[] = {{"conv2d", convs},       {"conv2d backward", convs}, {"linear", linears},
                  {"linear backward", linears}, {"group_norm", norms}, {"group_norm backward", norms},
                  {"mse_loss", 1},         {"mse_loss backward", 1},  {"AdamW/EMA", 1}};
  for (const auto& e : expected) {
    INFO(e.op);
    const op_profile::OpRow* r = profile_row(p, e.op);
    REQUIRE(r != nullptr);
    CHECK(r->calls == double(e.calls));
  }
  // Every time >= 0; the ops and the rest make up the step; sorted by time; shares of the step.
  double sum_ms = 0, sum_host = 0;
  for (size_t i = 0; i < p.ops.size(); ++i) {
    const op_profile::OpRow& r = p.ops[i];
    INFO(r.op);
    CHECK(r.ms >= 0);
    CHECK(r.host_ms >= 0);
    CHECK(r.calls > 0);
    CHECK(r.share == Approx(r.ms / p.step_ms));
    if (i > 0) CHECK(p.ops[i - 1].ms >= r.ms);
    sum_ms += r.ms;
    sum_host += r.host_ms;
  }
  CHECK(p.rest_ms >= 0);
  CHECK(p.host_rest_ms >= 0);
  CHECK(p.step_ms > 0);
  CHECK(sum_ms + p.rest_ms == Approx(p.step_ms).epsilon(1e-9).margin(1e-9));
  CHECK(sum_host + p.host_rest_ms == Approx(p.host_step_ms).epsilon(1e-9).margin(1e-9));
  if (device == Device::cpu) CHECK(p.step_ms == Approx(p.host_step_ms).epsilon(1e-12));
  // The phases: the loss's backward inside run_backward, AdamW after it; they make up the ops' time.
  CHECK(p.before_backward_ms > 0);
  CHECK(p.backward_ms > 0);
  CHECK(p.after_backward_ms > 0);
  CHECK(p.before_backward_ms + p.backward_ms + p.after_backward_ms == Approx(sum_ms).epsilon(1e-9).margin(1e-9));
  const std::string printed = op_profile::format_table(p, 5);
  CHECK(printed.find(p.ops[0].op) != std::string::npos);
  CHECK(printed.find("other ops") != std::string::npos);
  CHECK(printed.find("rest: before the first op") != std::string::npos);
  CHECK(printed.find("by phase") != std::string::npos);
}

// A `diffuse bench ... --profile` JSON profile: on `device`, `steps` steps, times >= 0 that add up
// to the step, a conv2d row (a conv2d backward one and a backward phase exactly when `training`).
inline void check_profile_json(const nlohmann::json& p, const char* device, int64_t steps, bool training) {
  INFO(p.dump());
  CHECK(p["device"] == device);
  CHECK(p["steps"] == steps);
  double sum = p["rest_ms"].get<double>();
  bool conv = false, conv_backward = false;
  for (const auto& op : p["ops"]) {
    CHECK(op["ms_per_step"].get<double>() >= 0);
    CHECK(op["host_ms_per_step"].get<double>() >= 0);
    sum += op["ms_per_step"].get<double>();
    conv = conv || op["op"] == "conv2d";
    conv_backward = conv_backward || op["op"] == "conv2d backward";
  }
  CHECK(conv);
  CHECK(conv_backward == training);
  CHECK(sum == Approx(p["step_ms"].get<double>()).epsilon(1e-9));
  CHECK((p["backward_ms"].get<double>() > 0) == training);
}

}  // namespace diffuse::test
