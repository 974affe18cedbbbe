// The named training step (engine/train_step.h) is the trainer's step: a TrainStep driven by hand
// over the same batches gives bit-identical weights, EMA weights and losses to train() — plain, and
// with every per-step option that draws or weighs something (label dropout, min-SNR weights,
// v-prediction, warmup then cosine lr, flips, weight decay, no clipping).
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/dataset.h"
#include "engine/train_step.h"
#include "engine/trainer.h"
#include "engine/unet_weights.h"
#include "support/temp_dir.h"

using namespace diffuse;
using namespace diffuse::test;

namespace {

TrainOptions small_options(const std::string& out) {
  TrainOptions o;
  o.data = "fashion-mnist";
  o.max_images = 24;
  o.config = "tiny";
  o.out = out;
  o.steps = 3;
  o.batch = 4;
  o.lr = 1e-3;
  o.seed = 3;
  return o;
}

std::vector<std::vector<double>> values(const std::vector<Tensor>& tensors) {
  std::vector<std::vector<double>> out;
  for (const Tensor& t : tensors) out.push_back(t.to_vector());
  return out;
}

std::vector<std::vector<double>> saved_weights(const UNet2DConfig& cfg, const std::string& model_dir) {
  UNet2D m(cfg);
  load_unet_weights(m, model_dir + "/unet/diffusion_pytorch_model.safetensors");
  return values(m.parameters());
}

std::vector<double> metric_losses(const std::string& path) {
  std::vector<double> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(nlohmann::json::parse(line).at("loss").get<double>());
  return out;
}

void check_step_matches_train(const std::function<void(TrainOptions&)>& edit) {
  TempDir dir;
  TrainOptions o = small_options(dir.file("run"));
  if (edit) edit(o);
  const TrainResult trained = train(o);
  REQUIRE(trained.last_step == o.steps);

  const UNet2DConfig cfg = training_unet_config(o);
  DatasetOptions dopt;
  dopt.max_images = o.max_images;
  dopt.load_labels = o.classes > 0;
  Dataset data = load_dataset(o.data, cfg.sample_size, cfg.in_channels, dopt);
  Batcher batcher(data, o.batch, o.seed, o.random_flip);
  TrainStep step(cfg, o);
  std::vector<double> losses;
  for (int64_t s = 1; s <= o.steps; ++s) {
    TrainStepResult r = step.run(s, batcher.next());
    REQUIRE(r.non_finite.empty());
    CHECK(r.lr == step.lr_at(s));
    losses.push_back(r.loss);
  }
  const std::string ckpt = trained.last_checkpoint;
  CHECK(values(step.parameters()) == saved_weights(cfg, ckpt + "/model"));
  CHECK(values(step.ema().shadow()) == saved_weights(cfg, ckpt + "/ema"));
  CHECK(losses == metric_losses(o.out + "/metrics.jsonl"));
  CHECK(step.adam().step_count() == o.steps);
}

}  // namespace

TEST_CASE("a TrainStep run by hand gives train()'s weights, EMA and losses bit for bit", "[train]") {
  SECTION("defaults") { check_step_matches_train({}); }
  SECTION("labels, min-SNR, v-prediction, warmup + cosine, flips, weight decay, no clipping") {
    check_step_matches_train([](TrainOptions& o) {
      o.classes = 10;
      o.p_uncond = 0.5;
      o.snr_gamma = 5;
      o.prediction = "v_prediction";
      o.warmup = 1;
      o.lr_schedule = "cosine";
      o.random_flip = true;
      o.weight_decay = 0.01;
      o.grad_clip = 0;
    });
  }
}

TEST_CASE("the learning rate warms up linearly, then stays or follows the cosine", "[train]") {
  TrainOptions o = small_options("");
  o.lr = 1e-3;
  o.steps = 10;
  o.warmup = 4;
  TrainStep constant(training_unet_config(o), o);
  CHECK(constant.lr_at(1) == 0);
  CHECK(constant.lr_at(3) == Approx(0.5e-3));
  CHECK(constant.lr_at(5) == 1e-3);
  CHECK(constant.lr_at(10) == 1e-3);
  o.lr_schedule = "cosine";
  TrainStep cosine(training_unet_config(o), o);
  CHECK(cosine.lr_at(5) == Approx(1e-3));
  CHECK(cosine.lr_at(8) == Approx(0.5e-3));  // halfway through the 6 steps after warmup
}

TEST_CASE("a non-finite loss stops the step before the update, naming it", "[train]") {
  TrainOptions o = small_options("");
  o.lr = 1e30;
  o.grad_clip = 0;
  const UNet2DConfig cfg = training_unet_config(o);
  DatasetOptions dopt;
  dopt.max_images = 8;
  Dataset data = load_dataset(o.data, cfg.sample_size, cfg.in_channels, dopt);
  Batcher batcher(data, o.batch, o.seed);
  TrainStep step(cfg, o);
  TrainStepResult r;
  int64_t s = 1;
  for (; s <= 20 && r.non_finite.empty(); ++s) r = step.run(s, batcher.next());
  REQUIRE_FALSE(r.non_finite.empty());
  CHECK_THAT(r.non_finite, Catch::Contains("loss is") || Catch::Contains("gradient norm is"));
  CHECK(step.adam().step_count() == s - 2);  // every step before the failing one updated the weights
}
