// The public API (include/diffuse/diffuse.h) on tiny random-weight UNets: loading, what a
// Pipeline resolves from scheduler configs and options, generation into caller buffers (agrees
// with the engine, deterministic per seed, every bad request one diffuse::Error of the right
// kind), write_png, training with a cancelling callback, and exceptions from callbacks passing
// through unchanged.
#include <catch2/catch.hpp>
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <thread>

#include "diffuse/diffuse.h"
#include "engine/api_internal.h"
#include "engine/generate.h"
#include "engine/image_io.h"
#include "engine/model_dir.h"
#include "engine/sampler.h"
#include "engine/scheduler_config.h"
#include "support/temp_dir.h"

using namespace diffuse;
using diffuse::test::TempDir;
namespace fs = std::filesystem;

namespace {

// The `tiny` UNet with random weights, for 16x16 images (a quarter of the work of its 32x32),
// saved as a pipeline directory; `classes` > 0 makes it class-conditional with a null class, as
// training does.
std::string save_tiny_model(const TempDir& dir, const std::string& name, int classes = 0, bool with_scheduler = true) {
  UNet2DConfig cfg = resolve_unet_config("tiny");
  cfg.sample_size = 16;
  if (classes > 0) cfg.num_class_embeds = classes + 1;
  UNet2D unet(cfg, 11);
  std::string path = dir.file(name);
  save_model_dir(path, unet, with_scheduler ? scheduler_config_to_json(SchedulerConfig{}) : "");
  return path;
}

std::vector<float> generate_floats(const Pipeline& p, const GenerateRequest& r) {
  std::vector<float> out(static_cast<size_t>(r.count) * p.image_elements());
  REQUIRE(p.generate(r, out.data(), out.size()));
  return out;
}

struct Stop {};  // an embedding program's own exception type

// The kind of the diffuse::Error `call` throws (it must throw one).
template <typename F>
ErrorKind kind_of(F&& call) {
  try {
    call();
  } catch (const Error& e) {
    return e.kind();
  }
  FAIL("no diffuse::Error thrown");
  return ErrorKind::runtime;
}

}  // namespace

TEST_CASE("Model::load reads pipeline and bare UNet directories", "[api]") {
  TempDir dir;
  std::string path = save_tiny_model(dir, "m");
  Model m = Model::load(path);
  CHECK(m.sample_size() == 16);
  CHECK(m.channels() == 1);
  CHECK(m.num_classes() == 0);
  CHECK(m.num_parameters() == UNet2D(resolve_unet_config("tiny")).num_parameters());
  CHECK(m.device() == Device::cpu);
  CHECK(m.directory() == path);
  CHECK_THAT(m.scheduler_config_json(), Catch::Contains("DDPMScheduler"));

  Model bare = Model::load(path + "/unet");
  CHECK(bare.scheduler_config_json().empty());
  CHECK(bare.num_parameters() == m.num_parameters());
  CHECK(Model::load(save_tiny_model(dir, "c", 3)).num_classes() == 3);
  CHECK(!version().empty());
}

TEST_CASE("Model::load failures are one diffuse::Error naming the path", "[api]") {
  TempDir dir;
  CHECK_THROWS_WITH(Model::load(dir.file("absent")), Catch::Contains(dir.file("absent")));
  fs::create_directories(dir.file("empty"));
  CHECK_THROWS_AS(Model::load(dir.file("empty")), Error);
  // A path the file system refuses to look up (a name over NAME_MAX): the path and the reason, as
  // bad input, not std::filesystem's own message.
  const std::string long_name = dir.file(std::string(300, 'x'));
  try {
    Model::load(long_name);
    FAIL("Model::load of a name over NAME_MAX returned");
  } catch (const Error& e) {
    CHECK(std::string(e.what()) == long_name + ": File name too long");
    CHECK(e.kind() == ErrorKind::bad_input);
  }
  if (!cuda_available())
    CHECK_THROWS_WITH(Model::load(save_tiny_model(dir, "m"), Device::cuda), Catch::Contains("CUDA"));
  // A run directory without a complete checkpoint: bad input naming it (a run with one loads its
  // latest checkpoint's ema/: tests/cpu/test_sample_cli.cpp).
  fs::create_directories(dir.file("run/checkpoints/step-3.tmp-1"));
  CHECK(kind_of([&] { Model::load(dir.file("run")); }) == ErrorKind::bad_input);
  CHECK_THROWS_WITH(Model::load(dir.file("run")), Catch::Contains(dir.file("run") + ": a run directory without"));
}

