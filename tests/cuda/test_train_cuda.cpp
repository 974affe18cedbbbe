// The CLI end to end with --device cuda against the same commands on the CPU (issue 4, "Proof"):
// a 200-step `tiny` run on Fashion-MNIST whose loss curve matches the CPU run's (same seed, so the
// same batches, timesteps and noise: only float rounding differs), `diffuse sample` with DDIM-10
// and `diffuse forward` (output and parameter grads) on one checkpoint. The CPU halves take
// minutes on a small machine; these cases only run where a GPU is (label `cuda`).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/image_io.h"
#include "nn/safetensors.h"
#include "support/cuda_compare.h"
#include "support/cuda_guard.h"
#include "support/metrics.h"
#include "support/process.h"
#include "support/temp_dir.h"

using namespace diffuse;
using namespace diffuse::test;
namespace fs = std::filesystem;

namespace {


double mean_of(const std::vector<double>& v, size_t begin, size_t end) {
  double s = 0;
  for (size_t i = begin; i < end; ++i) s += v[i];
  return s / static_cast<double>(end - begin);
}

void require_ok(const RunResult& r, const std::string& what) {
  INFO(what << ":\n" << r.output);
  REQUIRE(r.exit_code == 0);
}

// A short CPU training run shared by the sample and forward cases (its weights have moved off
// their initialisation, so images and outputs are not just the prior); made once per process.
const std::string& short_run_checkpoint() {
  static TempDir dir;
  static const std::string model = [] {
    const std::string run = dir.file("run");
    require_ok(run_cli({"train", "--data", "fashion-mnist", "--max-images", "512", "--config", "tiny", "--out", run,
                        "--steps", "40", "--batch", "8", "--lr", "1e-3", "--seed", "1"}),
               "short CPU training run");
    const std::string ckpt = run + "/checkpoints/step-40/model";
    REQUIRE(fs::exists(ckpt));
    return ckpt;
  }();
  return model;
}

}  // namespace

TEST_CASE("train cuda: 200 tiny steps on Fashion-MNIST follow the CPU's loss curve", "[cuda][train]") {
  DIFFUSE_CUDA_TEST_GUARD();
  TempDir dir;
  std::vector<std::vector<double>> curves;
  for (const char* device : {"cpu", "cuda"}) {
    const std::string out = dir.file(std::string("run-") + device);
    require_ok(run_cli({"train", "--data", "fashion-mnist", "--config", "tiny", "--out", out, "--steps", "200",
                        "--batch", "32", "--lr", "1e-3", "--seed", "0", "--log-every", "50", "--device", device}),
               std::string("train --device ") + device);
    CHECK(fs::exists(out + "/checkpoints/step-200/model/unet/diffusion_pytorch_model.safetensors"));
    curves.push_back(losses(out + "/metrics.jsonl"));
    REQUIRE(curves.back().size() == 200);
  }
  const std::vector<double>& cpu = curves[0];
  const std::vector<double>& gpu = curves[1];
  // Step 1 sees the same weights, batch, timesteps and noise on both devices.
  CHECK(std::fabs(gpu[0] - cpu[0]) <= 1e-3 * cpu[0]);
  const double tail_cpu = mean_of(cpu, 150, 200), tail_gpu = mean_of(gpu, 150, 200);
  WARN("mean loss over steps 151-200: cpu " << tail_cpu << ", cuda " << tail_gpu << " (step 1: " << cpu[0] << ", "
                                            << gpu[0] << ")");
  CHECK(std::fabs(tail_gpu - tail_cpu) <= 0.1 * tail_cpu);
  CHECK(tail_cpu < 0.1);
  CHECK(tail_gpu < 0.1);
  for (double l : gpu) CHECK(std::isfinite(l));
}

TEST_CASE("sample cuda: a DDIM-10 grid equals the CPU sampler's on the same checkpoint", "[cuda][sample]") {
  DIFFUSE_CUDA_TEST_GUARD();
  const std::string model = short_run_checkpoint();
  TempDir dir;
  std::vector<Image8> grids;
  for (const char* device : {"cpu", "cuda"}) {
    const std::string png = dir.file(std::string("grid-") + device + ".png");
    require_ok(run_cli({"sample", "--model", model, "--sampler", "ddim", "--steps", "10", "--n", "16", "--seed", "5",
                        "--out", png, "--device", device}),
               std::string("sample --device ") + device);
    REQUIRE(fs::exists(png));
    grids.push_back(read_image(png));
  }
  const Image8 &cpu = grids[0], &gpu = grids[1];
  REQUIRE(gpu.width == 4 * 34 + 2);
  REQUIRE(gpu.height == 4 * 34 + 2);
  REQUIRE(gpu.channels == cpu.channels);
  REQUIRE(gpu.pixels.size() == cpu.pixels.size());
  // Ten sampler steps of f32 rounding differences may move a pixel across one 8-bit level.
  int worst = 0;
  size_t differing = 0;
  for (size_t i = 0; i < cpu.pixels.size(); ++i) {
    const int d = std::abs(static_cast<int>(gpu.pixels[i]) - static_cast<int>(cpu.pixels[i]));
    worst = std::max(worst, d);
    differing += d != 0;
  }
  INFO(differing << " of " << cpu.pixels.size() << " pixels differ; the largest difference is " << worst);
  CHECK(worst <= 1);
}

TEST_CASE("forward cuda: the output and parameter grads of diffuse forward equal the CPU's", "[cuda][forward]") {
  DIFFUSE_CUDA_TEST_GUARD();
  const std::string model = short_run_checkpoint();
  TempDir dir;
  const std::string input = dir.file("in.safetensors");
  save_safetensors(input, {{"sample", Tensor::randn({2, 1, 32, 32}, 21)},
                           {"timestep", Tensor::from({3, 750}, {2}, DType::i64)},
                           {"weight", Tensor::randn({2, 1, 32, 32}, 22)}});
  for (const char* device : {"cpu", "cuda"})
    require_ok(run_cli({"forward", "--model", model, "--input", input, "--out",
                        dir.file(std::string("out-") + device + ".safetensors"), "--grad-out",
                        dir.file(std::string("grad-") + device + ".safetensors"), "--device", device}),
               std::string("forward --device ") + device);
  const SafetensorsFile out_cpu = SafetensorsFile::open(dir.file("out-cpu.safetensors"));
  const SafetensorsFile out_gpu = SafetensorsFile::open(dir.file("out-cuda.safetensors"));
  const double out_err = rel_to_peak_error(out_gpu.get("out"), out_cpu.get("out"));
  INFO("output error " << out_err);
  CHECK(out_err <= 1e-3);
  const SafetensorsFile g_cpu = SafetensorsFile::open(dir.file("grad-cpu.safetensors"));
  const SafetensorsFile g_gpu = SafetensorsFile::open(dir.file("grad-cuda.safetensors"));
  REQUIRE(g_gpu.names() == g_cpu.names());
  REQUIRE(g_cpu.size() > 0);
  for (const std::string& name : g_cpu.names()) {
    const double err = rel_to_peak_error(g_gpu.get(name), g_cpu.get(name));
    INFO("grad of " << name << ": error " << err);
    CHECK(err <= 1e-3);
  }
}
