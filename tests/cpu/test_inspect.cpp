// `diffuse inspect` (engine/inspect.h, docs/cli.md) on what `diffuse train` writes: the model
// directory of a checkpoint, the checkpoint itself and the run directory, as text and as --json
// (parsed and checked field by field against what the run was given and what the files hold),
// plus a diffusers variant file, a sharded model, a bare UNet folder and paths that are none of these.
#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/inspect.h"
#include "engine/model_dir.h"
#include "nn/safetensors.h"
#include "nn/unet2d.h"
#include "support/process.h"
#include "support/temp_dir.h"

using namespace diffuse;
using namespace diffuse::test;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// One 2-step run shared by the cases below (training is the slow part).
struct TrainedRun {
  TempDir dir;
  std::string run = dir.file("run");
  std::string checkpoint = run + "/checkpoints/step-2";
  TrainedRun() {
    auto r = run_cli({"train", "--data", "fashion-mnist", "--max-images", "16", "--config", "tiny", "--out", run,
                      "--steps", "2", "--batch", "2", "--lr", "1e-3", "--seed", "5", "--classes", "10", "--checkpoint-every",
                      "1", "--prediction", "v_prediction"});
    REQUIRE(r.exit_code == 0);
  }
};

TrainedRun& trained_run() {
  static TrainedRun run;
  return run;
}

// The parameter count the model itself reports (built from the same config, not loaded).
int64_t tiny_parameters_with_classes(int classes) {
  UNet2DConfig cfg = resolve_unet_config("tiny");
  cfg.num_class_embeds = classes + 1;
  UNet2D model(cfg, 0);
  return model.num_parameters();
}

