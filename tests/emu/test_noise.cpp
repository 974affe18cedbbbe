// The `noise` family under the emulator: kernels/cuda/noise.cu's q_sample against the CPU twin
// and against the docs/design.md §8 formulas evaluated here in f64 with ε from philox::normal_at, on
// odd sizes (quads straddling samples), aligned (float4) and unaligned buffers, every target and
// every thread order. Outputs are NaN-poisoned first, so an unwritten element fails.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <vector>

#include "emu/emu_test_helpers.h"
#include "emu/kernel_test_support.h"
#include "kernels/compat.cuh"
#include "kernels/cuda/grid_helpers.cuh"
#include "kernels/emulator/runtime.h"
#include "kernels/noise.h"
#include "kernels/philox.h"

using namespace diffuse;
using diffuse::test::Buf;
using diffuse::test::max_rel;
using kernels::NoiseTarget;
using kernels::QSampleDesc;

namespace {

void check_q_sample(int64_t batch, int64_t per_sample, NoiseTarget target, int shift) {
  const int64_t total = batch * per_sample;
  QSampleDesc d;
  d.batch = batch;
  d.per_sample = per_sample;
  d.seed = 0x1234abcd5678ull;
  d.offset = 5;
  d.target = target;
  Buf<float> x0(total, shift, 0.0f);
  for (int64_t k = 0; k < total; ++k) x0.p[k] = static_cast<float>(std::sin(0.37 * k) * 1.5);
  std::vector<float> sqrt_ab(batch), sqrt_1mab(batch);
  for (int64_t b = 0; b < batch; ++b) {  // ᾱ spread over (0, 1)
    double alpha_bar = 0.9999 - 0.99 * static_cast<double>(b) / static_cast<double>(std::max<int64_t>(batch - 1, 1));
    sqrt_ab[b] = static_cast<float>(std::sqrt(alpha_bar));
    sqrt_1mab[b] = static_cast<float>(std::sqrt(1.0 - alpha_bar));
  }

  // The formulas of docs/design.md §8 in f64 from the f32 inputs.
  std::vector<double> want_xt(total), want_target(total);
  for (int64_t k = 0; k < total; ++k) {
    double eps = philox::normal_at(d.seed, philox::kNoise, d.offset, static_cast<uint64_t>(k));
    double a = sqrt_ab[k / per_sample], s = sqrt_1mab[k / per_sample], x = x0.p[k];
    want_xt[k] = a * x + s * eps;
    want_target[k] = target == NoiseTarget::epsilon ? eps : target == NoiseTarget::v_prediction ? a * eps - s * x : x;
  }

  Buf<float> cpu_xt(total, shift, NAN), cpu_target(total, shift, NAN);
  kernels::cpu::q_sample(d, x0.p, sqrt_ab.data(), sqrt_1mab.data(), cpu_xt.p, cpu_target.p);
  CHECK(max_rel(cpu_xt.p, want_xt) < 1e-6);
  CHECK(max_rel(cpu_target.p, want_target) < 1e-6);

  // Block caps 1 and 2 make every thread stride several quads (the sample index stepped along the
  // stride); 0 leaves the default grid.
  for (auto order : diffuse::test::kAllOrders)
    for (int64_t cap : {0, 1, 2}) {
      emulator::ScopedThreadOrder scoped(order);
      kernels::emu::grid::ScopedBlockCap block_cap(cap);
      INFO("B=" << batch << " n=" << per_sample << " target=" << static_cast<int>(target) << " shift=" << shift
                << " cap=" << cap << " order=" << emulator::thread_order_name(order));
      Buf<float> xt(total, shift, NAN), tgt(total, shift, NAN);
      xt.storage.back() = 7.0f;  // sentinel past the end must survive
      kernels::emu::q_sample(d, x0.p, sqrt_ab.data(), sqrt_1mab.data(), xt.p, tgt.p, nullptr);
      CHECK(max_rel(xt.p, want_xt) < 1e-6);
      CHECK(max_rel(tgt.p, want_target) < 1e-6);
      std::vector<double> cpu_xt_d(cpu_xt.p, cpu_xt.p + total), cpu_target_d(cpu_target.p, cpu_target.p + total);
      CHECK(max_rel(xt.p, cpu_xt_d) < 1e-6);
      CHECK(max_rel(tgt.p, cpu_target_d) < 1e-6);
      CHECK(std::isnan(xt.p[total]));  // one past the end stays untouched
      CHECK(xt.storage.back() == 7.0f);
    }
}

}  // namespace

TEST_CASE("noise: q_sample under the emulator matches the CPU twin and the formulas", "[emu][noise]") {
  for (NoiseTarget target : {NoiseTarget::epsilon, NoiseTarget::v_prediction, NoiseTarget::sample})
    for (int shift : {0, 1}) check_q_sample(3, 1001, target, shift);
  // Sizes where quads straddle samples, end in a partial quad, or hold one element.
  // (40, 37): 370 quads, so under cap 1 a stride of 1024 elements steps 27 samples and 25 positions.
  for (auto [batch, n] : {std::pair<int64_t, int64_t>{5, 5}, {2, 4}, {1, 1}, {7, 3}, {40, 37}})
    check_q_sample(batch, n, NoiseTarget::v_prediction, 0);
}

TEST_CASE("noise: q_sample draws ε from the documented Philox stream and offset", "[emu][noise]") {
  QSampleDesc d;
  d.batch = 2;
  d.per_sample = 6;
  d.seed = 99;
  d.offset = 3;
  d.target = NoiseTarget::epsilon;
  std::vector<float> x0(12, 0.0f), a(2, 1.0f), s(2, 1.0f), xt(12, NAN), eps(12, NAN);
  kernels::emu::q_sample(d, x0.data(), a.data(), s.data(), xt.data(), eps.data(), nullptr);
  for (int k = 0; k < 12; ++k) {
    CHECK(eps[k] == philox::normal_at(99, philox::kNoise, 3, k));
    CHECK(eps[k] != philox::normal_at(99, philox::kNoise, 4, k));  // a different offset is new noise
    CHECK(xt[k] == eps[k]);
  }
}

TEST_CASE("noise: q_sample rejects bad descriptors and does nothing for empty input", "[emu][noise]") {
  QSampleDesc d;
  d.batch = -1;
  d.per_sample = 4;
  float buf[4] = {};
  CHECK_THROWS_AS(kernels::emu::q_sample(d, buf, buf, buf, buf, buf, nullptr), Error);
  CHECK_THROWS_AS(kernels::cpu::q_sample(d, buf, buf, buf, buf, buf), Error);
  d.batch = 1;
  CHECK_THROWS_AS(kernels::emu::q_sample(d, nullptr, buf, buf, buf, buf, nullptr), Error);
  d.batch = 0;
  kernels::emu::q_sample(d, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr);
  kernels::cpu::q_sample(d, nullptr, nullptr, nullptr, nullptr, nullptr);
}
