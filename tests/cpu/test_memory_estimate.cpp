// The memory estimate (issue 13 class 4): its parameter walk matches the model nn/unet2d.cpp
// builds, and an absurd batch or config is refused before any allocation, naming the flag or the
// file and the size in GiB.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "engine/memory_estimate.h"
#include "nn/unet2d.h"
#include "support/process.h"
#include "support/temp_dir.h"

using namespace diffuse;
using namespace diffuse::test;

TEST_CASE("the estimate's parameter count is the built model's", "[memory]") {
  CHECK(unet_parameter_count(resolve_unet_config("tiny")) == 701345);
  CHECK(unet_parameter_count(resolve_unet_config("fmnist-small")) == 6469889);
  CHECK(unet_parameter_count(resolve_unet_config("ddpm-cifar10")) == 35746307);
  // Variations the named configs do not cover: class embeddings, one layer per block, no attention.
  UNet2DConfig c = resolve_unet_config("tiny");
  c.num_class_embeds = 11;
  c.layers_per_block = 1;
  CHECK(unet_parameter_count(c) == static_cast<double>(UNet2D(c, 0).num_parameters()));
  c.layers_per_block = 3;
  for (auto& t : c.down_block_types) t = "DownBlock2D";
  for (auto& t : c.up_block_types) t = "UpBlock2D";
  CHECK(unet_parameter_count(c) == static_cast<double>(UNet2D(c, 0).num_parameters()));
}

TEST_CASE("activations grow with the batch and the config, sampling needs less than training", "[memory]") {
  const UNet2DConfig tiny = resolve_unet_config("tiny"), cifar = resolve_unet_config("ddpm-cifar10");
  CHECK(training_memory(tiny, 64, 0).activation_bytes == 2 * training_memory(tiny, 32, 0).activation_bytes);
  CHECK(training_memory(cifar, 32, 0).total() > training_memory(tiny, 32, 0).total());
  CHECK(sampling_memory(cifar, 32).total() < training_memory(cifar, 32, 0).total());
  CHECK(available_memory(Device::cpu) > 0);  // MemAvailable from /proc/meminfo
}

TEST_CASE("a batch or config that cannot fit is refused naming it and the size", "[memory]") {
  const UNet2DConfig tiny = resolve_unet_config("tiny");
  try {
    require_memory(training_memory(tiny, 1000000000, 0), Device::cpu, "training", "--batch 1000000000", "--config tiny");
    FAIL("a billion images per batch fit");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::usage);
    CHECK_THAT(e.what(), Catch::StartsWith("--batch 1000000000: training needs about "));
    CHECK_THAT(e.what(), Catch::Contains("GiB available (MemAvailable)"));
  }
  UNet2DConfig deep = tiny;
  deep.layers_per_block = 1000000000;
  try {
    require_memory(training_memory(deep, 1, 0), Device::cpu, "training", "--batch 1", "--config deep.json");
    FAIL("a billion layers per block fit");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::bad_input);
    CHECK_THAT(e.what(), Catch::StartsWith("--config deep.json: training needs about "));
  }
  CHECK_NOTHROW(require_memory(training_memory(tiny, 8, 0), Device::cpu, "training", "--batch 8", "--config tiny"));
}

TEST_CASE("diffuse train --batch 1000000 is refused before any work", "[memory][cli]") {
  TempDir dir;
  auto r = run_cli({"train", "--out", dir.file("run"), "--batch", "1000000", "--steps", "1"});
  INFO(r.output);
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("--batch 1000000: training needs about"));
  CHECK_FALSE(std::filesystem::exists(dir.file("run")));
  // A config file whose layer count cannot fit: named, exit 1 (a bad file).
  const std::string config = dir.file("deep.json");
  std::ofstream(config) << R"({"sample_size": 32, "in_channels": 1, "out_channels": 1, "block_out_channels": [32, 64],
    "layers_per_block": 1000000000, "down_block_types": ["DownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "UpBlock2D"], "norm_num_groups": 8})";
  r = run_cli({"train", "--out", dir.file("run2"), "--config", config, "--steps", "1"});
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Contains(config));
  CHECK(std::count(r.output.begin(), r.output.end(), '\n') == 1);
}