TEST_CASE("Pipeline takes the scheduler from the model, a file or defaults, and the sampler from options", "[api]") {
  TempDir dir;
  Model m = Model::load(save_tiny_model(dir, "m"));
  CHECK(Pipeline(m).sampler() == "ddpm");  // the default, as `diffuse sample` (the demo's: DDPM-100)
  CHECK(Pipeline(m).steps() == 100);
  SamplerOptions o;
  o.sampler = "";  // the scheduler config's own
  o.steps = 50;
  Pipeline own(m, o);
  CHECK(own.sampler() == "ddpm");
  CHECK(own.steps() == 50);
  CHECK(own.timesteps().size() == 50);
  CHECK(own.timesteps().front() > own.timesteps().back());

  o.sampler = "dpmpp-2m";
  o.steps = 7;
  Pipeline dpm(m, o);
  CHECK(dpm.sampler() == "dpmpp-2m");
  CHECK(dpm.timesteps().size() == 7);
  CHECK_THAT(dpm.scheduler_config_json(), Catch::Contains("DPMSolverMultistepScheduler"));

  // A scheduler config file replaces the model's: its beta schedule and class are used.
  SchedulerConfig cosine;
  cosine.kind = SamplerKind::ddim;
  cosine.beta_schedule = BetaSchedule::squaredcos_cap_v2;
  write_scheduler_config(dir.file("sched.json"), cosine);
  o = SamplerOptions{};
  o.sampler = "";
  o.scheduler_config = dir.file("sched.json");
  Pipeline from_file(m, o);
  CHECK(from_file.sampler() == "ddim");
  CHECK_THAT(from_file.scheduler_config_json(), Catch::Contains("squaredcos_cap_v2"));

  // A bare UNet directory has no scheduler config: diffusers' DDPMScheduler defaults.
  o = SamplerOptions{};
  o.sampler = "";
  Pipeline bare(Model::load(m.directory() + "/unet"), o);
  CHECK(bare.sampler() == "ddpm");
  CHECK_THAT(bare.scheduler_config_json(), Catch::Contains("\"beta_schedule\": \"linear\""));

  o = SamplerOptions{};
  o.sampler = "euler";
  CHECK_THROWS_WITH(Pipeline(m, o), Catch::Contains("euler"));
  o = SamplerOptions{};
  o.steps = 0;
  CHECK_THROWS_WITH(Pipeline(m, o), Catch::Contains("steps"));
  o = SamplerOptions{};
  o.eta = 1.5;
  CHECK_THROWS_WITH(Pipeline(m, o), Catch::Contains("eta"));
  o = SamplerOptions{};
  o.scheduler_config = dir.file("missing.json");
  CHECK_THROWS_WITH(Pipeline(m, o), Catch::Contains("missing.json"));
}

TEST_CASE("Pipeline::generate writes the engine's images into the caller's buffer", "[api]") {
  TempDir dir;
  std::string path = save_tiny_model(dir, "m");
  Model m = Model::load(path);
  SamplerOptions o;
  o.sampler = "ddim";
  o.steps = 2;
  o.eta = 0.5;
  Pipeline p(m, o);
  REQUIRE(p.image_elements() == 16 * 16 * 1);
  GenerateRequest r;
  r.count = 3;
  r.batch = 2;
  r.seed = 5;
  std::vector<float> a = generate_floats(p, r);

  // The same call through the engine, on an independently loaded copy of the weights.
  auto unet = load_unet(locate_model_dir(path));
  SchedulerConfig sc = read_scheduler_config(path + "/scheduler/scheduler_config.json");
  sc.kind = SamplerKind::ddim;
  GenerateOptions g;
  g.count = 3;
  g.batch = 2;
  g.steps = 2;
  g.eta = 0.5;
  g.seed = 5;
  std::vector<double> engine = generate(*unet, sc, g).to_vector();
  REQUIRE(engine.size() == a.size());
  for (size_t i = 0; i < a.size(); ++i) REQUIRE(a[i] == static_cast<float>(engine[i]));

  CHECK(generate_floats(p, r) == a);  // deterministic
  r.seed = 6;
  CHECK(generate_floats(p, r) != a);
  for (float v : a) REQUIRE((v >= -1.0f && v <= 1.0f));

  // 8-bit output: the same images through round((x + 1) / 2 * 255).
  r.seed = 5;
  std::vector<uint8_t> bytes(a.size() + 10, 77);
  REQUIRE(p.generate(r, bytes.data(), bytes.size()));
  for (size_t i = 0; i < a.size(); ++i)
    REQUIRE(bytes[i] == static_cast<uint8_t>(std::lround((a[i] + 1.0f) / 2.0f * 255.0f)));
  CHECK(bytes[a.size()] == 77);  // nothing written past count images
}

