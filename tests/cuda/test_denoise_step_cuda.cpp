// The `denoise_step` family on a CUDA device (a GPU or the emulated one):
// kernels::cuda::denoise_step on device buffers against the CPU twin (every update kind, guidance,
// clipping, in place, unaligned, a grid-stride size), and Sampler::sample on CUDA tensors against
// the same loop on the CPU. Outputs are NaN-poisoned before the launch. Without a CUDA device every
// case says so and returns.
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "engine/sampler.h"
#include "kernels/denoise_step.h"
#include "nn/device_context.h"
#include "nn/runtime.h"
#include "cuda_test_util.h"

using namespace diffuse;
using kernels::DenoiseStepDesc;
using kernels::DenoiseUpdate;

using namespace diffuse::test;

namespace {


DenoiseStepDesc make_desc(DenoiseUpdate kind, int64_t numel, bool guided, bool clip) {
  DenoiseStepDesc d;
  d.numel = numel;
  d.update = static_cast<int32_t>(kind);
  d.guided = guided ? 1 : 0;
  d.guidance = guided ? 3.5 : 1.0;
  d.clip = clip ? 1 : 0;
  d.clip_range = 1.0;
  d.seed = 0x5eed0123abcdull;
  d.noise_offset = 17;
  d.x0_from_x = kind == DenoiseUpdate::ddpm || kind == DenoiseUpdate::ddim ? 1 / 0.6 : 0.6;
  d.x0_from_m = kind == DenoiseUpdate::ddpm || kind == DenoiseUpdate::ddim ? -0.8 / 0.6 : -0.8;
  d.eps_from_m = 1;
  d.c_x = kind == DenoiseUpdate::ddim ? 0 : 0.7;
  d.c_x0 = 0.3;
  d.c_eps = 0.5;
  d.c_d1 = -0.4;
  d.noise_std = kind == DenoiseUpdate::ddpm || kind == DenoiseUpdate::ddim ? 0.2 : 0;
  return d;
}

void check_kernel(DenoiseUpdate kind, int64_t n, bool guided, bool clip, bool in_place, int shift) {
  const DenoiseStepDesc d = make_desc(kind, n, guided, clip);
  std::vector<float> x(n), m(2 * n), x0_prev(n);
  for (int64_t i = 0; i < n; ++i) {
    x[i] = static_cast<float>(1.7 * std::sin(0.37 * static_cast<double>(i) + 0.1));
    x0_prev[i] = static_cast<float>(0.9 * std::cos(0.23 * static_cast<double>(i)));
  }
  for (int64_t i = 0; i < 2 * n; ++i) m[i] = static_cast<float>(1.1 * std::sin(0.61 * static_cast<double>(i) + 1.3));
  std::vector<float> want_prev(n), want_x0(n);
  kernels::cpu::denoise_step<float>(d, x.data(), m.data(), x0_prev.data(), want_prev.data(), want_x0.data());

  // `shift` floats into each buffer (shift 1 forces the scalar path), a NaN guard after the data.
  DeviceBuffer dx = device_floats(n + 4), dm = device_floats(2 * n + 4), dprev = device_floats(n + 4),
               dout = device_floats(n + 4), dx0 = device_floats(n + 4);
  for (const DeviceBuffer* b : {&dx, &dprev, &dout, &dx0}) b->poison();
  upload(dx.as<float>() + shift, x);
  upload(dm.as<float>() + shift, m);
  upload(dprev.as<float>() + shift, x0_prev);
  REQUIRE_CUDA_OK(cudaDeviceSynchronize());  // the legacy-stream copies before the non-blocking stream
  float* x_prev = in_place ? dx.as<float>() + shift : dout.as<float>() + shift;
  float* x0_out = in_place ? dprev.as<float>() + shift : dx0.as<float>() + shift;
  kernels::cuda::denoise_step(d, dx.as<float>() + shift, dm.as<float>() + shift, dprev.as<float>() + shift, x_prev,
                              x0_out, current_stream());
  synchronize_device();
  std::vector<float> got_prev = download<float>(x_prev, n + 1), got_x0 = download<float>(x0_out, n + 1);
  INFO("kind " << static_cast<int>(kind) << " n=" << n << " guided=" << guided << " clip=" << clip
               << " in_place=" << in_place << " shift=" << shift);
  CHECK(std::isnan(got_prev[n]));
  CHECK(std::isnan(got_x0[n]));
  got_prev.pop_back();
  got_x0.pop_back();
  // Device libm in Box-Muller and fused multiply-adds: a few ulps from the host.
  CHECK(max_rel(got_prev, want_prev) < 1e-5);
  CHECK(max_rel(got_x0, want_x0) < 1e-5);
}

// A fake model: a fixed function of x_t and t computed on the host, returned on x_t's device;
// guided, the conditional rows differ from the unconditional ones.
Sampler::ModelFn fake_model(bool guided) {
  return [guided](const Tensor& x, int64_t t) {
    const std::vector<double> xv = x.to_vector();
    const size_t n = xv.size();
    std::vector<double> out(guided ? 2 * n : n);
    for (size_t j = 0; j < n; ++j) {
      out[j] = 0.7 * xv[j] + 0.4 * std::sin(0.37 * static_cast<double>(j) + 0.002 * static_cast<double>(t));
      if (guided) out[n + j] = out[j] + 0.1 * std::cos(0.5 * static_cast<double>(j));
    }
    Shape shape = x.shape();
    if (guided) shape[0] *= 2;
    return Tensor::from(out, shape).to(x.device());
  };
}

}  // namespace

