// `--precision bf16` through the CLI on CUDA (issue 15 item 1): a `tiny` training run in bf16
// tracks the same run in f32 (same seed: the same batches, timesteps and noise; only the bf16
// rounding of the GEMM-shaped layers differs), writes the `skipped` count into metrics.jsonl and,
// with `--save-dtype bf16`, the bf16 diffusers variant beside the f32 weights; `diffuse forward
// --precision bf16` and `diffuse sample --precision bf16` on its checkpoint track fp32; the CPU
// refuses the flag (exit 2, naming it).
// Steps are few and batches small: under the emulated device every custom kernel runs thread by
// thread (the timing of each case is in the report of the session that added it).
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nn/safetensors.h"
#include "support/cuda_compare.h"
#include "support/cuda_guard.h"
#include "support/metrics.h"
#include "support/process.h"
#include "support/temp_dir.h"

using namespace diffuse;
using namespace diffuse::test;
namespace fs = std::filesystem;

namespace {

// Steps of the curve comparison: the 50, on the emulated device as on a GPU (a `tiny` step
// at batch 2 costs the emulated device about 0.5 s per precision now; the case takes about a minute
// on the 2-core machine).
constexpr int kSteps = 50;
// How far the bf16 curve may be from the f32 curve, relative to the f32 loss. Step 1 (identical
// weights) differs only by the forward's bf16 rounding: measured 6.2e-4 to 7.9e-4. After that
// AdamW turns the bf16 gradient differences into weight differences, and a single step's loss at
// batch 2 is a sensitive function of the weights at some timesteps: the worst single step is
// step 47 (loss ~0.46) or 25, and how far off it is depends on which algorithms cuDNN's timed
// search picked for each run (run to run on the emulated device, with the same code, bf16 runs
// differ by up to 7.8e-3 from each other, f32 runs by 7.6e-6): 4.5e-2 to 6.0e-2 in five runs on
// the emulated device, once past 7e-2 under load, and 7.33e-2 on an H200 (2026-12-04). So the
// curve is compared as the means of its five 10-step windows, which a systematic bf16 bias moves
// and one sensitive step does not: measured 1.3e-2 to 1.5e-2 (three of those runs). The bound, 5e-2,
// is well below what a wrong batch, timestep or noise draw does: another seed moves the windows
// by 10 to 114 per cent.
constexpr double kFirstStepTol = 2e-2;
constexpr int kWindow = 10;
constexpr double kWindowTol = 5e-2;
// DDIM samples in bf16 against f32, relative to the samples' peak: each step's x0 prediction
// carries the UNet's bf16 error (test_bf16_autocast.cpp), amplified by √(1−ᾱ)/√ᾱ at the early,
// noisy steps, and the steps compound it. Measured: 2.3e-2 to 4.1e-2 on the emulated device (it
// depends on which algorithms cuDNN's timed search picked for each run)
// (3.4e-2 before the activations between layers were bf16); bound 1e-1.
constexpr double kSampleTol = 1e-1;

void require_ok(const RunResult& r, const std::string& what) {
  INFO(what << ":\n" << r.output);
  REQUIRE(r.exit_code == 0);
}

std::vector<nlohmann::json> metrics_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> lines;
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

std::vector<std::string> train_args(const std::string& out, const std::string& precision) {
  return {"train", "--data", "fashion-mnist", "--max-images", "64", "--config", "tiny", "--out", out,
          "--steps", std::to_string(kSteps), "--batch", "2", "--lr", "1e-3", "--seed", "3",
          "--log-every", "5", "--checkpoint-every", std::to_string(kSteps), "--device", "cuda",
          "--precision", precision, "--save-dtype", "bf16"};
}

}  // namespace

