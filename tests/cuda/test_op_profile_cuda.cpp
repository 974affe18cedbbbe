// The op profiler (nn/op_profile.h) with its CUDA clock (events on the stream, read once after the
// step): a profiled tiny training step counts what the model must call, its GPU times add up to
// the step's, and it changes none of the step's bits (support/op_profile_check.h); and `diffuse
// bench train|sample --device cuda --profile` end to end, the training one after graph replays.
#include <catch2/catch.hpp>

#include <fstream>
#include <nlohmann/json.hpp>

#include "support/cuda_guard.h"
#include "support/op_profile_check.h"
#include "support/process.h"
#include "support/temp_dir.h"

using namespace diffuse;
using namespace diffuse::test;

TEST_CASE("op profile of a tiny CUDA training step: calls per op, times that add up, the same bits",
          "[cuda][profile]") {
  DIFFUSE_CUDA_TEST_GUARD();
  check_training_profile(Device::cuda);
}

TEST_CASE("bench train --profile on cuda profiles a second, eager TrainStep after graph replays, and bench sample too",
          "[cuda][profile][bench][cli]") {
  DIFFUSE_CUDA_TEST_GUARD();
  TempDir dir;
  const std::string train_json = dir.file("train.json");
  RunResult r = run_cli({"bench", "train", "--device", "cuda", "--config", "tiny", "--batch", "1", "--warmup", "2",
                         "--iters", "1", "--profile", "--profile-steps", "1", "--json", train_json});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("(graph replay)") != std::string::npos);
  CHECK(r.output.find("a second TrainStep: the timed one replays a CUDA graph") != std::string::npos);
  {
    std::ifstream in(train_json);
    check_profile_json(nlohmann::json::parse(in)["profile"], "cuda", 1, true);
  }
  const std::string sample_json = dir.file("sample.json");
  r = run_cli({"bench", "sample", "--device", "cuda", "--config", "tiny", "--batch", "1", "--samplers", "ddim",
               "--steps", "3", "--profile", "--profile-steps", "1", "--json", sample_json});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("op profile: ddim sampling step, batch 1, fp32, 1 profiled step") != std::string::npos);
  std::ifstream in(sample_json);
  check_profile_json(nlohmann::json::parse(in)["results"][0]["profile"], "cuda", 1, false);
}
