// Smoke test of `diffuse bench kernels` (the CLI, as a user runs it): a --quick group_norm run on
// the CPU writes JSON whose rows carry every reported field, whose shapes are the tiny config's
// levels at batch 2, and whose byte counts and rates agree with the shapes. Never a timing test:
// only that times are positive and the derived numbers are consistent.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "support/process.h"
#include "support/temp_dir.h"

using diffuse::test::run_cli;

TEST_CASE("bench kernels --quick writes a JSON report of group_norm at the tiny config's shapes", "[bench]") {
  diffuse::test::TempDir dir;
  const std::string json_path = dir.file("kernels.json");
  auto r = run_cli({"bench", "kernels", "--device", "cpu", "--filter", "group_norm", "--quick", "--json", json_path});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("group_norm") != std::string::npos);  // the table is on stdout

  std::ifstream in(json_path);
  REQUIRE(in.good());
  nlohmann::json j = nlohmann::json::parse(in);
  CHECK(j["benchmark"] == "kernels");
  CHECK(j["quick"] == true);
  CHECK(j["device"]["kind"] == "cpu");
  CHECK(!j["device"]["name"].get<std::string>().empty());
  CHECK(j["device"]["cores"].get<int>() >= 1);
  CHECK(j["build"].contains("openblas"));
  CHECK(j["build"].contains("version"));
  // The commit stamped at build time (cmake/built_commit.cmake), not the checkout's HEAD now.
  if (!std::getenv("DIFFUSE_GIT_COMMIT")) {
    CHECK(std::regex_match(j["git_commit"].get<std::string>(), std::regex("[0-9a-f]{40}(-dirty)?|unknown")));
  }
  CHECK(!j["date"].get<std::string>().empty());
  CHECK(j["peaks"]["copy_gbps"].get<double>() > 0);
  CHECK(j["peaks"]["gemm_gflops"].get<double>() > 0);

  // tiny: block_out [32, 64], 8 groups, 32x32 input: levels 32x32x32 and 16x16x64 (the mid block
  // shares the second), forward and backward each.
  const auto& rows = j["rows"];
  REQUIRE(rows.size() == 4);
  std::set<std::pair<int64_t, int64_t>> seen;
  for (const auto& row : rows) {
    INFO(row.dump());
    CHECK(row["family"] == "group_norm");
    CHECK((row["pass"] == "fwd" || row["pass"] == "bwd"));
    CHECK(!row.contains("error"));
    const auto& d = row["dims"];
    CHECK(d["n"] == 2);
    CHECK(d["groups"] == 8);
    seen.insert({d["spatial"].get<int64_t>(), d["channels"].get<int64_t>()});
    // The fewest bytes, recounted from the shape: x (and dy) in, y (or dx) out, add_nc, the
    // affine parameters and the f64 statistics.
    const double n = d["n"], s = d["spatial"], c = d["channels"], g = d["groups"], e = n * s * c;
    const double bytes = row["pass"] == "fwd" ? 4 * (2 * e + n * c + 2 * c) + 16 * n * g
                                              : 4 * (3 * e + 2 * n * c + 4 * c) + 16 * n * g;
    CHECK(row["bytes"].get<double>() == Approx(bytes));
    const double ms = row["time_ms"];
    CHECK(ms > 0);
    CHECK(row["time_min_ms"].get<double>() <= ms);
    CHECK(row["reps"].get<int>() >= 2);
    CHECK(row["gbps"].get<double>() == Approx(bytes / (ms * 1e-3) * 1e-9));
    CHECK(row["gflops"].get<double>() > 0);
    CHECK(row["floor_fraction"].get<double>() > 0);
    CHECK(row["floor_fraction"].get<double>() == Approx(row["floor_ms"].get<double>() / ms));
    CHECK(!row["reference"].get<std::string>().empty());
    CHECK(row["reference_ms"].get<double>() > 0);
    CHECK(row["speedup_vs_reference"].get<double>() == Approx(row["reference_ms"].get<double>() / ms));
  }
  CHECK(seen == std::set<std::pair<int64_t, int64_t>>{{32 * 32, 32}, {16 * 16, 64}});
}

TEST_CASE("bench rejects an unknown mode, a bad flag and a filter that matches nothing", "[bench]") {
  auto r = run_cli({"bench", "kernelz"});
  CHECK(r.exit_code == 2);
  CHECK(r.output.find("kernelz") != std::string::npos);
  r = run_cli({"bench", "kernels", "--no-such-flag"});
  CHECK(r.exit_code == 2);
  CHECK(r.output.find("no-such-flag") != std::string::npos);
  // Flag values the benchmarks refuse are usage errors too (docs/cli.md: exit code 2).
  r = run_cli({"bench", "kernels", "--quick", "--filter", "no_such_family"});
  CHECK(r.exit_code == 2);
  CHECK(r.output.find("--filter no_such_family") != std::string::npos);
  r = run_cli({"bench", "train", "--device", "cpu", "--precision", "bf16"});
  CHECK(r.exit_code == 2);
  CHECK(r.output.find("bf16") != std::string::npos);
}

TEST_CASE("bench train reports the step's FLOPs, GFLOP/s, peak RSS, threads and ISA path", "[bench][threads]") {
  diffuse::test::TempDir dir;
  const std::string json_path = dir.file("train.json");
  auto r = run_cli({"bench", "train", "--config", "tiny", "--batch", "1", "--warmup", "0", "--iters", "1", "--threads",
                    "1", "--json", json_path});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("cpu: 1 threads") != std::string::npos);
  CHECK(r.output.find("GFLOP/s sustained") != std::string::npos);
  std::ifstream in(json_path);
  nlohmann::json j = nlohmann::json::parse(in);
  // PyTorch's profiler (torch.profiler with_flops over benchmarks/reference/unet.py, summing
  // aten::conv2d, aten::addmm and aten::bmm) counts 18514182144 FLOPs for a tiny forward at batch
  // 32: 578568192 per image; a training step is 3 forwards' worth (benchmarks/flops.h).
  CHECK(j["step_flops"].get<double>() == 3.0 * 578568192.0);
  CHECK(j["gflops"].get<double>() == Approx(j["step_flops"].get<double>() / (j["step_ms"].get<double>() * 1e-3) * 1e-9));
  CHECK(j["peak_rss_mib"].get<double>() >= j["baseline_rss_mib"].get<double>());
  CHECK(j["baseline_rss_mib"].get<double>() > 0);
  CHECK(j["cpu_threads"] == 1);
  CHECK(j["cpu_threads_choice"].get<std::string>().find("--threads") != std::string::npos);
  const std::string isa = j["cpu_isa"];
  CHECK((isa == "baseline" || isa == "avx2" || isa == "avx512"));

  // The count scales with the batch and follows the config: fmnist-small at batch 2.
  r = run_cli({"bench", "train", "--config", "fmnist-small", "--batch", "2", "--warmup", "0", "--iters", "1",
               "--json", json_path});
  REQUIRE(r.exit_code == 0);
  std::ifstream again(json_path);
  j = nlohmann::json::parse(again);
  // The profiler's count for fmnist-small at batch 64: 202891067392, 3170172928 per image.
  CHECK(j["step_flops"].get<double>() == 3.0 * 2 * 3170172928.0);
}
