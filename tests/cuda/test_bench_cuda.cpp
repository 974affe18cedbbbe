// `diffuse bench train --device cuda` times the step as `diffuse train` runs it: after the warm-up
// steps the timed steps replay the step's CUDA graph (the JSON says so, and has no phase split,
// which a replay cannot give), and `--cuda-graphs off` times eager steps split into forward+loss,
// backward and optimizer. With `--conv-search heuristic` both processes choose cuDNN's algorithms
// alike, so both runs reach the same losses bit for bit. Never a timing test: only that the times
// exist and are positive.
#include <catch2/catch.hpp>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "cuda_test_util.h"
#include "support/process.h"
#include "support/temp_dir.h"

using namespace diffuse::test;

TEST_CASE("bench train on cuda replays the step's graph and --cuda-graphs off splits eager steps into phases",
          "[cuda][graphs][bench][cli]") {
  DIFFUSE_CUDA_TEST_GUARD();
  TempDir dir;
  auto bench = [&](const char* graphs) {
    const std::string json_path = dir.file(std::string("train-") + graphs + ".json");
    const RunResult r = run_cli({"bench", "train", "--device", "cuda", "--config", "tiny", "--batch", "1", "--warmup",
                                 "2", "--iters", "1", "--cuda-graphs", graphs, "--conv-search", "heuristic",
                                 "--json", json_path});
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    std::ifstream in(json_path);
    return std::make_pair(r.output, nlohmann::json::parse(in));
  };
  const auto [graph_out, graph] = bench("on");
  CHECK(graph["cuda_graphs"] == true);
  CHECK(graph_out.find("(graph replay)") != std::string::npos);
  CHECK(graph["forward_ms"].is_null());
  CHECK(graph["backward_ms"].is_null());
  CHECK(graph["step_ms"].get<double>() > 0);
  CHECK_FALSE(graph.contains("cuda_graphs_fallback"));
  CHECK(graph["conv_search"] == "heuristic");

  const auto [eager_out, eager] = bench("off");
  CHECK(eager["cuda_graphs"] == false);
  CHECK(eager_out.find("graph replay") == std::string::npos);
  CHECK(eager["forward_ms"].get<double>() > 0);
  CHECK(eager["backward_ms"].get<double>() > 0);
  // Two processes, one choice of algorithms (heuristic): the replayed and the eager step agree.
  CHECK(graph["loss_last"].get<double>() == eager["loss_last"].get<double>());
  CHECK(graph["loss_first"].get<double>() == eager["loss_first"].get<double>());
}
