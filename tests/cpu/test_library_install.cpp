// The library as a consumer gets it: `cmake --install` into a temporary prefix, then
// docs/examples/embed configured with find_package(diffuse CONFIG REQUIRED) against that prefix
// only, built, and run on a tiny random-weight model directory; its PNG must hold exactly the
// images the in-tree public API generates. Also: the example configures with add_subdirectory.
#include <catch2/catch.hpp>
#include <algorithm>
#include <filesystem>
#include <fstream>

#include "diffuse/diffuse.h"
#include "engine/image_io.h"
#include "engine/model_dir.h"
#include "engine/scheduler_config.h"
#include "support/process.h"
#include "support/temp_dir.h"

using namespace diffuse;
using namespace diffuse::test;
namespace fs = std::filesystem;

namespace {

// Runs a command and requires exit code 0, showing its output when it fails.
void must_run(const std::vector<std::string>& argv) {
  RunResult r = run(argv);
  INFO(argv.at(0) << " " << (argv.size() > 1 ? argv[1] : "") << " ...\n" << r.output);
  REQUIRE(r.exit_code == 0);
}

std::string cache_value(const std::string& cache, const std::string& key) {
  std::ifstream in(cache);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key + ":", 0) == 0) return line.substr(line.find('=') + 1);
  return "";
}

// The example's configure line, with the compiler and generator this build uses.
std::vector<std::string> configure_example(const std::string& build_dir) {
  return {DIFFUSE_CMAKE_COMMAND, "-S", source_path("docs/examples/embed"), "-B", build_dir,
          "-G", DIFFUSE_CMAKE_GENERATOR, "-DCMAKE_BUILD_TYPE=Release",
          "-DCMAKE_CXX_COMPILER=" DIFFUSE_CXX_COMPILER, "-DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF"};
}

}  // namespace

TEST_CASE("docs/examples/embed builds against the installed package and writes the API's images", "[install]") {
  TempDir dir;
  const std::string prefix = dir.file("prefix"), build = dir.file("embed-build");
  must_run({DIFFUSE_CMAKE_COMMAND, "--install", DIFFUSE_BINARY_DIR, "--prefix", prefix});
  for (const char* f : {"include/diffuse/diffuse.h", "include/diffuse/error.h", "include/diffuse/device.h",
                        "include/diffuse/internal/nn/tensor.h", "include/diffuse/internal/engine/generate.h",
                        "include/diffuse/internal/kernels/philox.h", "lib/cmake/diffuse/diffuseConfig.cmake",
                        "lib/cmake/diffuse/diffuseConfigVersion.cmake", "lib/cmake/diffuse/diffuseTargets.cmake"}) {
    INFO(f);
    CHECK(fs::exists(fs::path(prefix) / f));
  }
  REQUIRE((fs::exists(prefix + "/lib/libdiffuse.a") || fs::exists(prefix + "/lib64/libdiffuse.a")));

  auto configure = configure_example(build);
  configure.push_back("-DCMAKE_PREFIX_PATH=" + prefix);
  must_run(configure);
  // The package came from the prefix, not from this build tree.
  CHECK(fs::equivalent(cache_value(build + "/CMakeCache.txt", "diffuse_DIR"),
                       fs::path(prefix) / "lib/cmake/diffuse"));
  must_run({DIFFUSE_CMAKE_COMMAND, "--build", build});

  UNet2DConfig cfg = resolve_unet_config("tiny");
  cfg.sample_size = 16;  // a quarter of the sampling work
  UNet2D unet(cfg, 21);
  const std::string model_dir = dir.file("model");
  save_model_dir(model_dir, unet, scheduler_config_to_json(SchedulerConfig{}));
  RunResult r = run({build + "/embed", model_dir, dir.file("out.png"), "3", "7"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("wrote 3 images of 16x16x1 (ddim, 20 steps)"));

  // The same request in this process, written the same way.
  Model model = Model::load(model_dir);
  SamplerOptions o;
  o.sampler = "ddim";
  o.steps = 20;
  GenerateRequest req;
  req.count = 3;
  req.seed = 7;
  Pipeline p(model, o);
  std::vector<float> images(3 * p.image_elements());
  REQUIRE(p.generate(req, images.data(), images.size()));
  write_png(dir.file("expected.png"), images.data(), 3, 16, 16, 1);
  Image8 got = read_image(dir.file("out.png")), want = read_image(dir.file("expected.png"));
  CHECK(got.width == 2 * 16 + 3 * 2);  // a 2x2 grid with 2-pixel borders
  CHECK(got.height == 2 * 16 + 3 * 2);
  CHECK(got.channels == 1);
  CHECK(got.pixels == want.pixels);
  CHECK(std::count(got.pixels.begin(), got.pixels.end(), got.pixels[2 * got.width + 2]) <
        static_cast<long>(got.pixels.size()) / 2);  // an image, not a flat fill

  // An error inside the library reaches the program as diffuse::Error: one line, exit code 1.
  RunResult bad = run({build + "/embed", dir.file("no-model"), dir.file("x.png")});
  CHECK(bad.exit_code == 1);
  CHECK_THAT(bad.output, Catch::Contains("embed: " + dir.file("no-model") + ": model directory not found"));
}

TEST_CASE("docs/examples/embed configures with add_subdirectory of the source tree", "[install]") {
  TempDir dir;
  auto configure = configure_example(dir.file("sub-build"));
  configure.push_back("-DDIFFUSE_SOURCE=" + std::string(DIFFUSE_SOURCE_DIR));
  must_run(configure);
  // Not the top-level project: no tests, tools or install rules of diffuse's own.
  const std::string cache = dir.file("sub-build/CMakeCache.txt");
  CHECK(cache_value(cache, "DIFFUSE_BUILD_TESTS") == "OFF");
  CHECK(cache_value(cache, "DIFFUSE_BUILD_TOOLS") == "OFF");
  CHECK(cache_value(cache, "DIFFUSE_INSTALL") == "OFF");
}

TEST_CASE("docs/library.md shows docs/examples/embed/main.cpp as it is", "[install]") {
  std::string code = slurp(source_path("docs/examples/embed/main.cpp"));
  // Past the file's opening comment, the program must appear in the docs verbatim.
  code = code.substr(code.find("#include"));
  CHECK(slurp(source_path("docs/library.md")).find(code) != std::string::npos);
}
