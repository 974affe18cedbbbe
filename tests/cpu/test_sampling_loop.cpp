// The one sampling loop and what plugs into it: every SamplerKind has a unit in the sampler table;
// stopping the loop from on_step leaves exactly the x of the steps run, as Sampler::step gives it;
// the UNet denoise callback batches classifier-free guidance as [uncond; cond] rows that equal two
// separate forwards.
#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/sampler.h"
#include "engine/unet_denoiser.h"
#include "nn/autograd.h"
#include "nn/ops.h"

using namespace diffuse;

namespace {

void check_close(const std::vector<double>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(got[i] - want[i]));
  CHECK(worst <= 1e-5);  // values are O(1); the two orders differ by ~1e-6
}

}  // namespace

TEST_CASE("every sampler kind has exactly one unit in the sampler table", "[sampler]") {
  for (SamplerKind kind : {SamplerKind::ddpm, SamplerKind::ddim, SamplerKind::dpmpp_2m}) {
    INFO(sampler_kind_name(kind));
    int rows = 0;
    for (const SamplerUnit& u : sampler_units()) rows += u.kind == kind;
    CHECK(rows == 1);
    CHECK(sampler_unit(kind).kind == kind);
  }
  CHECK(sampler_units().size() == 3);
}

TEST_CASE("on_step returning false stops the loop after that step, with step()'s x", "[sampler]") {
  for (SamplerKind kind : {SamplerKind::ddpm, SamplerKind::ddim, SamplerKind::dpmpp_2m}) {
    INFO(sampler_kind_name(kind));
    SchedulerConfig c;
    c.kind = kind;
    c.eta = 1;  // DDIM draws noise too
    Sampler s(c, 6);
    auto model = [](const Tensor& x, int64_t t) { return ops::scale(x, 0.5 + 1e-4 * static_cast<double>(t)); };
    const Tensor x_T = Sampler::initial_noise({2, 3}, 5);
    const SampleOptions opt{.seed = 5, .guidance = std::nullopt};
    std::vector<int64_t> seen;
    Tensor stopped = s.sample(model, x_T, opt, [&](int64_t i, int64_t n, const Tensor&, const Tensor&) {
      CHECK(n == 6);
      seen.push_back(i);
      return i < 3;
    });
    CHECK(seen == std::vector<int64_t>{0, 1, 2, 3});
    Tensor x = x_T.clone(), x0;
    for (int64_t i = 0; i < 4; ++i) s.step(i, model(x, s.timesteps()[i]), x, x0, opt);
    CHECK(stopped.to_vector() == x.to_vector());
    CHECK(stopped.to_vector() != s.sample(model, x_T, opt).to_vector());  // the full loop goes on
  }
}

TEST_CASE("the UNet denoise callback: guided rows are the unconditional then the conditional forward", "[sampler]") {
  UNet2DConfig cfg = resolve_unet_config("tiny");
  cfg.sample_size = 8;
  cfg.num_class_embeds = 4;  // classes 0..2 and the null class 3
  UNet2D model(cfg, 1);
  NoGrad no_grad;
  const Tensor x = Tensor::randn({2, 8, 8, 1}, 9, 0, 0);
  const Tensor t = Tensor::full({1}, 321.0, DType::i64);
  const Tensor null_labels = Tensor::from({3.0, 3.0}, {2}, DType::i64);
  const Tensor cond_labels = Tensor::from({1.0, 2.0}, {2}, DType::i64);
  const Tensor guided_labels = Tensor::from({3.0, 3.0, 1.0, 2.0}, {4}, DType::i64);

  const Tensor both = unet_denoiser(model, guided_labels, true)(x, 321);
  REQUIRE(both.shape() == Shape{4, 8, 8, 1});
  std::vector<double> want = model.forward(x, t, null_labels).to_vector();
  const std::vector<double> cond = model.forward(x, t, cond_labels).to_vector();
  want.insert(want.end(), cond.begin(), cond.end());
  // Equal up to float32 summation order: a GEMM over 4 rows may block its sums unlike one over 2.
  check_close(both.to_vector(), want);
  check_close(unet_denoiser(model, cond_labels, false)(x, 321).to_vector(), cond);
}