TEST_CASE("bad generate requests are one diffuse::Error naming the field", "[api]") {
  TempDir dir;
  Model m = Model::load(save_tiny_model(dir, "m"));
  SamplerOptions o;
  o.steps = 2;
  Pipeline p(m, o);
  std::vector<float> buf(4 * p.image_elements());
  auto fails_with = [&](GenerateRequest r, const std::string& text, size_t size = 0) {
    INFO(text);
    CHECK_THROWS_WITH(p.generate(r, buf.data(), size ? size : buf.size()), Catch::Contains(text));
  };
  GenerateRequest r;
  r.count = 0;
  fails_with(r, "count");
  r = GenerateRequest{};
  r.batch = -1;
  fails_with(r, "batch");
  r = GenerateRequest{};
  r.class_label = 0;
  fails_with(r, "unconditional");
  r = GenerateRequest{};
  r.guidance = 3;
  fails_with(r, "needs a class_label");
  r = GenerateRequest{};
  r.count = 5;
  fails_with(r, "5 images need 1280");
  r = GenerateRequest{};
  fails_with(r, "holds 10 floats", 10);
  CHECK_THROWS_WITH(p.generate(GenerateRequest{}, static_cast<float*>(nullptr), 100), Catch::Contains("null"));
}

TEST_CASE("class-conditional generation with guidance, progress and cancel", "[api]") {
  TempDir dir;
  Model m = Model::load(save_tiny_model(dir, "c", 2));
  SamplerOptions o;
  o.sampler = "ddim";
  o.steps = 2;
  Pipeline p(m, o);
  GenerateRequest r;
  r.count = 2;
  r.class_label = 0;
  r.guidance = 3.0;
  std::vector<float> c0 = generate_floats(p, r);
  r.class_label = 1;
  std::vector<float> c1 = generate_floats(p, r);
  CHECK(c0 != c1);
  r.guidance = 1.0;
  CHECK(generate_floats(p, r) != c1);
  r.class_label = -1;
  CHECK(generate_floats(p, r).size() == c0.size());
  r.class_label = 2;  // the null class is not a label
  std::vector<float> buf(c0.size());
  CHECK_THROWS_WITH(p.generate(r, buf.data(), buf.size()), Catch::Contains("0..1"));

  r = GenerateRequest{};
  r.count = 3;
  r.batch = 2;
  std::vector<std::array<int, 3>> calls;
  buf.resize(3 * p.image_elements());
  CHECK(p.generate(r, buf.data(), buf.size(), [&](int b, int s, int n) {
    calls.push_back({b, s, n});
    return true;
  }));
  // Each batch counts its own steps 1..steps (never a running total across batches).
  CHECK(calls == std::vector<std::array<int, 3>>{{0, 1, 2}, {0, 2, 2}, {1, 1, 2}, {1, 2, 2}});
  CHECK_FALSE(p.generate(r, buf.data(), buf.size(), [](int, int s, int) { return s < 1; }));
  CHECK_THROWS_AS(p.generate(r, buf.data(), buf.size(), [](int, int, int) -> bool { throw Stop{}; }), Stop);
}

