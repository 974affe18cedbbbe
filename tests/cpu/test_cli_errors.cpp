// Bad input through the CLI (docs/design.md §10): each case ends with one clear line naming the file or
// flag, the exit code docs/cli.md gives its kind of error (2 usage or an unavailable device, 1 a bad
// file or a runtime failure, 130 an interrupted training run), and nothing written at the destination.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <thread>

#include "engine/model_dir.h"
#include "nn/safetensors.h"
#include "nn/unet2d.h"
#include "support/process.h"
#include "support/temp_dir.h"

using namespace diffuse;
using namespace diffuse::test;
namespace fs = std::filesystem;

namespace {

int error_lines(const std::string& output) {
  int n = 0;
  for (char c : output) n += c == '\n';
  return n;
}

// A tiny model directory plus a valid input file.
struct Fixture {
  TempDir dir;
  std::string model = dir.file("model"), input = dir.file("in.safetensors"), out = dir.file("out.safetensors");
  Fixture() {
    UNet2DConfig cfg = resolve_unet_config("tiny");
    cfg.sample_size = 8;
    UNet2D m(cfg, 1);
    save_model_dir(model, m, "");
    save_safetensors(input, {{"sample", Tensor::randn({1, 1, 8, 8}, 1)}, {"timestep", Tensor::from({5}, {1}, DType::i64)}});
  }
  std::string weights() const { return model + "/unet/diffusion_pytorch_model.safetensors"; }
};

}  // namespace

TEST_CASE("unknown commands and flags exit with code 2 and name them", "[cli]") {
  auto r = run_cli({"frobnicate"});
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("unknown command 'frobnicate'"));
  r = run_cli({"train", "--out", "/tmp/x", "--no-such-flag"});
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("no-such-flag"));
  r = run_cli({"sample", "--model", "m", "--steps", "many"});
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("many"));
  CHECK(run_cli({"--help"}).exit_code == 0);
  for (const char* cmd : {"train", "sample", "forward", "info"}) {
    auto h = run_cli({cmd, "--help"});
    CHECK(h.exit_code == 0);
    CHECK_THAT(h.output, Catch::Contains("--"));
  }
}

TEST_CASE("asking for --device cuda without a device fails at once with exit code 2", "[cli]") {
  Fixture f;
  for (auto args : std::vector<std::vector<std::string>>{
           {"forward", "--model", f.model, "--input", f.input, "--out", f.out, "--device", "cuda"},
           {"sample", "--model", f.model, "--out", f.dir.file("g.png"), "--device", "cuda"},
           {"train", "--out", f.dir.file("run"), "--device", "cuda"}}) {
    auto r = run_cli(args);
    if (r.output.find("no CUDA device") == std::string::npos && r.exit_code == 0) {
      WARN("a CUDA device is present; skipping");
      return;
    }
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.output, Catch::Contains("no CUDA device"));
    CHECK(error_lines(r.output) == 1);
  }
  CHECK_FALSE(fs::exists(f.out));
  CHECK_FALSE(fs::exists(f.dir.file("run")));
}

TEST_CASE("missing, corrupt and truncated weights are named and nothing is written", "[cli]") {
  Fixture f;
  auto forward = [&] { return run_cli({"forward", "--model", f.model, "--input", f.input, "--out", f.out}); };
  REQUIRE(forward().exit_code == 0);
  fs::remove(f.out);

  std::string good = slurp(f.weights());
  write_bytes(f.weights(), good.substr(0, good.size() / 2));  // truncated
  auto r = forward();
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Contains(f.weights()));
  CHECK(error_lines(r.output) == 1);
  CHECK_FALSE(fs::exists(f.out));

  write_bytes(f.weights(), "garbage");  // corrupt
  r = forward();
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Contains(f.weights()));

  // Header offsets past the end of the (shortened) data section.
  write_bytes(f.weights(), good.substr(0, good.size() - 8));
  r = forward();
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Contains(f.weights()));

  fs::remove(f.weights());  // missing
  r = forward();
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Contains("diffusion_pytorch_model.safetensors"));
  CHECK_FALSE(fs::exists(f.out));
}