TEST_CASE("bf16 train: the bf16 loss curve tracks f32, metrics count skipped steps, checkpoints keep f32",
          "[cuda][bf16][train]") {
  DIFFUSE_CUDA_TEST_GUARD();
  TempDir dir;
  const std::string f32_run = dir.file("f32"), bf16_run = dir.file("bf16");
  require_ok(run_cli(train_args(f32_run, "fp32")), "train --precision fp32");
  require_ok(run_cli(train_args(bf16_run, "bf16")), "train --precision bf16");
  const std::vector<double> want = losses(f32_run + "/metrics.jsonl"), got = losses(bf16_run + "/metrics.jsonl");
  REQUIRE(want.size() == static_cast<size_t>(kSteps));
  REQUIRE(got.size() == static_cast<size_t>(kSteps));  // nothing skipped at this scale
  double worst = 0, worst_window = 0;
  int worst_step = 1, worst_window_start = 1;
  for (int s = 1; s <= kSteps; ++s) {
    REQUIRE(std::isfinite(got[s - 1]));
    const double rel = std::fabs(got[s - 1] - want[s - 1]) / want[s - 1];
    if (rel > worst) worst = rel, worst_step = s;
  }
  const double first = std::fabs(got[0] - want[0]) / want[0];
  CHECK(first <= kFirstStepTol);
  static_assert(kSteps % kWindow == 0);
  for (int w = 0; w < kSteps; w += kWindow) {
    double g = 0, f = 0;
    for (int s = w; s < w + kWindow; ++s) g += got[s], f += want[s];
    const double rel = std::fabs(g - f) / f;
    INFO("steps " << w + 1 << ".." << w + kWindow << ": bf16 mean " << g / kWindow << ", f32 mean " << f / kWindow);
    CHECK(rel <= kWindowTol);
    if (rel > worst_window) worst_window = rel, worst_window_start = w + 1;
  }
  CHECK(got != want);  // bf16 really ran: rounding shows in the loss
  WARN("bf16 against f32 over " << kSteps << " tiny steps: step 1 off by " << first << "; 10-step means at most "
                                << worst_window << " off (steps " << worst_window_start << ".."
                                << worst_window_start + kWindow - 1 << "); the worst single step " << worst
                                << " (step " << worst_step << ")");

  // "skipped" on every bf16 line (0 here), absent from the f32 run's lines.
  for (const nlohmann::json& line : metrics_lines(bf16_run + "/metrics.jsonl")) {
    REQUIRE(line.contains("skipped"));
    CHECK(line.at("skipped") == 0);
  }
  for (const nlohmann::json& line : metrics_lines(f32_run + "/metrics.jsonl")) CHECK_FALSE(line.contains("skipped"));

  // The checkpoint keeps f32 weights (what --resume reads) and writes the bf16 EMA variant.
  const std::string ckpt = bf16_run + "/checkpoints/step-" + std::to_string(kSteps);
  const SafetensorsFile f32_weights = SafetensorsFile::open(ckpt + "/model/unet/diffusion_pytorch_model.safetensors");
  const SafetensorsFile variant = SafetensorsFile::open(ckpt + "/ema/unet/diffusion_pytorch_model.bf16.safetensors");
  REQUIRE(f32_weights.size() > 0);
  REQUIRE(variant.names() == SafetensorsFile::open(ckpt + "/ema/unet/diffusion_pytorch_model.safetensors").names());
  for (const std::string& name : f32_weights.names()) CHECK(f32_weights.dtype(name) == "F32");
  for (const std::string& name : variant.names()) CHECK(variant.dtype(name) == "BF16");

  // diffuse forward --precision bf16 on that checkpoint tracks fp32 (the same model and input).
  const std::string model = ckpt + "/model";
  const std::string input = dir.file("in.safetensors");
  save_safetensors(input, {{"sample", Tensor::randn({2, 1, 32, 32}, 21)},
                           {"timestep", Tensor::from({3, 750}, {2}, DType::i64)}});
  for (const char* precision : {"fp32", "bf16"})
    require_ok(run_cli({"forward", "--model", model, "--input", input, "--out",
                        dir.file(std::string("out-") + precision + ".safetensors"), "--device", "cuda",
                        "--precision", precision}),
               std::string("forward --precision ") + precision);
  const Tensor out_f32 = SafetensorsFile::open(dir.file("out-fp32.safetensors")).get("out");
  const Tensor out_bf16 = SafetensorsFile::open(dir.file("out-bf16.safetensors")).get("out");
  CHECK(SafetensorsFile::open(dir.file("out-bf16.safetensors")).dtype("out") == "F32");
  const double err = rel_to_peak_error(out_bf16, out_f32);
  INFO("forward --precision bf16 against fp32: " << err);
  CHECK(err <= 3e-2);  // test_bf16_autocast.cpp's UNet output bound
  CHECK(err > 0);

  // diffuse sample --precision bf16: 5 DDIM steps (η 0) from the seed's noise track fp32.
  for (const char* precision : {"fp32", "bf16"})
    require_ok(run_cli({"sample", "--model", model, "--sampler", "ddim", "--steps", "5", "--n", "2", "--batch", "2",
                        "--seed", "4", "--device", "cuda", "--precision", precision, "--out-raw",
                        dir.file(std::string("samples-") + precision + ".safetensors")}),
               std::string("sample --precision ") + precision);
  const Tensor s_f32 = SafetensorsFile::open(dir.file("samples-fp32.safetensors")).get("samples");
  const Tensor s_bf16 = SafetensorsFile::open(dir.file("samples-bf16.safetensors")).get("samples");
  const double sample_err = rel_to_peak_error(s_bf16, s_f32);
  WARN("sample --precision bf16 (DDIM, 5 steps) against fp32: " << sample_err << " relative to the samples' peak");
  CHECK(sample_err <= kSampleTol);
  CHECK(sample_err > 0);
}