TEST_CASE("write_png writes one image or a grid, in the 8-bit mapping", "[api]") {
  TempDir dir;
  std::vector<float> img(2 * 3 * 1, -1.0f);  // 2 rows x 3 columns, gray
  img[1] = 1.0f;
  img[2] = 0.0f;
  write_png(dir.file("one.png"), img.data(), 1, 2, 3, 1);
  Image8 one = read_image(dir.file("one.png"));
  CHECK(one.width == 3);
  CHECK(one.height == 2);
  CHECK(one.pixels == std::vector<uint8_t>{0, 255, 128, 0, 0, 0});

  std::vector<float> five(5 * 4 * 4 * 3, 0.5f);
  write_png(dir.file("grid.png"), five.data(), 5, 4, 4, 3);
  Image8 grid = read_image(dir.file("grid.png"));
  CHECK(grid.width == 3 * 4 + 4 * 2);  // ceil(sqrt(5)) = 3 per row, 2-pixel borders
  CHECK(grid.height == 2 * 4 + 3 * 2);
  CHECK(grid.channels == 3);
  write_png(dir.file("row.png"), five.data(), 5, 4, 4, 3, 5);
  CHECK(read_image(dir.file("row.png")).height == 4 + 2 * 2);

  CHECK_THROWS_WITH(write_png(dir.file("x.png"), five.data(), 1, 4, 4, 2), Catch::Contains("channels"));
  CHECK_THROWS_WITH(write_png(dir.file("x.png"), nullptr, 1, 4, 4, 3), Catch::Contains("null"));
  CHECK_THROWS_WITH(write_png(dir.file("no/such/dir/x.png"), five.data(), 1, 4, 4, 3), Catch::Contains("x.png"));
  CHECK_FALSE(fs::exists(dir.file("x.png")));
}

TEST_CASE("train through the public API: progress, cancel, a loadable checkpoint", "[api]") {
  TempDir dir;
  // Four 16x16 gray images in two class folders, and `tiny` for 16x16 images.
  for (int i = 0; i < 4; ++i) {
    Image8 img{16, 16, 1, std::vector<uint8_t>(16 * 16, static_cast<uint8_t>(40 * i))};
    std::string cls = dir.file(i % 2 ? "data/b" : "data/a");
    fs::create_directories(cls);
    write_image(cls + "/" + std::to_string(i) + ".png", img);
  }
  UNet2DConfig cfg = resolve_unet_config("tiny");
  cfg.sample_size = 16;
  test::write_bytes(dir.file("unet.json"), unet_config_to_json(cfg));
  TrainRequest req;
  req.config = dir.file("unet.json");
  req.data = dir.file("data");
  req.out = dir.file("run");
  req.steps = 5;
  req.batch = 2;
  req.lr = 1e-3;
  req.classes = 2;
  std::vector<TrainUpdate> updates;
  TrainSummary s = train(req, [&](const TrainUpdate& u) {
    updates.push_back(u);
    return u.step < 2;
  });
  CHECK(s.cancelled);
  CHECK(s.first_step == 1);
  CHECK(s.last_step == 2);
  CHECK(std::isfinite(s.final_loss));
  CHECK(fs::path(s.checkpoint).filename() == "step-2");
  CHECK(s.model_dir == s.checkpoint + "/ema");
  REQUIRE(updates.size() == 4);  // the data, step 1, step 2, then the checkpoint notice
  CHECK(updates[0].step == 0);
  CHECK(updates[0].event == "data " + req.data + ": 4 images, 16x16, 1 channel, 2 classes");
  CHECK(updates[1].step == 1);
  CHECK(updates[1].total == 5);
  CHECK(updates[2].loss == s.final_loss);
  CHECK(updates[3].event == "checkpoint " + s.checkpoint);

  Model trained = Model::load(s.model_dir);
  CHECK(trained.num_classes() == 2);
  SamplerOptions own;
  own.sampler = "";
  CHECK(Pipeline(trained, own).sampler() == "ddpm");  // the run's scheduler config travels with it

  // Resuming continues after the checkpoint; a callback's own exception passes through unchanged.
  req.resume = true;
  CHECK_THROWS_AS(train(req, [](const TrainUpdate&) -> bool { throw Stop{}; }), Stop);
  // The run directory's rules name the library's fields, with the kind of mistake.
  req.resume = false;
  CHECK_THROWS_WITH(train(req), Catch::Contains("already has checkpoints; set TrainRequest::resume"));
  CHECK(kind_of([&] { train(req); }) == ErrorKind::usage);
  req.resume = true;
  req.steps = 2;  // the run has step-2
  CHECK_THROWS_WITH(train(req), Catch::Contains("already trained to step 2; raise TrainRequest::steps"));
  CHECK(kind_of([&] { train(req); }) == ErrorKind::usage);
  req.steps = 5;
  const std::string run = req.out;
  req.out = dir.file("never-trained");
  CHECK_THROWS_WITH(train(req), Catch::Contains("TrainRequest::resume given but the run has no checkpoint"));
  CHECK(kind_of([&] { train(req); }) == ErrorKind::bad_input);
  req.resume = false;
  req.out = dir.file("run3");
  fs::create_directories(dir.file("flat"));  // images without class folders: no labels
  for (int i = 0; i < 2; ++i)
    write_image(dir.file("flat/" + std::to_string(i) + ".png"), Image8{16, 16, 1, std::vector<uint8_t>(16 * 16, 9)});
  req.data = dir.file("flat");
  CHECK_THROWS_WITH(train(req), Catch::Contains("has no labels, and the run is class-conditional (2 classes)"));
  CHECK(kind_of([&] { train(req); }) == ErrorKind::bad_input);
  req.data = dir.file("data");
  // A run that ends in an exception (here the callback's own) leaves report.html finished, not
  // reloading itself every few seconds forever.
  req.out = dir.file("run4");
  CHECK_THROWS_AS(train(req,
                        [](const TrainUpdate& u) -> bool {
                          if (u.step == 2) throw Stop{};
                          return true;
                        }),
                  Stop);
  CHECK(test::slurp(req.out + "/report.html").find("<body data-live=\"0\"") != std::string::npos);
  req.out = run;
  req.out = "";
  CHECK_THROWS_WITH(train(req), Catch::Contains("out"));
  req.out = dir.file("run2");
  req.data = dir.file("nothing-here");
  CHECK_THROWS_WITH(train(req), Catch::Contains("nothing-here"));
}

