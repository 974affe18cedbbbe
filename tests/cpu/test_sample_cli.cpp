// `diffuse sample` and `diffuse forward` as a user meets them (issue 14, issue 13's interop
// flags): every bad flag, flag combination or output path is one line naming the flag and the
// documented exit code before any work (the model given is often missing, so an error about the
// output proves it came first); zero or negative counts never reach a division; progress counts
// each batch's own steps; --noise and --out-raw carry NCHW tensors in and out (checked against
// the engine's own noise on a 3-channel model, where a layout mix-up shows); and `forward
// --random-input` makes an input that is itself a valid --input.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <limits>

#include "engine/generate.h"
#include "engine/model_dir.h"
#include "engine/sampler.h"
#include "engine/scheduler_config.h"
#include "nn/layout.h"
#include "nn/safetensors.h"
#include "nn/unet2d.h"
#include "support/process.h"
#include "support/temp_dir.h"

using namespace diffuse;
using namespace diffuse::test;
namespace fs = std::filesystem;

namespace {

int lines(const std::string& output) {
  int n = 0;
  for (char c : output) n += c == '\n';
  return n;
}

// A 3-channel `tiny` UNet for 8x8 images with random weights, as a pipeline directory.
struct RgbModel {
  TempDir dir;
  std::string path = dir.file("model");
  RgbModel() {
    UNet2DConfig cfg = resolve_unet_config("tiny");
    cfg.sample_size = 8;
    cfg.in_channels = cfg.out_channels = 3;
    UNet2D unet(cfg, 3);
    save_model_dir(path, unet, scheduler_config_to_json(SchedulerConfig{}));
  }
};

// An error before any work: the exit code docs/cli.md gives its kind, one line, naming every
// string in `names`.
void check_error(const std::vector<std::string>& args, int exit_code, const std::vector<std::string>& names) {
  auto r = run_cli(args);
  INFO(r.output);
  CHECK(r.exit_code == exit_code);
  CHECK(lines(r.output) == 1);
  for (const auto& n : names) CHECK_THAT(r.output, Catch::Contains(n));
}
void check_usage_error(const std::vector<std::string>& args, const std::vector<std::string>& names) {
  check_error(args, 2, names);
}

Tensor read_tensor(const std::string& path, const std::string& name) { return SafetensorsFile::open(path).get(name); }

}  // namespace

TEST_CASE("sample checks output paths before loading the model", "[cli][sample]") {
  TempDir dir;
  const std::string missing = dir.file("no-model");
  check_usage_error({"sample", "--model", missing, "--out", dir.file("x.jpg")}, {"--out", "x.jpg", ".png"});
  check_usage_error({"sample", "--model", missing, "--out-raw", dir.file("x.npy")}, {"--out-raw", ".safetensors"});
  // A place that cannot be written is a bad path (exit 1, as for `train --out`).
  write_bytes(dir.file("a-file"), "not a directory");
  check_error({"sample", "--model", missing, "--out", dir.file("a-file/g.png")}, 1, {"--out", "not a directory"});
  check_error({"sample", "--model", missing, "--out-dir", dir.file("a-file")}, 1, {"--out-dir", "not a directory"});
  check_error({"sample", "--model", missing, "--out-dir", dir.file("a-file/sub")}, 1, {"--out-dir", "not a directory"});
  check_error({"sample", "--model", missing, "--out-raw", dir.file("a-file/r.safetensors")}, 1, {"--out-raw"});
  fs::create_directories(dir.file("d.png"));
  check_error({"sample", "--model", missing, "--out", dir.file("d.png")}, 1, {"--out", "is a directory"});
  check_usage_error({"sample", "--model", missing}, {"--out or --out-dir is required (or --out-raw"});
  if (::geteuid() != 0) {  // root writes anywhere: the permission check is only testable as a user
    fs::create_directories(dir.file("ro"));
    fs::permissions(dir.file("ro"), fs::perms::owner_read | fs::perms::owner_exec);
    check_error({"sample", "--model", missing, "--out", dir.file("ro/new/g.png")}, 1, {"--out", "not writable"});
    fs::permissions(dir.file("ro"), fs::perms::owner_all);
  }
  // A --noise file that is not there is a bad file (exit 1), also before the model.
  auto r = run_cli({"sample", "--model", missing, "--out", dir.file("g.png"), "--noise", dir.file("none.safetensors")});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Contains("--noise") && Catch::Contains("none.safetensors"));
  std::vector<std::string> made{"a-file", "d.png"};
  if (::geteuid() != 0) made.push_back("ro");
  CHECK(dir.entries() == made);  // no output and no directory created
}

