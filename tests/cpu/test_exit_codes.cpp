// The exit codes docs/cli.md documents, one CLI invocation per row and at least one row per kind of
// failure: 0 success; 2 usage (unknown flag, bad value, missing required flag, an integer that does
// not fit) and an unavailable device; 1 a bad input file and a failure while running; 130 a
// training run interrupted with Ctrl-C (SIGINT). Every failure is one line naming the flag or file.
#include <catch2/catch.hpp>
#include <filesystem>

#include "support/process.h"
#include "support/temp_dir.h"

using namespace diffuse::test;

namespace {

struct Row {
  const char* kind;
  std::vector<std::string> args;  // after `diffuse`
  int exit_code;
  std::string says;               // a part of the output
};

int lines(const std::string& text) { return static_cast<int>(std::count(text.begin(), text.end(), '\n')); }
// The error lines: those that start "diffuse" (a failed training run also printed its progress,
// an unknown command the usage).
int error_lines(const std::string& text) {
  int n = text.rfind("diffuse", 0) == 0;
  for (size_t at = text.find("\ndiffuse"); at != std::string::npos; at = text.find("\ndiffuse", at + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("each kind of failure exits with the code docs/cli.md gives it", "[cli][exit]") {
  TempDir dir;
  const std::string run = dir.file("run"), missing = dir.file("missing");
  const std::string long_name = dir.file(std::string(300, 'x'));  // over NAME_MAX (255)
  const std::vector<Row> rows{
      {"success", {"info"}, 0, "version"},
      {"usage: unknown command", {"frobnicate"}, 2, "unknown command 'frobnicate'"},
      {"usage: unknown flag", {"train", "--out", run, "--frobnicate"}, 2, "frobnicate"},
      {"usage: bad choice", {"sample", "--model", missing, "--out", dir.file("g.png"), "--sampler", "euler"}, 2,
       "--sampler: unknown sampler \"euler\""},
      {"usage: bad choice", {"train", "--out", run, "--lr-schedule", "bogus"}, 2, "--lr-schedule bogus"},
      {"usage: not a number", {"train", "--out", run, "--steps", "many"}, 2, "--steps many"},
      {"usage: missing required flag", {"train", "--steps", "3"}, 2, "--out is required"},
      {"usage: negative interval", {"train", "--out", run, "--checkpoint-every", "-1"}, 2, "--checkpoint-every"},
      {"usage: beyond int", {"train", "--out", run, "--classes", "4294967297"}, 2, "--classes must be in [0, 2147483647]"},
      {"usage: beyond int", {"train", "--out", run, "--timesteps", "3000000000"}, 2, "--timesteps must be in"},
      {"usage: beyond int64", {"train", "--out", run, "--steps", "99999999999999999999"}, 2, "--steps"},
      {"usage: bench list that is not numbers", {"bench", "kernels", "--batches", "x"}, 2, "--batches x"},
      {"usage: bench bad batch", {"bench", "train", "--batch", "0"}, 2, "--batch must be positive"},
      {"usage: bench bad sampler", {"bench", "sample", "--samplers", "euler"}, 2, "--samplers euler"},
      {"usage: bad conv search", {"train", "--out", dir.file("cs"), "--conv-search", "fastest"}, 2,
       "--conv-search"},
      {"usage: bench bad conv search", {"bench", "train", "--conv-search", "fastest"}, 2, "--conv-search"},
      {"usage: bench negative steps", {"bench", "sample", "--steps", "-1"}, 2, "--steps must be >= 0"},
      {"usage: bench profile steps", {"bench", "train", "--profile", "--profile-steps", "0"}, 2, "--profile-steps"},
      {"usage: batch that cannot fit", {"train", "--out", run, "--batch", "1000000"}, 2, "--batch 1000000"},
      {"bad input: no dataset", {"train", "--out", run, "--data", missing}, 1, missing},
      {"bad input: --resume of a run without a checkpoint", {"train", "--out", run, "--resume"}, 1,
       "--resume given but the run has no checkpoint"},
      {"bad input: no model", {"sample", "--model", missing, "--out", dir.file("g.png")}, 1, missing},
      {"bad input: unwritable --out", {"train", "--out", "/proc/version/run", "--steps", "1"}, 1, "--out /proc/version/run"},
      {"bad input: an --out name too long", {"train", "--out", long_name + "/run", "--steps", "1"}, 1,
       "--out " + long_name + "/run: File name too long"},
      {"bad input: an --out-dir name too long",
       {"sample", "--model", missing, "--out-dir", long_name}, 1, "--out-dir " + long_name + ": File name too long"},
      {"bad input: a model name too long", {"sample", "--model", long_name, "--out", dir.file("g.png")}, 1,
       long_name + ": File name too long"},
      {"bad input: a --noise name too long",
       {"sample", "--model", source_path("tests/data/diffusers_latents/pipeline"), "--noise", long_name, "--out",
        dir.file("g.png")},
       1, long_name + ": File name too long"},
      {"bad input: a --config name too long", {"train", "--config", long_name, "--out", run}, 1,
       long_name + ": File name too long"},
      {"bad input: a name too long to inspect", {"inspect", long_name}, 1, long_name + ": File name too long"},
      {"bad input: a --json name too long (before the benchmark runs)",
       {"bench", "train", "--iters", "1", "--warmup", "0", "--json", long_name + "/b.json"}, 1,
       "--json " + long_name + ": File name too long"},
      // Root may write into /proc, whose directories cannot be made: the run directory's creation
      // fails after the checks (others fail the check itself); either way one line naming it.
      {"bad input: --out that cannot be made",
       {"train", "--out", "/proc/diffuse-run", "--steps", "1", "--max-images", "8", "--batch", "2"}, 1,
       "/proc/diffuse-run"},
      {"runtime: NaN loss",
       {"train", "--max-images", "8", "--batch", "2", "--steps", "30", "--lr", "1e30", "--grad-clip", "0", "--out",
        dir.file("nan")},
       1, "training stopped"},
  };
  for (const Row& row : rows) {
    INFO(row.kind << ": diffuse " << Catch::Detail::stringify(row.args));
    auto r = run_cli(row.args);
    INFO(r.output);
    CHECK(r.exit_code == row.exit_code);
    CHECK_THAT(r.output, Catch::Contains(row.says));
    if (row.exit_code != 0) CHECK(error_lines(r.output) == 1);
    CHECK_THAT(r.output, !Catch::Contains("filesystem error"));  // a library's message, not ours
  }
  CHECK_FALSE(std::filesystem::exists(run));
  CHECK_FALSE(std::filesystem::exists(dir.file("g.png")));
}

TEST_CASE("a bad DIFFUSE_HOST_CACHE_MB is a usage error naming it, exit 2", "[cli][exit]") {
  TempDir dir;
  for (const char* value : {"-1", "12MB", "lots"}) {
    auto r = run_cli({"train", "--out", dir.file("run"), "--steps", "1"}, "", {{"DIFFUSE_HOST_CACHE_MB", value}});
    INFO(value << ": " << r.output);
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.output, Catch::Contains("DIFFUSE_HOST_CACHE_MB must be a whole number of MiB, got '" +
                                         std::string(value) + "'"));
    CHECK(lines(r.output) == 1);
  }
}

TEST_CASE("asking for a CUDA device that is not there exits with code 2", "[cli][exit]") {
  TempDir dir;
  auto r = run_cli({"train", "--out", dir.file("run"), "--device", "cuda", "--steps", "1"});
  if (r.exit_code == 0) {
    WARN("a CUDA device is present: the unavailable-device row cannot run here");
    return;
  }
  INFO(r.output);
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("--device cuda"));
  CHECK(lines(r.output) == 1);
}

TEST_CASE("a training run interrupted with SIGINT exits with code 130 after a checkpoint", "[cli][exit]") {
  TempDir dir;
  const std::string run_dir = dir.file("run");
  // coreutils' timeout delivers the SIGINT a terminal's Ctrl-C would, and passes the exit code on.
  const std::string timeout = "/usr/bin/timeout";
  if (!std::filesystem::exists(timeout)) {
    WARN(timeout << " is missing: the interrupted row did not run");
    return;
  }
  auto r = run({timeout, "--preserve-status", "-s", "INT", "8", DIFFUSE_CLI_PATH, "train", "--max-images", "8",
                "--batch", "2", "--steps", "1000000", "--out", run_dir});
  INFO(r.output);
  CHECK(r.exit_code == 130);
  CHECK_THAT(r.output, Catch::Contains("interrupted at step"));
  CHECK_FALSE(std::filesystem::is_empty(run_dir + "/checkpoints"));
}