TEST_CASE("a tensor missing or misshaped against the config is named", "[cli]") {
  Fixture f;
  std::vector<std::pair<std::string, Tensor>> all;
  {
    SafetensorsFile file = SafetensorsFile::open(f.weights());  // unmapped before the rewrite below
    for (const auto& n : file.names()) all.emplace_back(n, file.get(n));
  }

  auto without = all;
  without.erase(std::remove_if(without.begin(), without.end(), [](auto& p) { return p.first == "conv_out.bias"; }),
                without.end());
  save_safetensors(f.weights(), without);
  auto r = run_cli({"forward", "--model", f.model, "--input", f.input, "--out", f.out});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Contains("conv_out.bias") && Catch::Contains("missing"));

  auto misshaped = all;
  for (auto& [n, t] : misshaped)
    if (n == "conv_in.weight") t = Tensor::zeros({32, 2, 3, 3});
  save_safetensors(f.weights(), misshaped);
  r = run_cli({"forward", "--model", f.model, "--input", f.input, "--out", f.out});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Contains("conv_in.weight") && Catch::Contains("[32, 2, 3, 3]") && Catch::Contains("[32, 1, 3, 3]"));
  CHECK_FALSE(fs::exists(f.out));
}

TEST_CASE("bad datasets are named by train and no run directory content is written", "[cli]") {
  TempDir dir;
  fs::create_directories(dir.file("empty"));
  write_bytes(dir.file("empty/readme.txt"), "not an image");
  auto r = run_cli({"train", "--data", dir.file("empty"), "--out", dir.file("run1"), "--steps", "1"});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Contains(dir.file("empty")));
  CHECK(error_lines(r.output) == 1);
  CHECK_FALSE(fs::exists(dir.file("run1/checkpoints")));

  write_bytes(dir.file("bad-images-idx3-ubyte"), std::string("\x00\x00\x09\x99\x00\x00\x00\x01", 8));
  r = run_cli({"train", "--data", dir.file("bad-images-idx3-ubyte"), "--out", dir.file("run2"), "--steps", "1"});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Contains("bad-images-idx3-ubyte") && Catch::Contains("magic"));
}

TEST_CASE("forward takes the timestep as int64 or float32, per sample or as one scalar", "[cli]") {
  Fixture f;
  auto out_of = [&](const Tensor& timestep, const std::string& name) {
    std::string in = f.dir.file(name + ".in.safetensors"), out = f.dir.file(name + ".out.safetensors");
    Tensor x = SafetensorsFile::open(f.input).get("sample");
    Tensor two = Tensor::empty({2, 1, 8, 8});
    two.slice0(0, 1).copy_from(x);
    two.slice0(1, 2).copy_from(x);
    save_safetensors(in, {{"sample", two}, {"timestep", timestep}});
    auto r = run_cli({"forward", "--model", f.model, "--input", in, "--out", out});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    return SafetensorsFile::open(out).get("out").to_vector();
  };
  auto per_sample_i64 = out_of(Tensor::from({42, 42}, {2}, DType::i64), "a");
  CHECK(out_of(Tensor::from({42}, {}, DType::f32), "b") == per_sample_i64);
  CHECK(out_of(Tensor::from({42, 42}, {2}, DType::f32), "c") == per_sample_i64);
  CHECK(out_of(Tensor::from({42}, {1}, DType::i64), "d") == per_sample_i64);
  CHECK(out_of(Tensor::from({7, 42}, {2}, DType::i64), "e") != per_sample_i64);
}