TEST_CASE("sample refuses zero or negative counts and guidance without a class in one line", "[cli][sample]") {
  TempDir dir;
  const std::string missing = dir.file("no-model"), out = dir.file("g.png");
  for (const char* flag : {"--batch", "--n", "--steps"})
    for (const char* value : {"0", "-3"}) {
      INFO(flag << " " << value);
      check_usage_error({"sample", "--model", missing, "--out", out, flag, value}, {flag, value});
    }
  check_usage_error({"sample", "--model", missing, "--out", out, "--guidance", "3"}, {"--guidance", "--class"});
  // Counts too large to hold: named, never std::bad_alloc (the model is needed for the image size).
  const std::string model = source_path("tests/data/diffusers_latents/pipeline");
  check_usage_error({"sample", "--model", model, "--out", out, "--n", "99999999999999"}, {"--n 99999999999999"});
  check_usage_error({"sample", "--model", model, "--out", out, "--n", "1000000000"}, {"--n 1000000000", "GiB"});
  check_usage_error({"sample", "--model", missing, "--out", out, "--threads", "-1"}, {"--threads"});
  check_usage_error({"sample", "--model", missing, "--out", out, "--eta", "2"}, {"--eta"});
}

TEST_CASE("sampling progress counts each batch's own steps under its batch number", "[cli][sample]") {
  RgbModel m;
  auto r = run_cli({"sample", "--model", m.path, "--out", m.dir.file("g.png"), "--n", "3", "--batch", "2", "--steps",
                    "3", "--sampler", "ddim"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("sample batch 1/2 step 1/3"));
  CHECK_THAT(r.output, Catch::Contains("sample batch 1/2 step 3/3"));
  CHECK_THAT(r.output, Catch::Contains("sample batch 2/2 step 1/3"));
  CHECK_THAT(r.output, Catch::Contains("sample batch 2/2 step 3/3"));
  CHECK_THAT(r.output, !Catch::Contains("step 6/6") && !Catch::Contains("step 4/"));
  r = run_cli({"sample", "--model", m.path, "--out", m.dir.file("g.png"), "--n", "1", "--steps", "2"});
  CHECK_THAT(r.output, Catch::Contains("sample step 2/2") && !Catch::Contains("batch"));
}

TEST_CASE("sample --noise starts from the given NCHW noise and --out-raw writes NCHW samples", "[cli][sample]") {
  RgbModel m;
  const int64_t n = 3, c = 3, s = 8;
  // The engine's own x_T for seed 7 in one batch, as a PyTorch user would write it: NCHW.
  Tensor x_T = Sampler::initial_noise({n, s, s, c}, batch_noise_seed(7, 0));
  const std::string noise = m.dir.file("noise.safetensors");
  save_safetensors(noise, {{"noise", nhwc_to_nchw(x_T)}});
  const std::vector<std::string> common{"sample", "--model", m.path, "--n", "3", "--batch", "3", "--steps", "3",
                                        "--sampler", "ddpm", "--seed", "7"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = common;
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = run_cli(args);
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
  };
  with({"--out-raw", m.dir.file("seeded.safetensors"), "--out", m.dir.file("seeded.png")});
  with({"--out-raw", m.dir.file("given.safetensors"), "--noise", noise});
  with({"--out", m.dir.file("plain.png")});
  Tensor seeded = read_tensor(m.dir.file("seeded.safetensors"), "samples");
  CHECK(seeded.shape() == Shape{n, c, s, s});
  // DDPM adds noise at each step from the seed: only x_T came from the file, and it was the same.
  CHECK(read_tensor(m.dir.file("given.safetensors"), "samples").to_vector() == seeded.to_vector());
  CHECK(slurp(m.dir.file("seeded.png")) == slurp(m.dir.file("plain.png")));  // --out-raw changes no pixel

  // The same noise transposed as if NHWC had been written must give other samples.
  save_safetensors(noise, {{"noise", x_T.view({n, c, s, s})}});
  with({"--out-raw", m.dir.file("wrong.safetensors"), "--noise", noise});
  CHECK(read_tensor(m.dir.file("wrong.safetensors"), "samples").to_vector() != seeded.to_vector());
}

TEST_CASE("a --noise file of the wrong shape, dtype or name is one line naming the file", "[cli][sample]") {
  RgbModel m;
  const std::string noise = m.dir.file("noise.safetensors");
  auto fails = [&](const std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& text) {
    save_safetensors(noise, tensors);
    auto r = run_cli({"sample", "--model", m.path, "--n", "2", "--steps", "2", "--noise", noise, "--out-raw",
                      m.dir.file("raw.safetensors")});
    INFO(r.output);
    CHECK(r.exit_code == 1);
    CHECK(lines(r.output) == 1);
    CHECK_THAT(r.output, Catch::Contains(noise) && Catch::Contains(text));
    CHECK_FALSE(fs::exists(m.dir.file("raw.safetensors")));
  };
  fails({{"x", Tensor::zeros({2, 3, 8, 8})}}, "no tensor `noise`");
  fails({{"noise", Tensor::zeros({3, 3, 8, 8})}}, "--n 2");
  fails({{"noise", Tensor::zeros({2, 1, 8, 8})}}, "[2, 3, 8, 8]");
  fails({{"noise", Tensor::zeros({2, 3, 8, 8}, DType::f64)}}, "F64");
  Tensor nan = Tensor::zeros({2, 3, 8, 8});
  nan.data<float>()[5] = std::numeric_limits<float>::quiet_NaN();
  save_safetensors(noise, {{"noise", nan}});
  auto r = run_cli({"sample", "--model", m.path, "--n", "2", "--steps", "2", "--noise", noise, "--out",
                    m.dir.file("g.png")});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Contains("not finite"));
}