TEST_CASE("a step's images/s counts its own steps, not the sample grid or checkpoint written before it", "[api]") {
  // The callback holds the trainer for 3 s at the step-2 grid: that time belongs to no step, so
  // step 3's interval is its own, like step 4's (before, step 3 showed the 3 s as well). Judged
  // against step 4 rather than a fixed time: a `tiny` step at batch 2 takes milliseconds, but
  // 0.7 s under the sanitizers on a busy 2-core machine.
  TempDir dir;
  TrainRequest req;
  req.out = dir.file("run");
  req.max_images = 8;
  req.batch = 2;
  req.steps = 4;
  req.sample_every = 2;
  req.sample_count = 1;
  std::vector<TrainUpdate> steps;
  train(req, [&](const TrainUpdate& u) {
    if (u.event.rfind("samples ", 0) == 0 && u.step == 2) std::this_thread::sleep_for(std::chrono::seconds(3));
    if (u.event.empty()) steps.push_back(u);
    return true;
  });
  REQUIRE(steps.size() == 4);
  CHECK(steps[2].step == 3);
  const double step3 = 2 / steps[2].images_per_second, step4 = 2 / steps[3].images_per_second;  // batch 2
  INFO("step 3: " << step3 << " s, step 4: " << step4 << " s");
  CHECK(step3 < step4 + 1.5);                         // with the 3 s it would be step 4's time + 3 s
  CHECK(steps[2].seconds - steps[1].seconds >= 3.0);  // the elapsed time still includes it
}

