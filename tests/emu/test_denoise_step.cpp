// The `denoise_step` family under the emulator: kernels/cuda/denoise_step.cu against the CPU twin
// (kernels/cpu/denoise_step.cpp) and against the update formulas evaluated here in f64, for every
// update kind, with and without guidance and clipping, in place and out of place, on odd sizes
// (partial Philox quads), aligned (float4) and unaligned buffers, in every thread order.
// Out-of-place outputs are NaN-poisoned first, so an unwritten element fails.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "emu/emu_test_helpers.h"
#include "emu/kernel_test_support.h"
#include "kernels/denoise_step.h"
#include "kernels/emulator/runtime.h"
#include "kernels/philox.h"

using namespace diffuse;
using diffuse::test::Buf;
using diffuse::test::max_rel;
using kernels::DenoiseStepDesc;
using kernels::DenoiseUpdate;

namespace {

const char* kind_name(DenoiseUpdate u) {
  switch (u) {
    case DenoiseUpdate::ddpm: return "ddpm";
    case DenoiseUpdate::ddim: return "ddim";
    case DenoiseUpdate::dpm_first: return "dpm_first";
    case DenoiseUpdate::dpm_second: return "dpm_second";
  }
  return "?";
}


// Plausible coefficients for each update kind (the sampler's exact ones are tested in tests/cpu).
// ε-prediction at √ᾱ = 0.6, √(1−ᾱ) = 0.8 for DDPM/DDIM, v-prediction for DPM-Solver++.
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
  d.stream = philox::kSampler;
  switch (kind) {
    case DenoiseUpdate::ddpm:
      d.x0_from_x = 1 / 0.6, d.x0_from_m = -0.8 / 0.6;
      d.c_x0 = 0.3, d.c_x = 0.7, d.noise_std = 0.2;
      break;
    case DenoiseUpdate::ddim:  // η > 0: noise as well as ε̂
      d.x0_from_x = 1 / 0.6, d.x0_from_m = -0.8 / 0.6;
      d.eps_from_x = 0, d.eps_from_m = 1;
      d.c_x0 = 0.8, d.c_eps = 0.5, d.noise_std = 0.15;
      break;
    case DenoiseUpdate::dpm_first:
      d.x0_from_x = 0.6, d.x0_from_m = -0.8;
      d.c_x = 0.9, d.c_x0 = 0.3;
      break;
    case DenoiseUpdate::dpm_second:
      d.x0_from_x = 0.6, d.x0_from_m = -0.8;
      d.c_x = 0.9, d.c_x0 = 0.3, d.c_d1 = -0.4;
      break;
  }
  return d;
}

// The update of DenoiseStepDesc's comments in f64 from the f32 inputs, z from philox::normal_at.
void reference(const DenoiseStepDesc& d, const float* x, const float* m_out, const float* x0_prev,
               std::vector<double>& x_prev, std::vector<double>& x0) {
  const int64_t n = d.numel;
  x_prev.assign(n, 0);
  x0.assign(n, 0);
  for (int64_t i = 0; i < n; ++i) {
    const double m = d.guided ? m_out[i] + d.guidance * (static_cast<double>(m_out[n + i]) - m_out[i]) : m_out[i];
    double x0v = d.x0_from_x * x[i] + d.x0_from_m * m;
    if (d.clip) x0v = std::fmax(-d.clip_range, std::fmin(d.clip_range, x0v));
    double out = d.c_x * x[i] + d.c_x0 * x0v;
    if (d.update == static_cast<int32_t>(DenoiseUpdate::ddim)) out += d.c_eps * (d.eps_from_x * x[i] + d.eps_from_m * m);
    if (d.update == static_cast<int32_t>(DenoiseUpdate::dpm_second)) out += d.c_d1 * (x0v - x0_prev[i]);
    if (d.noise_std != 0) out += d.noise_std * philox::normal_at(d.seed, d.stream, d.noise_offset, i);
    x_prev[i] = out;
    x0[i] = x0v;
  }
}


std::vector<double> widen(const float* p, int64_t n) { return std::vector<double>(p, p + n); }