TEST_CASE("more inference steps than the scheduler's T: a usage error naming --steps, before sampling", "[cli][sample]") {
  TempDir dir;
  UNet2DConfig cfg = resolve_unet_config("tiny");
  cfg.sample_size = 8;
  UNet2D unet(cfg, 5);
  const std::string model = dir.file("model");
  save_model_dir(model, unet, "");  // no scheduler config: diffusers' defaults, T = 1000
  check_usage_error({"sample", "--model", model, "--out", dir.file("x.png"), "--steps", "1001"},
                    {"--steps 1001", "num_train_timesteps (1000)"});
  CHECK(!fs::exists(dir.file("x.png")));
  // The library names the field.
  SamplerOptions o;
  o.steps = 1001;
  try {
    Pipeline p(Model::load(model), o);
    FAIL("Pipeline accepted 1001 steps");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::usage);
    CHECK_THAT(e.what(), Catch::Contains("SamplerOptions::steps 1001"));
  }
  o.steps = 1000;
  CHECK(Pipeline(Model::load(model), o).steps() == 1000);
}

TEST_CASE("forward --random-input makes a seeded input of the model's shape that is itself an --input", "[cli][forward]") {
  TempDir dir;
  UNet2DConfig cfg = resolve_unet_config("tiny");
  cfg.sample_size = 8;
  cfg.num_class_embeds = 4;
  UNet2D unet(cfg, 5);
  const std::string model = dir.file("model");
  save_model_dir(model, unet, "");
  auto forward = [&](const std::vector<std::string>& extra, const std::string& out) {
    std::vector<std::string> args{"forward", "--model", model, "--out", out};
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = run_cli(args);
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    return SafetensorsFile::open(out);
  };
  SafetensorsFile a = forward({"--random-input", "--batch", "3", "--seed", "9"}, dir.file("a.safetensors"));
  CHECK(a.shape("sample") == Shape{3, 1, 8, 8});
  CHECK(a.shape("out") == Shape{3, 1, 8, 8});
  CHECK(a.shape("timestep") == Shape{3});
  CHECK(a.shape("class_labels") == Shape{3});
  for (double t : a.get("timestep", DType::i64).to_vector()) CHECK((t >= 0 && t < 1000));
  for (double l : a.get("class_labels", DType::i64).to_vector()) CHECK((l >= 0 && l < 4));
  SafetensorsFile again = forward({"--random-input", "--batch", "3", "--seed", "9"}, dir.file("b.safetensors"));
  CHECK(again.get("out").to_vector() == a.get("out").to_vector());
  SafetensorsFile other = forward({"--random-input", "--batch", "3", "--seed", "10"}, dir.file("c.safetensors"));
  CHECK(other.get("sample").to_vector() != a.get("sample").to_vector());
  // Its output file is a valid --input and gives the same `out`.
  SafetensorsFile replay = forward({"--input", dir.file("a.safetensors")}, dir.file("d.safetensors"));
  CHECK(replay.get("out").to_vector() == a.get("out").to_vector());
  // With --grad-out it also makes the `weight`.
  SafetensorsFile g = forward({"--random-input", "--grad-out", dir.file("grads.safetensors")}, dir.file("e.safetensors"));
  CHECK(g.shape("weight") == Shape{1, 1, 8, 8});
  CHECK(fs::exists(dir.file("grads.safetensors")));

  // A NaN timestep, one beyond T (a float's bits stored as I32 read as 1080872141) and a NaN in the
  // sample are refused naming the file, not run.
  const Tensor sample = a.get("sample");
  const std::vector<std::pair<std::string, Tensor>> bad_inputs[] = {
      {{"sample", sample}, {"timestep", Tensor::from({std::nan(""), 1, 2}, {3}, DType::f32)}},
      {{"sample", sample}, {"timestep", Tensor::from({1080872141, 1, 2}, {3}, DType::i64)}},
      {{"sample", Tensor::from(std::vector<double>(3 * 64, std::nan("")), {3, 1, 8, 8}, DType::f32)},
       {"timestep", Tensor::from({1, 1, 2}, {3}, DType::i64)}}};
  for (const auto& tensors : bad_inputs) {
    const std::string bad = dir.file("bad.safetensors");
    save_safetensors(bad, tensors);
    auto r = run_cli({"forward", "--model", model, "--out", dir.file("bad-out.safetensors"), "--input", bad});
    INFO(r.output);
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.output, Catch::Contains(bad) && Catch::Contains("element 0 is"));
    CHECK(!fs::exists(dir.file("bad-out.safetensors")));
  }

  check_usage_error({"forward", "--model", model, "--out", dir.file("x.safetensors")}, {"--input or --random-input"});
  check_usage_error({"forward", "--model", model, "--out", dir.file("x.safetensors"), "--input", dir.file("a.safetensors"),
                     "--random-input"},
                    {"--input", "--random-input"});
  check_usage_error({"forward", "--model", model, "--out", dir.file("x.safetensors"), "--random-input", "--batch", "0"},
                    {"--batch"});
}