TEST_CASE("each error carries its kind: usage, bad input, an unavailable device", "[api]") {
  TempDir dir;
  Model m = Model::load(save_tiny_model(dir, "m"));
  CHECK(kind_of([&] { Model::load(dir.file("no-such-model")); }) == ErrorKind::bad_input);
  test::write_bytes(dir.file("bad-scheduler.json"), "{");
  SamplerOptions o;
  o.scheduler_config = dir.file("bad-scheduler.json");
  CHECK(kind_of([&] { Pipeline(m, o); }) == ErrorKind::bad_input);
  o = SamplerOptions{};
  o.steps = 0;
  CHECK(kind_of([&] { Pipeline(m, o); }) == ErrorKind::usage);
  o.steps = 1;
  o.sampler = "euler";
  CHECK(kind_of([&] { Pipeline(m, o); }) == ErrorKind::usage);
  Pipeline p(m, SamplerOptions{});
  std::vector<float> buf(p.image_elements());
  GenerateRequest r;
  r.count = 1;
  r.class_label = 0;  // the model is unconditional
  CHECK(kind_of([&] { p.generate(r, buf.data(), buf.size()); }) == ErrorKind::bad_input);
  r.class_label = -1;
  r.count = 2;  // the buffer holds one image
  CHECK(kind_of([&] { p.generate(r, buf.data(), buf.size()); }) == ErrorKind::usage);
  TrainRequest t;
  t.out = dir.file("run");
  t.lr = 0;
  CHECK(kind_of([&] { train(t); }) == ErrorKind::usage);
  CHECK_THROWS_WITH(train(t), Catch::Contains("TrainRequest::lr must be positive"));
  if (!cuda_available()) {
    CHECK(kind_of([&] { Model::load(dir.file("m"), Device::cuda); }) == ErrorKind::device_unavailable);
    t.lr = 1e-4;
    t.device = Device::cuda;
    CHECK(kind_of([&] { train(t); }) == ErrorKind::device_unavailable);
  }
  CHECK_FALSE(fs::exists(dir.file("run")));
  CHECK(Error("plain").kind() == ErrorKind::runtime);  // a throw without a kind is a runtime failure
}

TEST_CASE("GenerateRequest::initial_noise replaces the seed's x_T, clamp = false keeps x_0 as sampled", "[api]") {
  TempDir dir;
  Model m = Model::load(save_tiny_model(dir, "m"));
  SchedulerConfig unclipped;  // clip_sample would keep DDPM's last x_0 in [-1, 1] anyway
  unclipped.clip_sample = false;
  diffuse::test::write_bytes(dir.file("scheduler.json"), scheduler_config_to_json(unclipped));
  SamplerOptions o;
  o.sampler = "ddpm";  // its steps add noise of their own, which still comes from the seed
  o.steps = 2;
  o.scheduler_config = dir.file("scheduler.json");
  Pipeline p(m, o);
  GenerateRequest r;
  r.count = 3;
  r.batch = 2;
  r.seed = 4;
  r.clamp = false;
  const std::vector<float> seeded = generate_floats(p, r);

  // The seed's own x_T of both batches, NHWC, given back as initial noise: the same samples.
  for (int64_t k = 0, b0 = 0; b0 < r.count; b0 += r.batch, ++k) {
    const int64_t nb = std::min(r.batch, r.count - b0);
    for (double v : Sampler::initial_noise({nb, 16, 16, 1}, batch_noise_seed(r.seed, k)).to_vector())
      r.initial_noise.push_back(static_cast<float>(v));
  }
  CHECK(generate_floats(p, r) == seeded);
  bool outside = false;  // unclamped: a random-weight model leaves [-1, 1]
  for (float v : seeded) outside = outside || v < -1.0f || v > 1.0f;
  CHECK(outside);
  r.clamp = true;
  const std::vector<float> clamped = generate_floats(p, r);
  for (size_t i = 0; i < seeded.size(); ++i) REQUIRE(clamped[i] == std::clamp(seeded[i], -1.0f, 1.0f));

  r.initial_noise[0] += 1.0f;  // the noise is really used
  CHECK(generate_floats(p, r) != clamped);
  std::vector<float> buf(3 * p.image_elements());
  r.initial_noise.pop_back();
  CHECK_THROWS_WITH(p.generate(r, buf.data(), buf.size()),
                    Catch::Contains("GenerateRequest::initial_noise holds 767 floats") && Catch::Contains("768"));
  r.initial_noise.push_back(std::nanf(""));
  CHECK_THROWS_WITH(p.generate(r, buf.data(), buf.size()), Catch::Contains("initial_noise[767] is not finite"));
}
