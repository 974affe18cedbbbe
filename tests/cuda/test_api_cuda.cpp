// The public API (include/diffuse/diffuse.h) with Device::cuda, the route an embedding program
// takes to the GPU: cuda_available(), Model::load onto the device, Pipeline::generate (floats and
// 8-bit, guided) giving the CPU's images for the same seed, and diffuse::train on the device with
// its progress callback. The CLI tests (test_train_cuda.cpp) cover the same engine through argv;
// this covers the library boundary (errors, buffers, callbacks) on the device.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "diffuse/diffuse.h"
#include "engine/model_dir.h"
#include "engine/scheduler_config.h"
#include "nn/runtime.h"
#include "nn/unet2d.h"
#include "support/cuda_guard.h"
#include "support/temp_dir.h"

using namespace diffuse;
using diffuse::test::TempDir;
namespace fs = std::filesystem;

namespace {

// The `tiny` UNet with random weights for 8x8 images, saved as a pipeline directory;
// `classes` > 0 makes it class-conditional with a null class.
std::string save_tiny_model(const TempDir& dir, const std::string& name, int classes = 0) {
  UNet2DConfig cfg = resolve_unet_config("tiny");
  cfg.sample_size = 8;
  if (classes > 0) cfg.num_class_embeds = classes + 1;
  UNet2D unet(cfg, 11);
  const std::string path = dir.file(name);
  save_model_dir(path, unet, scheduler_config_to_json(SchedulerConfig{}));
  return path;
}

template <typename T>
std::vector<T> generate(const Pipeline& p, const GenerateRequest& r) {
  std::vector<T> out(static_cast<size_t>(r.count) * p.image_elements());
  REQUIRE(p.generate(r, out.data(), out.size()));
  return out;
}

double max_abs_difference(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (!std::isfinite(d)) return INFINITY;
    worst = std::max(worst, d);
  }
  return worst;
}

}  // namespace

TEST_CASE("api cuda: a model loaded onto CUDA generates the CPU's images for the same seed", "[cuda][api]") {
  DIFFUSE_CUDA_TEST_GUARD();
  CHECK(cuda_available());
  TempDir dir;
  const std::string path = save_tiny_model(dir, "tiny");
  const Model on_cpu = Model::load(path), on_cuda = Model::load(path, Device::cuda);
  CHECK(on_cuda.device() == Device::cuda);
  CHECK(on_cuda.num_parameters() == on_cpu.num_parameters());
  for (const char* sampler : {"ddim", "ddpm", "dpmpp-2m"}) {
    INFO("sampler " << sampler);
    SamplerOptions o;
    o.sampler = sampler;
    o.steps = 4;
    const Pipeline cpu(on_cpu, o), gpu(on_cuda, o);
    GenerateRequest r;
    r.count = 3;
    r.batch = 2;  // a full batch and a partial one
    r.seed = 17;
    // A few sampler steps of f32 rounding differences (and DDPM's device-drawn noise, the same
    // Philox numbers) on values in [-1, 1].
    const double diff = max_abs_difference(generate<float>(gpu, r), generate<float>(cpu, r));
    INFO("largest difference " << diff);
    CHECK(diff <= 1e-4);
    const std::vector<uint8_t> a = generate<uint8_t>(gpu, r), b = generate<uint8_t>(cpu, r);
    int worst = 0;
    for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(int(a[i]) - int(b[i])));
    CHECK(worst <= 1);
  }
}

TEST_CASE("api cuda: GenerateRequest::conv_search sets how cuDNN chooses for the call, and heuristic images match",
          "[cuda][api]") {
  DIFFUSE_CUDA_TEST_GUARD();
  TempDir dir;
  const std::string path = save_tiny_model(dir, "tiny");
  SamplerOptions o;
  o.sampler = "ddim";
  o.steps = 3;
  const Pipeline cpu(Model::load(path), o), gpu(Model::load(path, Device::cuda), o);
  GenerateRequest r;
  r.count = 2;
  r.seed = 5;
  const std::vector<float> want = generate<float>(cpu, r);
  r.conv_search = "heuristic";
  const std::vector<float> heuristic = generate<float>(gpu, r);
  CHECK(conv_search() == "heuristic");
  CHECK(max_abs_difference(heuristic, want) <= 1e-4);
  CHECK(generate<float>(gpu, r) == heuristic);  // the plans made by the first call, again
  r.conv_search = "timed";
  CHECK(max_abs_difference(generate<float>(gpu, r), want) <= 1e-4);
  CHECK(conv_search() == "timed");
  r.conv_search = "fastest";
  std::vector<float> out(r.count * gpu.image_elements());
  CHECK_THROWS_WITH(gpu.generate(r, out.data(), out.size()), Catch::Contains("GenerateRequest::conv_search"));
  CHECK(conv_search() == "timed");
}

TEST_CASE("api cuda: guided class-conditional generation on CUDA equals the CPU's", "[cuda][api]") {
  DIFFUSE_CUDA_TEST_GUARD();
  TempDir dir;
  const std::string path = save_tiny_model(dir, "cond", 4);
  SamplerOptions o;
  o.steps = 3;
  const Pipeline cpu(Model::load(path), o), gpu(Model::load(path, Device::cuda), o);
  GenerateRequest r;
  r.count = 2;
  r.class_label = 2;
  r.guidance = 3.0;
  r.seed = 5;
  const double diff = max_abs_difference(generate<float>(gpu, r), generate<float>(cpu, r));
  INFO("largest difference " << diff);
  CHECK(diff <= 1e-4);
  // A label the model does not have is the same one-line error on the device.
  r.class_label = 4;
  std::vector<float> out(2 * gpu.image_elements());
  CHECK_THROWS_WITH(gpu.generate(r, out.data(), out.size()), Catch::Contains("class_label 4"));
}

TEST_CASE("api cuda: diffuse::train on the device reports every step and writes a loadable model",
          "[cuda][api][train]") {
  DIFFUSE_CUDA_TEST_GUARD();
  TempDir dir;
  TrainRequest t;
  t.data = "fashion-mnist";
  t.max_images = 16;
  t.out = dir.file("run");
  t.steps = 3;
  t.batch = 2;
  t.lr = 1e-3;
  t.device = Device::cuda;
  std::vector<double> losses;
  const TrainSummary s = train(t, [&](const TrainUpdate& u) {
    if (u.event.empty()) losses.push_back(u.loss);
    return true;
  });
  CHECK(s.last_step == 3);
  REQUIRE(losses.size() == 3);
  for (double l : losses) CHECK(std::isfinite(l));
  REQUIRE(fs::exists(s.model_dir));
  const Model m = Model::load(s.model_dir, Device::cuda);
  CHECK(m.sample_size() == 32);
  // A cancelling callback stops the device run, with a checkpoint, at the end of the group of steps
  // read back with the step it saw (status_every, default 10: here the run's last step, 3), and
  // with status_every = 1 after the step it saw.
  for (int64_t every : {10, 1}) {
    INFO("status_every " << every);
    t.out = dir.file("cancelled-" + std::to_string(every));
    t.status_every = every;
    const TrainSummary c = train(t, [](const TrainUpdate& u) { return !(u.event.empty() && u.step == 1); });
    CHECK(c.cancelled);
    CHECK(c.last_step == (every == 1 ? 1 : 3));
    CHECK(fs::exists(c.checkpoint + "/state.json"));
  }
}
