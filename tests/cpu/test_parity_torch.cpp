// Parity with PyTorch (docs/design.md §11): benchmarks/reference/unet.py builds the same UNet in plain
// PyTorch from the same config.json and safetensors; `diffuse forward` and the reference run on
// identical random weights and inputs. Error measure: max|ours − ref| / max|ref| (a relative error
// that does not explode where outputs cross zero), required ≤ 1e-4 in f32.
#include <catch2/catch.hpp>
#include <cmath>

#include "engine/model_dir.h"
#include "nn/safetensors.h"
#include "nn/unet2d.h"
#include "support/process.h"
#include "support/temp_dir.h"

using namespace diffuse;
using namespace diffuse::test;

namespace {

double normalized_error(const Tensor& ours, const Tensor& ref) {
  REQUIRE(ours.shape() == ref.shape());
  auto a = ours.to_vector(), b = ref.to_vector();
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) return INFINITY;
    num = std::max(num, std::fabs(a[i] - b[i]));
    den = std::max(den, std::fabs(b[i]));
  }
  return den > 0 ? num / den : num;
}

struct ParityRun {
  TempDir dir;
  std::string model, input;
};

// A model directory with random weights (perturbed norms and zero-initialised-in-practice parts
// too, so every parameter matters) and an input file for batch `batch`.
void prepare(ParityRun& r, const std::string& config, int64_t batch, bool with_weight) {
  UNet2DConfig cfg = resolve_unet_config(config);
  UNet2D m(cfg, 11);
  for (auto& [name, t] : m.named_parameters()) {
    if (name.find("norm") != std::string::npos) *t = Tensor::randn(t->shape(), 99, 0, static_cast<uint64_t>(t->numel()));
  }
  r.model = r.dir.file("model");
  save_model_dir(r.model, m, "");
  std::vector<std::pair<std::string, Tensor>> in;
  const int64_t S = cfg.sample_size, C = cfg.in_channels;
  in.emplace_back("sample", Tensor::randn({batch, C, S, S}, 5));
  std::vector<double> ts;
  for (int64_t i = 0; i < batch; ++i) ts.push_back(static_cast<double>((137 * i + 11) % 1000));
  in.emplace_back("timestep", Tensor::from(ts, {batch}, DType::i64));
  if (with_weight) in.emplace_back("weight", Tensor::randn({batch, cfg.out_channels, S, S}, 6));
  r.input = r.dir.file("in.safetensors");
  save_safetensors(r.input, in);
}

RunResult reference(const std::vector<std::string>& args) {
  std::vector<std::string> argv{"/usr/bin/python3", source_path("benchmarks/reference/forward.py")};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv);
}

}  // namespace

TEST_CASE("diffuse forward matches the PyTorch reference UNet on all named configs", "[parity][torch]") {
  if (!python_has_torch()) {
    WARN("skipped: /usr/bin/python3 cannot import torch (scripts/setup.sh installs python3-torch)");
    return;
  }
  for (const char* config : {"tiny", "fmnist-small", "ddpm-cifar10"}) {
    INFO("config " << config);
    ParityRun r;
    prepare(r, config, 2, false);
    auto ours = run_cli({"forward", "--model", r.model, "--input", r.input, "--out", r.dir.file("ours.safetensors")});
    INFO(ours.output);
    REQUIRE(ours.exit_code == 0);
    auto ref = reference({"--model", r.model, "--input", r.input, "--out", r.dir.file("ref.safetensors")});
    INFO(ref.output);
    REQUIRE(ref.exit_code == 0);
    double err = normalized_error(SafetensorsFile::open(r.dir.file("ours.safetensors")).get("out"),
                                  SafetensorsFile::open(r.dir.file("ref.safetensors")).get("out"));
    CHECK(err <= 1e-4);
  }
}

TEST_CASE("gradients of every tiny-UNet parameter match PyTorch", "[parity][torch]") {
  if (!python_has_torch()) {
    WARN("skipped: /usr/bin/python3 cannot import torch");
    return;
  }
  ParityRun r;
  prepare(r, "tiny", 2, true);
  auto ours = run_cli({"forward", "--model", r.model, "--input", r.input, "--out", r.dir.file("ours.safetensors"),
                       "--grad-out", r.dir.file("ours_grad.safetensors")});
  INFO(ours.output);
  REQUIRE(ours.exit_code == 0);
  auto ref = reference({"--model", r.model, "--input", r.input, "--out", r.dir.file("ref.safetensors"), "--grad-out",
                        r.dir.file("ref_grad.safetensors")});
  INFO(ref.output);
  REQUIRE(ref.exit_code == 0);
  SafetensorsFile a = SafetensorsFile::open(r.dir.file("ours_grad.safetensors"));
  SafetensorsFile b = SafetensorsFile::open(r.dir.file("ref_grad.safetensors"));
  REQUIRE(a.names() == b.names());
  REQUIRE(a.size() > 100);
  // to_k.bias gets a gradient that is zero in exact arithmetic (softmax ignores a per-query
  // constant), so both sides hold rounding noise there: every tensor's error is measured against
  // max(its own largest reference gradient, 1e-3 x the largest over all parameters).
  double global = 0;
  for (const auto& name : a.names())
    for (double v : b.get(name).to_vector()) global = std::max(global, std::fabs(v));
  for (const auto& name : a.names()) {
    INFO("parameter " << name);
    auto va = a.get(name).to_vector(), vb = b.get(name).to_vector();
    double num = 0, den = 1e-3 * global;
    for (size_t i = 0; i < va.size(); ++i) {
      num = std::max(num, std::isnan(va[i]) ? INFINITY : std::fabs(va[i] - vb[i]));
      den = std::max(den, std::fabs(vb[i]));
    }
    CHECK(num / den <= 1e-4);
  }
}