TEST_CASE("sample and forward take a training run or checkpoint for --model: its EMA weights", "[cli][sample]") {
  TempDir dir;
  const std::string run = dir.file("run");
  auto trained = run_cli({"train", "--out", run, "--max-images", "8", "--batch", "2", "--steps", "2",
                          "--checkpoint-every", "1"});
  INFO(trained.output);
  REQUIRE(trained.exit_code == 0);
  const std::string latest = run + "/checkpoints/step-2/ema", first = run + "/checkpoints/step-1/ema";

  // Each form samples the model it resolves to, says which, and gives that model's samples.
  auto samples = [&](const std::string& model, const std::string& says) {
    const std::string raw = dir.file("raw-" + std::to_string(std::hash<std::string>{}(model)) + ".safetensors");
    auto r = run_cli({"sample", "--model", model, "--steps", "2", "--n", "2", "--out-raw", raw});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    if (says.empty()) CHECK_THAT(r.output, !Catch::Contains("sample: model"));
    else CHECK_THAT(r.output, Catch::Contains("sample: model " + says + "\n"));
    return SafetensorsFile::open(raw).get("samples").to_vector();
  };
  const std::vector<double> direct = samples(latest, "");
  CHECK(samples(run, latest) == direct);
  CHECK(samples(run + "/checkpoints/step-2", latest) == direct);
  CHECK(samples(run + "/checkpoints/step-1", first) != direct);  // an earlier checkpoint's own weights

  auto fwd = run_cli({"forward", "--model", run, "--random-input", "--out", dir.file("f.safetensors")});
  INFO(fwd.output);
  CHECK(fwd.exit_code == 0);
  CHECK_THAT(fwd.output, Catch::Contains("forward: model " + latest + "\n"));

  // A run with no complete checkpoint yet: one line naming it, bad input.
  fs::create_directories(dir.file("empty-run/checkpoints"));
  check_error({"sample", "--model", dir.file("empty-run"), "--out", dir.file("g.png")}, 1,
              {dir.file("empty-run"), "without a complete checkpoint"});
}