TEST_CASE("denoise_step cuda: kernel matches the CPU twin", "[cuda][denoise_step]") {
  if (!have_device()) return;
  for (DenoiseUpdate kind : {DenoiseUpdate::ddpm, DenoiseUpdate::ddim, DenoiseUpdate::dpm_first,
                             DenoiseUpdate::dpm_second})
    for (bool guided : {false, true})
      for (bool clip : {false, true})
        for (bool in_place : {false, true})
          for (int shift : {0, 1}) check_kernel(kind, 1001, guided, clip, in_place, shift);
  // More than 4096 blocks of 256 quads: the grid-stride loop; 4M + 4: guided on the float4 path.
  check_kernel(DenoiseUpdate::ddpm, 5000011, true, true, false, 0);
  check_kernel(DenoiseUpdate::dpm_second, 4194308, true, false, true, 0);
  check_kernel(DenoiseUpdate::ddim, 7, true, true, false, 0);
}

TEST_CASE("denoise_step cuda: Sampler::sample on CUDA tensors matches the CPU loop", "[cuda][denoise_step]") {
  if (!have_device()) return;
  for (SamplerKind kind : {SamplerKind::ddpm, SamplerKind::ddim, SamplerKind::dpmpp_2m})
    for (bool guided : {false, true}) {
      SchedulerConfig config;
      config.kind = kind;
      config.eta = kind == SamplerKind::ddim ? 0.5 : 0.0;
      const Sampler sampler(config, 10);
      SampleOptions opt;
      opt.seed = 1234;
      if (guided) opt.guidance = 2.5;
      const Tensor x_T = Sampler::initial_noise({3, 5, 7, 3}, opt.seed);
      const std::vector<double> cpu = sampler.sample(fake_model(guided), x_T, opt).to_vector();
      const Tensor gpu = sampler.sample(fake_model(guided), x_T.to(Device::cuda), opt);
      REQUIRE(gpu.device() == Device::cuda);
      INFO("sampler " << sampler_kind_name(kind) << " guided=" << guided);
      // Ten steps of few-ulp differences (noise, fused multiply-adds), no NaN.
      CHECK(max_rel(gpu.to_vector(), cpu) < 1e-4);
    }
}
