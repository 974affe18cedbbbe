// The `noise` family on a CUDA device (a GPU or the emulated one): kernels::cuda::q_sample on
// device buffers (aligned float4 and unaligned scalar paths, odd sizes) and engine q_sample on CUDA
// tensors, both against the CPU twin. Outputs are NaN-poisoned before the launch. Without a CUDA
// device every case says so and returns (the binary must pass on a machine without one).
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "engine/q_sample.h"
#include "engine/noise_schedule.h"
#include "kernels/noise.h"
#include "nn/device_context.h"
#include "nn/runtime.h"
#include "cuda_test_util.h"

using namespace diffuse;
using kernels::NoiseTarget;
using kernels::QSampleDesc;

using namespace diffuse::test;

namespace {


// The GPU's libm (logf, sinf, cosf in Box-Muller) and fused multiply-adds differ from the host's
// in the last bits; anything beyond a few ulps is a bug.
constexpr double kTol = 1e-5;

void check_kernel(int64_t batch, int64_t per_sample, NoiseTarget target, int shift) {
  const int64_t total = batch * per_sample;
  QSampleDesc d;
  d.batch = batch;
  d.per_sample = per_sample;
  d.seed = 0xfeedbeef1234ull;
  d.offset = 11;
  d.target = target;
  std::vector<float> x0(total), a(batch), s(batch);
  for (int64_t k = 0; k < total; ++k) x0[k] = static_cast<float>(1.5 * std::sin(0.37 * k));
  for (int64_t b = 0; b < batch; ++b) {
    const double alpha_bar = 0.9999 - 0.99 * static_cast<double>(b) / static_cast<double>(std::max<int64_t>(batch - 1, 1));
    a[b] = static_cast<float>(std::sqrt(alpha_bar));
    s[b] = static_cast<float>(std::sqrt(1 - alpha_bar));
  }
  std::vector<float> want_xt(total), want_target(total);
  kernels::cpu::q_sample(d, x0.data(), a.data(), s.data(), want_xt.data(), want_target.data());

  // `shift` floats into each buffer (shift 1 forces the scalar path); one guard float after it.
  DeviceBuffer dx0 = device_floats(total + 4), da = device_floats(batch), ds = device_floats(batch),
               dxt = device_floats(total + 4), dtg = device_floats(total + 4);
  upload(dx0.as<float>() + shift, x0);
  upload(da.as<float>(), a);
  upload(ds.as<float>(), s);
  dxt.poison();  // all-ones bytes: NaN
  dtg.poison();
  // The copies above ran on the legacy stream, which a non-blocking stream does not wait for.
  REQUIRE_CUDA_OK(cudaDeviceSynchronize());
  kernels::cuda::q_sample(d, dx0.as<float>() + shift, da.as<float>(), ds.as<float>(), dxt.as<float>() + shift,
                          dtg.as<float>() + shift, current_stream());
  synchronize_device();
  std::vector<float> xt = download<float>(dxt.as<float>() + shift, total + 1);
  std::vector<float> tg = download<float>(dtg.as<float>() + shift, total + 1);
  INFO("B=" << batch << " n=" << per_sample << " target=" << static_cast<int>(target) << " shift=" << shift);
  CHECK(std::isnan(xt[total]));  // one past the end stays untouched
  CHECK(std::isnan(tg[total]));
  xt.pop_back();
  tg.pop_back();
  CHECK(max_rel(xt, want_xt) < kTol);
  CHECK(max_rel(tg, want_target) < kTol);
}

}  // namespace

TEST_CASE("noise cuda: q_sample kernel matches the CPU twin", "[cuda][noise]") {
  if (!have_device()) return;
  for (NoiseTarget target : {NoiseTarget::epsilon, NoiseTarget::v_prediction, NoiseTarget::sample})
    for (int shift : {0, 1}) check_kernel(3, 1001, target, shift);
  // The last shape needs more than 4096 blocks of 256 quads: threads take the grid-stride loop.
  for (auto [batch, n] : {std::pair<int64_t, int64_t>{5, 5}, {2, 4}, {1, 1}, {7, 3}, {5, 1000003}})
    check_kernel(batch, n, NoiseTarget::v_prediction, 0);
}

TEST_CASE("noise cuda: engine q_sample on CUDA tensors matches the CPU", "[cuda][noise]") {
  if (!have_device()) return;
  NoiseSchedule schedule;
  const std::vector<QSampleCoef> coefs = schedule.q_sample_coefs({0, 999, 17, 500});
  std::vector<double> values(4 * 5 * 7 * 3);
  for (size_t k = 0; k < values.size(); ++k) values[k] = std::cos(0.11 * static_cast<double>(k));
  const Tensor x0 = Tensor::from(values, {4, 5, 7, 3});
  for (PredictionType p : {PredictionType::epsilon, PredictionType::v_prediction, PredictionType::sample}) {
    const QSampleResult cpu = q_sample(x0, coefs, p, 7, 123);
    const QSampleResult gpu = q_sample(x0.to(Device::cuda), coefs, p, 7, 123);
    REQUIRE(gpu.x_t.device() == Device::cuda);
    REQUIRE(gpu.target.device() == Device::cuda);
    const std::vector<double> cx = cpu.x_t.to_vector(), gx = gpu.x_t.to_vector();
    const std::vector<double> ct = cpu.target.to_vector(), gt = gpu.target.to_vector();
    INFO("prediction " << prediction_type_name(p));
    CHECK(max_rel(gx, cx) < kTol);
    CHECK(max_rel(gt, ct) < kTol);
  }
}