TEST_CASE("bad option values and missing required flags exit with code 2 naming the flag", "[cli]") {
  Fixture f;
  struct Case {
    std::vector<std::string> args;
    std::string named;
  };
  for (const Case& c : std::vector<Case>{
           {{"sample", "--model", f.model, "--out", f.dir.file("g.png"), "--sampler", "euler"}, "--sampler"},
           {{"sample", "--model", f.model, "--out", f.dir.file("g.png"), "--steps", "0"}, "--steps must be positive"},
           {{"sample", "--model", f.model, "--out", f.dir.file("g.png"), "--n", "0"}, "--n must be positive"},
           {{"sample", "--model", f.model, "--out", f.dir.file("g.png"), "--eta", "2"}, "--eta must be in [0, 1]"},
           {{"sample", "--model", f.model, "--out", f.dir.file("g.png"), "--guidance", "3"}, "needs a --class"},
           {{"sample", "--out", f.dir.file("g.png")}, "--model is required"},
           {{"sample", "--model", f.model}, "--out or --out-dir is required"},
           {{"sample", "--model", f.model, "--out", f.dir.file("g.png"), "--device", "tpu"}, "--device tpu"},
           {{"train", "--out", f.dir.file("run"), "--lr-schedule", "bogus"}, "--lr-schedule bogus"},
           {{"train", "--out", f.dir.file("run"), "--ema-decay", "1"}, "--ema-decay must be in [0, 1)"},
           {{"train", "--out", f.dir.file("run"), "--prediction", "noise"}, "--prediction"},
           {{"train", "--out", f.dir.file("run"), "--log-every", "0"}, "--log-every must be positive"},
           {{"train", "--out", f.dir.file("run"), "extra"}, "unexpected argument 'extra'"},
           {{"train", "--steps", "3"}, "--out is required"},
       }) {
    auto r = run_cli(c.args);
    INFO(r.output);
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.output, Catch::Contains(c.named));
    CHECK(error_lines(r.output) == 1);
  }
  CHECK_FALSE(fs::exists(f.dir.file("g.png")));
  CHECK_FALSE(fs::exists(f.dir.file("run")));
}

TEST_CASE("a model directory that is not there exits with code 1 naming it", "[cli]") {
  TempDir dir;
  auto r = run_cli({"sample", "--model", dir.file("no-model"), "--out", dir.file("g.png")});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Contains(dir.file("no-model")));
  CHECK(error_lines(r.output) == 1);
  CHECK_FALSE(fs::exists(dir.file("g.png")));
}

TEST_CASE("Ctrl-C during train writes a checkpoint and exits with code 130", "[cli][train]") {
  TempDir dir;
  const std::string run = dir.file("run");
  std::vector<std::string> args{DIFFUSE_CLI_PATH, "train", "--data", "fashion-mnist", "--max-images", "8",
                                "--config", "tiny", "--batch", "2", "--steps", "100000", "--out", run};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::freopen("/dev/null", "w", stdout);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  // Wait for the first step's metrics line, then interrupt as a terminal's Ctrl-C would.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(2);
  while (std::chrono::steady_clock::now() < deadline && slurp(run + "/metrics.jsonl").empty())
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ::kill(pid, SIGINT);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 130);
  bool checkpointed = false;
  for (auto& e : fs::directory_iterator(run + "/checkpoints")) checkpointed |= fs::exists(e.path() / "state.json");
  CHECK(checkpointed);
}

TEST_CASE("threads flag on every command that runs kernels: a bad value is one line naming it, exit 2", "[cli]") {
  Fixture f;
  const std::vector<std::vector<std::string>> commands{
      {"train", "--out", f.dir.file("run")},
      {"sample", "--model", f.model, "--out", f.dir.file("g.png")},
      {"forward", "--model", f.model, "--input", f.input, "--out", f.out},
      {"bench", "train", "--config", "tiny"},
      {"bench", "sample", "--config", "tiny"},
      {"bench", "kernels", "--quick"},
  };
  for (const auto& command : commands) {
    for (const auto& [value, named] : std::vector<std::pair<std::string, std::string>>{
             {"-1", "--threads must be >= 0, got -1"}, {"x", "--threads x"}, {"2.5", "--threads 2.5"}}) {
      std::vector<std::string> args = command;
      args.insert(args.end(), {"--threads", value});
      auto r = run_cli(args);
      INFO(r.output);
      CHECK(r.exit_code == 2);
      CHECK_THAT(r.output, Catch::Contains(named));
      CHECK(error_lines(r.output) == 1);
    }
  }
  auto r = run_cli({"sample", "--model", f.model, "--out", f.dir.file("g.png"), "--threads=x"});
  CHECK_THAT(r.output, Catch::Contains("--threads x"));
  CHECK_FALSE(fs::exists(f.dir.file("g.png")));
  CHECK_FALSE(fs::exists(f.dir.file("run")));
  CHECK_FALSE(fs::exists(f.out));
}
