// The op profiler (nn/op_profile.h) on the CPU: a profiled tiny training step counts what the model
// must call and changes none of its bits (support/op_profile_check.h); the profiler is the calling
// thread's alone; only one runs at a time; a CPU-only build refuses a CUDA one; and `diffuse bench
// train|sample --profile` prints the table and writes it into the JSON.
#include <catch2/catch.hpp>

#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "nn/ops.h"
#include "nn/runtime.h"
#include "support/op_profile_check.h"
#include "support/process.h"
#include "support/temp_dir.h"

using namespace diffuse;
using namespace diffuse::test;

TEST_CASE("op profile of a tiny CPU training step: calls per op, times that add up, the same bits", "[profile]") {
  check_training_profile(Device::cpu);
}

TEST_CASE("op profile: only the profiler's thread is counted and one profiler exists at a time", "[profile]") {
  op_profile::Profiler profiler(Device::cpu);
  CHECK_THROWS_WITH(op_profile::Profiler(Device::cpu), Catch::Contains("another profiler"));
  const Tensor a = Tensor::ones({4}), b = Tensor::ones({4});
  profiler.begin_step();
  (void)ops::add(a, b);
  std::thread other([&] {
    for (int i = 0; i < 3; ++i) (void)ops::mul(a, b);
  });
  other.join();
  (void)ops::scale(a, 2.0);
  REQUIRE(profiler.end_step());
  const op_profile::Profile p = profiler.result();
  REQUIRE(p.steps == 1);
  REQUIRE(p.ops.size() == 2);
  CHECK(profile_row(p, "add") != nullptr);
  CHECK(profile_row(p, "scale") != nullptr);
  CHECK(profile_row(p, "mul") == nullptr);
  // Between steps nothing is recorded.
  (void)ops::mul(a, b);
  CHECK(profiler.result().ops.size() == 2);
}

TEST_CASE("op profile: the event pool grows between steps and a step it was too small for is not counted", "[profile]") {
  op_profile::Profiler profiler(Device::cpu);
  const Tensor a = Tensor::ones({4}), b = Tensor::ones({4});
  auto step = [&] {
    profiler.begin_step();
    for (int i = 0; i < 600; ++i) (void)ops::add(a, b);
    return profiler.end_step();
  };
  CHECK_FALSE(step());  // 600 seam calls > the initial 256
  CHECK(profiler.result().steps == 0);
  CHECK(step());
  const op_profile::Profile p = profiler.result();
  CHECK(p.steps == 1);
  REQUIRE(p.ops.size() == 1);
  CHECK(p.ops[0].calls == 600);
}

TEST_CASE("op profile: a CUDA profiler needs a CUDA build", "[profile]") {
  if (built_with_cuda()) return;
  CHECK_THROWS_WITH(op_profile::Profiler(Device::cuda), Catch::Contains("no CUDA backend"));
  op_profile::Profiler after(Device::cpu);  // the refused one left no profiler behind
}

TEST_CASE("bench train and bench sample --profile print the per-op table and write it to the JSON", "[profile][bench]") {
  TempDir dir;
  const std::string json_path = dir.file("train.json");
  auto r = run_cli({"bench", "train", "--config", "tiny", "--batch", "1", "--warmup", "0", "--iters", "1",
                    "--threads", "1", "--profile", "--profile-steps", "2", "--json", json_path});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("op profile: training step, batch 1, fp32, 2 profiled steps") != std::string::npos);
  CHECK(r.output.find("conv2d backward") != std::string::npos);
  {
    std::ifstream in(json_path);
    check_profile_json(nlohmann::json::parse(in)["profile"], "cpu", 2, true);
  }
  const std::string sample_json = dir.file("sample.json");
  r = run_cli({"bench", "sample", "--config", "tiny", "--batch", "1", "--samplers", "ddim", "--steps", "1",
               "--threads", "1", "--profile", "--profile-steps", "1", "--json", sample_json});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("op profile: ddim sampling step, batch 1, fp32, 1 profiled step") != std::string::npos);
  std::ifstream in(sample_json);
  const nlohmann::json j = nlohmann::json::parse(in);
  const nlohmann::json& p = j["results"][0]["profile"];
  check_profile_json(p, "cpu", 1, false);
  bool step = false;
  for (const auto& op : p["ops"]) {
    step = step || op["op"] == "denoise_step";
    CHECK(op["op"].get<std::string>().find("backward") == std::string::npos);  // sampling has no backward
  }
  CHECK(step);
  r = run_cli({"bench", "train", "--profile", "--profile-steps", "0"});
  CHECK(r.exit_code != 0);
  CHECK(r.output.find("--profile-steps must be positive") != std::string::npos);
}