// The inputs of one step: x_t, the model output (2·numel when guided) and the previous x0.
struct Inputs {
  Buf<float> x, m, x0_prev;
  Inputs(int64_t n, int shift)
      : x(n, shift, 7.0f), m(2 * n, shift, 7.0f), x0_prev(n, shift, 7.0f) {
    for (int64_t i = 0; i < n; ++i) {
      x.p[i] = static_cast<float>(1.7 * std::sin(0.37 * i + 0.1));
      x0_prev.p[i] = static_cast<float>(0.9 * std::cos(0.23 * i));
    }
    for (int64_t i = 0; i < 2 * n; ++i) m.p[i] = static_cast<float>(1.1 * std::sin(0.61 * i + 1.3));
  }
};

// One configuration: the CPU twin, then the emulated kernel in every order, both against the f64
// formulas and the kernel against the CPU (same per-element code: well under 1e-6 apart).
void check_step(DenoiseUpdate kind, int64_t n, bool guided, bool clip, bool in_place, int shift) {
  const DenoiseStepDesc d = make_desc(kind, n, guided, clip);
  const Inputs in(n, shift);
  std::vector<double> want_prev, want_x0;
  reference(d, in.x.p, in.m.p, in.x0_prev.p, want_prev, want_x0);
  if (clip && n >= 1000) {  // the inputs and coefficients above put elements on both sides of the range
    int64_t clipped = 0;
    for (double v : want_x0) clipped += std::fabs(v) == 1.0;
    REQUIRE(clipped > 0);
    REQUIRE(clipped < n);
  }

  // The CPU twin out of place (the reference the kernel must match).
  Buf<float> cpu_prev(n, shift, NAN), cpu_x0(n, shift, NAN);
  kernels::cpu::denoise_step<float>(d, in.x.p, in.m.p, in.x0_prev.p, cpu_prev.p, cpu_x0.p);
  REQUIRE(max_rel(cpu_prev.p, want_prev) < 1e-5);
  REQUIRE(max_rel(cpu_x0.p, want_x0) < 1e-5);
  const std::vector<double> cpu_prev_d = widen(cpu_prev.p, n), cpu_x0_d = widen(cpu_x0.p, n);

  for (auto order : diffuse::test::kAllOrders) {
    emulator::ScopedThreadOrder scoped(order);
    INFO(kind_name(kind) << " n=" << n << " guided=" << guided << " clip=" << clip << " in_place=" << in_place
                         << " shift=" << shift << " order=" << emulator::thread_order_name(order));
    Inputs io(n, shift);  // fresh copies: in place overwrites them
    Buf<float> out_prev(n, shift, NAN), out_x0(n, shift, NAN);
    float* x_prev = in_place ? io.x.p : out_prev.p;
    float* x0_out = in_place ? io.x0_prev.p : out_x0.p;
    // Out of place, a first-order DPM step gets no x0_prev at all (it must not read one).
    const float* x0_prev = !in_place && kind == DenoiseUpdate::dpm_first ? nullptr : io.x0_prev.p;
    kernels::emu::denoise_step(d, io.x.p, io.m.p, x0_prev, x_prev, x0_out, nullptr);
    CHECK(max_rel(x_prev, cpu_prev_d) <= 1e-6);
    CHECK(max_rel(x0_out, cpu_x0_d) <= 1e-6);
    CHECK(max_rel(x_prev, want_prev) < 1e-5);
    CHECK(max_rel(x0_out, want_x0) < 1e-5);
    // Nothing past the end is written: the guards keep their fill (NaN or 7).
    const float guard = in_place ? 7.0f : NAN;
    for (float* p : {x_prev, x0_out})
      for (int k = 0; k < 8; ++k)
        CHECK((std::isnan(guard) ? std::isnan(p[n + k]) : p[n + k] == guard));
    // The inputs that are not outputs are left alone.
    for (int64_t i = 0; i < 2 * n; ++i)
      if (io.m.p[i] != in.m.p[i]) FAIL("model output changed at " << i);
    if (!in_place)
      for (int64_t i = 0; i < n; ++i)
        if (io.x.p[i] != in.x.p[i] || io.x0_prev.p[i] != in.x0_prev.p[i]) FAIL("an input changed at " << i);
  }
}

