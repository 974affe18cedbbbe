// scripts/demo.sh's own logic, through its --dry-run (which stops before installing, building or
// training): each run gets a new runs/demo-<date>-<time> directory, an existing directory is never
// reused or removed, and bad settings are refused with exit code 2 before any work.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <regex>

#include "support/process.h"
#include "support/temp_dir.h"

using namespace diffuse::test;
namespace fs = std::filesystem;

namespace {

RunResult demo_dry_run(const EnvVars& env, const std::string& argument = "--dry-run") {
  return run({"/bin/bash", source_path("scripts/demo.sh"), argument}, "", env);
}

}  // namespace

TEST_CASE("demo.sh --dry-run plans a new timestamped run directory and the sampler defaults", "[demo]") {
  auto r = demo_dry_run({{"DIFFUSE_DEMO_STEPS", "7"}});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  std::smatch m;
  REQUIRE(std::regex_search(r.output, m, std::regex("train --out (runs/demo-[0-9]{8}-[0-9]{6}) ")));
  const std::string out = m[1];
  CHECK_FALSE(fs::exists(source_path(out)));  // a dry run creates nothing
  CHECK_THAT(r.output, Catch::Contains("--steps 7 ") && Catch::Contains("--checkpoint-every 7 ") &&
                           Catch::Contains("sample --model " + out + "/checkpoints/step-7/ema --n 16 --seed 0 --out " +
                                           out + "/samples/final-grid.png"));
  // The grid uses `diffuse sample`'s defaults: no sampler flags of its own.
  CHECK_THAT(r.output, !Catch::Contains("--sampler") && !Catch::Contains("--steps 50"));
}

TEST_CASE("demo.sh keeps an existing run directory and refuses bad settings with exit code 2", "[demo]") {
  TempDir dir;
  const std::string previous = dir.file("previous-demo");
  fs::create_directory(previous);
  std::ofstream(previous + "/keep.txt") << "an earlier run";
  auto r = demo_dry_run({{"DIFFUSE_DEMO_OUT", previous}});
  CHECK(r.exit_code == 2);
  CHECK(r.output == "demo: " + previous + " already exists; it is kept as it is (set DIFFUSE_DEMO_OUT to a new directory)\n");
  CHECK(fs::exists(previous + "/keep.txt"));

  for (const char* steps : {"0", "ten", "-5", "1e3"}) {
    r = demo_dry_run({{"DIFFUSE_DEMO_STEPS", steps}, {"DIFFUSE_DEMO_OUT", dir.file("new")}});
    INFO(steps);
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.output, Catch::Contains("DIFFUSE_DEMO_STEPS must be a positive integer"));
  }
  r = demo_dry_run({}, "--fast");
  CHECK(r.exit_code == 2);
  CHECK_THAT(r.output, Catch::Contains("unknown argument '--fast'"));
  CHECK_FALSE(fs::exists(dir.file("new")));
}
