// Run directories for the report tests (tests/cpu/test_report*.cpp), written without training: a
// config.json with the named `tiny` UNet and a given "train" object, N metrics lines shaped like
// engine/trainer.cpp's, and real PNG sample grids. Training makes the same files; these let a test
// choose the number of lines (300, or 100000 for the downsampling) in milliseconds. And the one
// way the browser tests find headless Chromium.
#pragma once
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/image_io.h"
#include "nn/tensor.h"
#include "support/process.h"
#include "support/temp_dir.h"

namespace diffuse::test {

struct SyntheticRun {
  int64_t steps = 300;
  int64_t sample_every = 50;  // a 4x4 grid of 32x32 noise images each time; 0: none
  nlohmann::json train = {{"lr", 0.001}, {"batch", 32}, {"config", "tiny"}};
  bool skipped_field = false;  // lines carry "skipped" (issue 15's count)
};

inline void write_synthetic_run(const std::string& dir, const SyntheticRun& spec) {
  namespace fs = std::filesystem;
  fs::create_directories(fs::path(dir) / "samples");
  nlohmann::json train = spec.train;
  train["steps"] = spec.steps;
  nlohmann::json config = {{"train", train},
                           {"unet", nlohmann::json::parse(slurp(source_path("configs/tiny.json")))},
                           {"session", {{"started", "2026-12-04T03:00:00Z"}, {"cpu", "Test CPU"}, {"cpu_kernels", "avx2"},
                                        {"threads", 2}, {"version", "0.0.0"}}}};
  write_bytes(dir + "/config.json", config.dump(2));
  std::ofstream metrics(dir + "/metrics.jsonl");
  for (int64_t s = 1; s <= spec.steps; ++s) {
    nlohmann::json line = {{"step", s},
                           {"loss", 0.05 + 0.9 / std::sqrt(static_cast<double>(s)) + 0.02 * std::sin(0.7 * static_cast<double>(s))},
                           {"lr", 0.001},
                           {"grad_norm", 1.0 + 0.5 * std::cos(0.3 * static_cast<double>(s))},
                           {"images_per_second", 40.0 + static_cast<double>(s % 7)},
                           {"seconds", 0.8 * static_cast<double>(s)}};
    if (spec.skipped_field) line["skipped"] = s / 100;
    metrics << line.dump() << "\n";
  }
  for (int64_t s = spec.sample_every; spec.sample_every > 0 && s <= spec.steps; s += spec.sample_every)
    save_png_grid(dir + "/samples/step-" + std::to_string(s) + ".png",
                  Tensor::randn({16, 32, 32, 1}, static_cast<uint64_t>(s)));
}

// Debian's chromium, or "" when it is not installed.
inline std::string chromium_path() {
  for (const char* p : {"/usr/bin/chromium", "/usr/bin/chromium-browser"})
    if (std::filesystem::exists(p)) return p;
  return "";
}

}  // namespace diffuse::test