constexpr DenoiseUpdate kKinds[] = {DenoiseUpdate::ddpm, DenoiseUpdate::ddim, DenoiseUpdate::dpm_first,
                                    DenoiseUpdate::dpm_second};

}  // namespace

TEST_CASE("denoise_step: every update kind, guided or not, clipped or not, in place or not, odd sizes",
          "[emu][denoise_step]") {
  for (DenoiseUpdate kind : kKinds)
    for (int64_t n : {1001, 7})
      for (bool guided : {false, true})
        for (bool clip : {false, true})
          for (bool in_place : {false, true})
            for (int shift : {0, 1}) check_step(kind, n, guided, clip, in_place, shift);
}

TEST_CASE("denoise_step: float4 path with guidance, partial last quad, grid-stride loop", "[emu][denoise_step]") {
  // 1004: the conditional half of a guided output is 16-byte aligned, so guidance runs the float4
  // path; 4099 needs more blocks than the emulator's cap, so threads take several quads.
  for (DenoiseUpdate kind : kKinds)
    for (int64_t n : {1004, 4099}) {
      check_step(kind, n, true, kind == DenoiseUpdate::ddim, false, 0);
      check_step(kind, n, false, false, true, 0);
    }
  for (int64_t n : {1, 2, 3, 4, 5}) check_step(DenoiseUpdate::ddpm, n, true, true, false, 0);
}

TEST_CASE("denoise_step: noise is philox::normal_at of the sampler stream and offset", "[emu][denoise_step]") {
  // All coefficients zero but the noise: x_prev is noise_std · z exactly.
  DenoiseStepDesc d;
  d.numel = 13;
  d.update = static_cast<int32_t>(DenoiseUpdate::ddpm);
  d.noise_std = 1;
  d.seed = 42;
  d.noise_offset = 9;
  d.stream = philox::kSampler;
  std::vector<float> zeros(13, 0.0f), x_prev(13, NAN), x0(13, NAN);
  kernels::emu::denoise_step(d, zeros.data(), zeros.data(), nullptr, x_prev.data(), x0.data(), nullptr);
  for (int i = 0; i < 13; ++i) {
    CHECK(x_prev[i] == philox::normal_at(42, philox::kSampler, 9, i));
    CHECK(x_prev[i] != philox::normal_at(42, philox::kSampler, 10, i));  // another offset is new noise
    CHECK(x0[i] == 0.0f);
  }
  // Without noise the seed does not matter.
  d.noise_std = 0;
  d.c_x = 0.5;
  std::vector<float> ones(13, 1.0f), a(13, NAN), b(13, NAN);
  kernels::emu::denoise_step(d, ones.data(), zeros.data(), nullptr, a.data(), x0.data(), nullptr);
  d.seed = 43;
  kernels::emu::denoise_step(d, ones.data(), zeros.data(), nullptr, b.data(), x0.data(), nullptr);
  CHECK(a == b);
  CHECK(a[12] == 0.5f);
}

TEST_CASE("denoise_step: the launcher rejects what the CPU twin rejects", "[emu][denoise_step]") {
  float buf[8] = {};
  DenoiseStepDesc d = make_desc(DenoiseUpdate::ddpm, 4, false, false);
  auto emu_message = [&](const DenoiseStepDesc& desc, const float* x0_prev, float* out) {
    try {
      kernels::emu::denoise_step(desc, buf, buf, x0_prev, out, out, nullptr);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  DenoiseStepDesc bad = d;
  bad.update = 4;
  CHECK(emu_message(bad, buf, buf).find("unknown update kind 4") != std::string::npos);
  bad = d;
  bad.numel = -1;
  CHECK(emu_message(bad, buf, buf).find("negative element count") != std::string::npos);
  bad = make_desc(DenoiseUpdate::dpm_second, 4, false, false);
  CHECK(emu_message(bad, nullptr, buf).find("needs the previous x0") != std::string::npos);
  CHECK_THROWS_AS(kernels::cpu::denoise_step<float>(bad, buf, buf, nullptr, buf, buf), Error);
  CHECK(emu_message(d, buf, nullptr).find("null buffer") != std::string::npos);
  // An empty batch launches nothing and touches no buffer.
  d.numel = 0;
  kernels::emu::denoise_step(d, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr);
}