json inspect_json(const std::string& path) {
  auto r = run_cli({"inspect", path, "--json"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  return json::parse(r.output);
}

void check_model_fields(const json& model, const std::string& directory) {
  CHECK(model.at("directory") == directory);
  CHECK(model.at("layout") == "pipeline");
  CHECK(model.at("parameters") == tiny_parameters_with_classes(10));
  CHECK(model.at("classes") == 10);
  const json& unet = model.at("unet");
  CHECK(unet.at("sample_size") == 32);
  CHECK(unet.at("in_channels") == 1);
  CHECK(unet.at("block_out_channels") == json::array({32, 64}));
  CHECK(unet.at("layers_per_block") == 1);
  CHECK(unet.at("norm_num_groups") == 8);
  CHECK(unet.at("num_class_embeds") == 11);
  CHECK(unet.at("down_block_types") == json::array({"DownBlock2D", "AttnDownBlock2D"}));
  const json& weights = model.at("weights");
  REQUIRE(weights.size() == 1);
  CHECK(weights[0].at("file") == "diffusion_pytorch_model.safetensors");
  CHECK(weights[0].at("bytes") == fs::file_size(directory + "/unet/diffusion_pytorch_model.safetensors"));
  CHECK(weights[0].at("parameters") == model.at("parameters"));
  CHECK(weights[0].at("dtypes") == json{{"F32", model.at("parameters")}});
  const json& scheduler = model.at("scheduler");
  CHECK(scheduler.at("path") == directory + "/scheduler/scheduler_config.json");
  CHECK(scheduler.at("class") == "DDPMScheduler");
  CHECK(scheduler.at("prediction_type") == "v_prediction");
  CHECK(scheduler.at("beta_schedule") == "linear");
  CHECK(scheduler.at("beta_start") == Approx(1e-4));
  CHECK(scheduler.at("beta_end") == Approx(0.02));
  CHECK(scheduler.at("num_train_timesteps") == 1000);
}

void check_checkpoint_fields(const json& checkpoint, const std::string& directory, int64_t step) {
  CHECK(checkpoint.at("directory") == directory);
  CHECK(checkpoint.at("step") == step);
  const json state = json::parse(std::ifstream(directory + "/state.json"));
  CHECK(checkpoint.at("loss") == state.at("loss"));
  CHECK(checkpoint.at("optimizer_bytes") == fs::file_size(directory + "/optimizer.safetensors"));
}

void check_run_fields(const json& run, const std::string& directory) {
  CHECK(run.at("directory") == directory);
  CHECK(run.at("checkpoints") == json::array({1, 2}));
  const json& options = run.at("options");
  CHECK(options.at("batch") == 2);
  CHECK(options.at("lr") == Approx(1e-3));
  CHECK(options.at("classes") == 10);
  CHECK(options.at("seed") == 5);
  CHECK(options.at("prediction") == "v_prediction");
  CHECK(run.at("last_metrics").at("step") == 2);
}

}  // namespace

TEST_CASE("inspect describes a checkpoint's model directory from its headers", "[cli][inspect]") {
  const std::string ema = trained_run().checkpoint + "/ema";
  const json j = inspect_json(ema);
  CHECK(j.at("kind") == "model");
  CHECK(j.at("path") == ema);
  check_model_fields(j.at("model"), ema);
  CHECK(j.at("checkpoint").is_null());
  CHECK(j.at("run").is_null());

  auto text = run_cli({"inspect", ema});
  REQUIRE(text.exit_code == 0);
  CHECK_THAT(text.output, Catch::Contains("parameters: ") && Catch::Contains("classes: 10 (--class 0..9") &&
                              Catch::Contains("prediction v_prediction") && Catch::Contains("blocks 32, 64") &&
                              Catch::Contains("attention at 64 channels (head dim 32)"));
}

TEST_CASE("inspect describes a checkpoint: its EMA model, step, loss and the run's options", "[cli][inspect]") {
  const TrainedRun& t = trained_run();
  const json j = inspect_json(t.checkpoint);
  CHECK(j.at("kind") == "checkpoint");
  check_model_fields(j.at("model"), t.checkpoint + "/ema");
  check_checkpoint_fields(j.at("checkpoint"), t.checkpoint, 2);
  check_run_fields(j.at("run"), t.run);

  // An older checkpoint of the same run reports its own step.
  const json older = inspect_json(t.run + "/checkpoints/step-1");
  check_checkpoint_fields(older.at("checkpoint"), t.run + "/checkpoints/step-1", 1);

  auto text = run_cli({"inspect", t.checkpoint});
  REQUIRE(text.exit_code == 0);
  CHECK_THAT(text.output, Catch::Contains("(a training checkpoint)") && Catch::Contains("step 2, loss ") &&
                              Catch::Contains("run options:") && Catch::Contains("batch=2"));
}

TEST_CASE("inspect of a run directory describes its newest checkpoint", "[cli][inspect]") {
  const TrainedRun& t = trained_run();
  const json j = inspect_json(t.run);
  CHECK(j.at("kind") == "run");
  CHECK(j.at("path") == t.run);
  check_model_fields(j.at("model"), t.checkpoint + "/ema");
  check_checkpoint_fields(j.at("checkpoint"), t.checkpoint, 2);
  check_run_fields(j.at("run"), t.run);
}

TEST_CASE("inspect lists diffusers variant weights and reads a bare UNet folder", "[cli][inspect]") {
  TempDir dir;
  const std::string bare = dir.file("bare");
  fs::copy(trained_run().checkpoint + "/ema/unet", bare, fs::copy_options::recursive);
  fs::copy_file(bare + "/diffusion_pytorch_model.safetensors", bare + "/diffusion_pytorch_model.fp16.safetensors");
  const Inspection in = inspect_path(bare);
  CHECK(in.kind == "model");
  CHECK(in.model.layout == "unet");
  CHECK_FALSE(in.model.scheduler.has_value());
  REQUIRE(in.model.weights.size() == 2);
  CHECK(in.model.weights[1].file == "diffusion_pytorch_model.fp16.safetensors");
  CHECK(in.model.weights[1].parameters == in.model.parameters);
  auto text = run_cli({"inspect", bare});
  REQUIRE(text.exit_code == 0);
  CHECK_THAT(text.output, Catch::Contains("bare UNet folder") && Catch::Contains("(variant)") &&
                              Catch::Contains("scheduler: none in the directory"));
}

TEST_CASE("inspect adds up a sharded model's shards from their headers", "[cli][inspect]") {
  TempDir dir;
  const std::string model = dir.file("sharded");
  fs::copy(trained_run().checkpoint + "/ema", model, fs::copy_options::recursive);
  const std::string unet = model + "/unet/";
  const SafetensorsFile whole = SafetensorsFile::open(unet + "diffusion_pytorch_model.safetensors");
  const std::vector<std::string> names = whole.names();
  json weight_map = json::object();
  for (int shard = 0; shard < 2; ++shard) {
    const std::string file = "diffusion_pytorch_model-0000" + std::to_string(shard + 1) + "-of-00002.safetensors";
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (size_t i = shard; i < names.size(); i += 2) {
      tensors.emplace_back(names[i], whole.get(names[i]));
      weight_map[names[i]] = file;
    }
    save_safetensors(unet + file, tensors);
  }
  std::ofstream(unet + "diffusion_pytorch_model.safetensors.index.json") << json{{"metadata", json::object()}, {"weight_map", weight_map}};
  const int64_t parameters = inspect_path(trained_run().checkpoint + "/ema").model.parameters;
  fs::remove(unet + "diffusion_pytorch_model.safetensors");

  const json j = inspect_json(model);
  const json& weights = j.at("model").at("weights");
  REQUIRE(weights.size() == 1);
  CHECK(weights[0].at("file") == "diffusion_pytorch_model.safetensors.index.json");
  CHECK(weights[0].at("tensors") == names.size());
  CHECK(weights[0].at("parameters") == parameters);
  CHECK(j.at("model").at("parameters") == parameters);
  CHECK(weights[0].at("bytes") == fs::file_size(unet + "diffusion_pytorch_model-00001-of-00002.safetensors") +
                                      fs::file_size(unet + "diffusion_pytorch_model-00002-of-00002.safetensors"));
}

TEST_CASE("inspect of a missing or unrecognised path is one line naming it, exit code 1", "[cli][inspect]") {
  TempDir dir;
  const std::string missing = dir.file("no-such-model");
  auto r = run_cli({"inspect", missing});
  CHECK(r.exit_code == 1);
  CHECK(r.output == "diffuse inspect: " + missing + ": not found\n");

  const std::string empty = dir.file("empty");
  fs::create_directory(empty);
  r = run_cli({"inspect", empty, "--json"});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::StartsWith("diffuse inspect: " + empty + ": not a model directory, checkpoint or run"));
  CHECK(std::count(r.output.begin(), r.output.end(), '\n') == 1);

  // A model directory whose weights file is gone names that file.
  const std::string broken = dir.file("broken");
  fs::copy(trained_run().checkpoint + "/ema", broken, fs::copy_options::recursive);
  fs::remove(broken + "/unet/diffusion_pytorch_model.safetensors");
  r = run_cli({"inspect", broken});
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Contains("diffusion_pytorch_model.safetensors: weights file not found"));

  // No path at all is a usage error.
  r = run_cli({"inspect"});
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("PATH is required"));
}