// A learning rate of 1e30 puts weights near 1e30 after the first update with a non-zero rate: the
// next loss overflows, and with the weights kept as they were every step after it does too. bf16
// skips such steps — at most kMaxSkippedInARow (10) in a row — and the next one stops the run.
TEST_CASE("bf16 train: non-finite steps are skipped with a line each, ten in a row at most, then the run stops",
          "[cuda][bf16][train]") {
  DIFFUSE_CUDA_TEST_GUARD();
  TempDir dir;
  const std::string run = dir.file("run");
  const RunResult r = run_cli({"train", "--data", "fashion-mnist", "--max-images", "8", "--config", "tiny", "--out",
                               run, "--steps", "40", "--batch", "2", "--lr", "1e30", "--grad-clip", "0", "--warmup",
                               "0", "--seed", "3", "--device", "cuda", "--precision", "bf16", "--status-every", "4"});
  INFO(r.output);
  CHECK(r.exit_code == 1);
  // The skipped steps, in order, each with its count so far.
  std::vector<int64_t> skipped;
  for (size_t at = r.output.find("skipped (bf16): "); at != std::string::npos;
       at = r.output.find("skipped (bf16): ", at + 1)) {
    const size_t line = r.output.rfind("train step ", at);
    REQUIRE(line != std::string::npos);
    skipped.push_back(std::stoll(r.output.substr(line + 11)));
    const std::string count = std::to_string(skipped.size()) + " skipped so far";
    CHECK(r.output.compare(r.output.find("no update, ", at) + 11, count.size(), count) == 0);
  }
  REQUIRE(skipped.size() == 10);
  for (size_t i = 1; i < skipped.size(); ++i) CHECK(skipped[i] == skipped[0] + int64_t(i));
  // The eleventh non-finite step in a row stops the run, naming it.
  CHECK_THAT(r.output, Catch::Contains("step " + std::to_string(skipped.back() + 1) + ": "));
  CHECK_THAT(r.output, Catch::Contains("training stopped"));
  // metrics.jsonl has the finite steps before the first skipped one, none skipped then.
  const std::vector<nlohmann::json> lines = metrics_lines(run + "/metrics.jsonl");
  REQUIRE(lines.size() == static_cast<size_t>(skipped[0] - 1));
  for (const nlohmann::json& line : lines) CHECK(line.at("skipped") == 0);
}

TEST_CASE("bf16: --precision bf16 on the CPU is refused naming the flag (exit 2)", "[cuda][bf16]") {
  TempDir dir;
  RunResult r = run_cli({"train", "--data", "fashion-mnist", "--max-images", "8", "--config", "tiny", "--out",
                         dir.file("run"), "--steps", "1", "--device", "cpu", "--precision", "bf16"});
  CHECK(r.exit_code == 2);
  CHECK(r.output.find("--precision bf16 needs --device cuda") != std::string::npos);
  r = run_cli({"sample", "--model", dir.file("no-model"), "--out", dir.file("g.png"), "--precision", "bf16"});
  CHECK(r.exit_code == 2);  // before the model is looked for
  CHECK(r.output.find("--precision bf16 needs --device cuda") != std::string::npos);
  r = run_cli({"forward", "--model", "tiny", "--random-input", "--out", dir.file("o.safetensors"), "--precision",
               "bf16"});
  CHECK(r.exit_code == 2);
  CHECK(r.output.find("--precision bf16 needs --device cuda") != std::string::npos);
  r = run_cli({"forward", "--model", "tiny", "--random-input", "--out", dir.file("o.safetensors"), "--precision",
               "fp16"});
  CHECK(r.exit_code == 2);
  CHECK(r.output.find("--precision fp16") != std::string::npos);
}
