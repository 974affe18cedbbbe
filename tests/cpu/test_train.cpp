// The engine end to end through the CLI: training lowers the loss on Fashion-MNIST, a resumed run
// continues bit-for-bit, a NaN loss stops with the step named and the last checkpoint intact,
// sampling is deterministic for a seed and writes a valid grid.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/image_io.h"
#include "support/metrics.h"
#include "support/process.h"
#include "support/temp_dir.h"

using namespace diffuse;
using namespace diffuse::test;
namespace fs = std::filesystem;

namespace {


std::vector<std::string> small_run(const std::string& out, const std::string& steps) {
  return {"train", "--data", "fashion-mnist", "--max-images", "96", "--config", "tiny", "--out", out, "--steps", steps,
          "--batch", "4", "--lr", "1e-3", "--seed", "3"};
}

}  // namespace

TEST_CASE("a resumed run continues bit-for-bit", "[train]") {
  TempDir dir;
  std::string a = dir.file("straight"), b = dir.file("resumed");
  auto args_a = small_run(a, "4");
  args_a.insert(args_a.end(), {"--checkpoint-every", "2"});
  auto ra = run_cli(args_a);
  INFO(ra.output);
  REQUIRE(ra.exit_code == 0);
  auto rb1 = run_cli(small_run(b, "2"));
  INFO(rb1.output);
  REQUIRE(rb1.exit_code == 0);
  auto args_b2 = small_run(b, "4");
  args_b2.push_back("--resume");
  auto rb2 = run_cli(args_b2);
  INFO(rb2.output);
  REQUIRE(rb2.exit_code == 0);
  for (const char* f : {"model/unet/diffusion_pytorch_model.safetensors", "ema/unet/diffusion_pytorch_model.safetensors",
                        "optimizer.safetensors"}) {
    INFO(f);
    CHECK(slurp(a + "/checkpoints/step-4/" + f) == slurp(b + "/checkpoints/step-4/" + f));
  }
  CHECK(losses(a + "/metrics.jsonl") == losses(b + "/metrics.jsonl"));
  // Resuming a finished run, or starting over a run that has checkpoints, is refused.
  auto again = run_cli(small_run(b, "4"));
  CHECK(again.exit_code == 2);
  CHECK_THAT(again.output, Catch::Contains("already has checkpoints; pass --resume to continue it or choose another --out"));
  auto finished = small_run(b, "4");
  finished.push_back("--resume");
  auto more = run_cli(finished);
  CHECK(more.exit_code == 2);
  CHECK_THAT(more.output, Catch::Contains("already trained to step 4; raise --steps to continue"));
}

TEST_CASE("a NaN loss stops training naming the step and keeps the last good checkpoint", "[train]") {
  TempDir dir;
  std::string out = dir.file("run");
  auto args = small_run(out, "20");
  args.insert(args.end(), {"--lr", "1e30", "--grad-clip", "0", "--checkpoint-every", "1"});
  auto r = run_cli(args);
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Contains("training stopped") && Catch::Contains("step ") && Catch::Contains("checkpoint"));
  // Every checkpoint directory that exists is complete (no temporaries left behind).
  int complete = 0;
  for (auto& e : fs::directory_iterator(out + "/checkpoints")) {
    CHECK(e.path().filename().string().find(".tmp") == std::string::npos);
    CHECK(fs::exists(e.path() / "state.json"));
    ++complete;
  }
  CHECK(complete >= 1);
}

TEST_CASE("sampling is deterministic for a seed and writes a grid of the expected size", "[train][sample]") {
  TempDir dir;
  std::string run = dir.file("run");
  auto t = run_cli(small_run(run, "2"));
  INFO(t.output);
  REQUIRE(t.exit_code == 0);
  std::string model = run + "/checkpoints/step-2/ema";
  for (const char* sampler : {"ddim", "ddpm", "dpmpp-2m"}) {
    INFO(sampler);
    std::vector<std::string> args{"sample", "--model", model, "--sampler", sampler, "--steps", "3", "--n", "16", "--seed", "7"};
    auto a = args;
    a.insert(a.end(), {"--out", dir.file(std::string(sampler) + "-a.png"), "--batch", "5"});
    auto ra = run_cli(a);
    INFO(ra.output);
    REQUIRE(ra.exit_code == 0);
    Image8 ia = read_image(dir.file(std::string(sampler) + "-a.png"));
    CHECK(ia.width == 4 * 34 + 2);
    CHECK(ia.height == 4 * 34 + 2);
    CHECK(ia.channels == 1);
  }
  // Same seed, same images; another seed, other images.
  std::vector<std::string> base{"sample", "--model", model, "--steps", "3", "--n", "4"};
  auto s1 = base, s2 = base, s3 = base;
  s1.insert(s1.end(), {"--seed", "1", "--out", dir.file("new/dir/s1.png")});  // parents are created
  s2.insert(s2.end(), {"--seed", "1", "--out", dir.file("s2.png")});
  s3.insert(s3.end(), {"--seed", "2", "--out", dir.file("s3.png")});
  REQUIRE(run_cli(s1).exit_code == 0);
  REQUIRE(run_cli(s2).exit_code == 0);
  REQUIRE(run_cli(s3).exit_code == 0);
  CHECK(slurp(dir.file("new/dir/s1.png")) == slurp(dir.file("s2.png")));
  CHECK(slurp(dir.file("new/dir/s1.png")) != slurp(dir.file("s3.png")));
}

TEST_CASE("tiny on Fashion-MNIST: 300 steps at batch 32 bring the loss under 0.08", "[train][slow]") {
  TempDir dir;
  std::string out = dir.file("run");
  auto r = run_cli({"train", "--data", "fashion-mnist", "--config", "tiny", "--out", out, "--steps", "300", "--batch",
                    "32", "--lr", "1e-3", "--seed", "0", "--log-every", "50"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  auto l = losses(out + "/metrics.jsonl");
  REQUIRE(l.size() == 300);
  double tail = 0;
  for (size_t i = 250; i < 300; ++i) tail += l[i];
  tail /= 50;
  double head = (l[0] + l[1] + l[2] + l[3] + l[4]) / 5;
  WARN("mean loss of the last 50 steps: " << tail << " (first 5: " << head << ")");
  CHECK(tail < 0.08);
  CHECK(tail < head / 4);
}

TEST_CASE("class-conditional training and guided sampling run end to end", "[train][sample]") {
  TempDir dir;
  std::string run = dir.file("run");
  auto args = small_run(run, "2");
  args.insert(args.end(), {"--classes", "10", "--p-uncond", "0.2", "--sample-every", "2"});
  auto t = run_cli(args);
  INFO(t.output);
  REQUIRE(t.exit_code == 0);
  Image8 periodic = read_image(run + "/samples/step-2.png");  // the periodic grid: 16 images, 4 per row
  CHECK(periodic.width == 4 * 34 + 2);
  std::string model = run + "/checkpoints/step-2/ema";
  auto g = run_cli({"sample", "--model", model, "--steps", "2", "--n", "3", "--class", "7", "--guidance", "3", "--out-dir",
                    dir.file("imgs")});
  INFO(g.output);
  REQUIRE(g.exit_code == 0);
  CHECK(fs::exists(dir.file("imgs/00002.png")));
  CHECK(read_image(dir.file("imgs/00000.png")).width == 32);
  auto bad = run_cli({"sample", "--model", model, "--class", "10", "--out", dir.file("x.png")});
  CHECK(bad.exit_code == 1);
  CHECK_THAT(bad.output, Catch::Contains("--class 10"));
  CHECK_FALSE(fs::exists(dir.file("x.png")));
}
