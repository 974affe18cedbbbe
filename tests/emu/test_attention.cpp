// The `attention` family under the emulator: kernels/cuda/attention_{forward,backward}.cu against
// the CPU twin (out, dq, dk, dv) and against f64 loops here (the log-sum-exp and D = rowsum(dO∘O)
// the CPU twin does not produce), for head dims 32, 64, 128, lengths that are not multiples of
// any tile (partial query and key tiles, several of each), f32 and bf16. Every output and the
// scratch are NaN-poisoned before each launch, so an unwritten element fails. The thread order
// is the one CTest sets (DIFFUSE_EMU_ORDER = fwd, rev, shuffle: each test runs under all three).
#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "emu_test_helpers.h"
#include "kernels/attention.h"
#include "kernels/bf16.h"
#include "kernels/philox.h"
#include "support/bf16_vectors.h"

using namespace diffuse;
using kernels::AttentionDesc;
using test::from_bf16;
using test::to_bf16;

namespace {

AttentionDesc desc(int64_t n, int64_t len, int64_t heads, int64_t head_dim) {
  AttentionDesc d;
  d.n = n, d.len = len, d.heads = heads, d.head_dim = head_dim;
  return d;
}

std::vector<float> normals(size_t count, uint64_t seed) {
  std::vector<float> x(count);
  for (size_t i = 0; i < count; ++i) x[i] = philox::normal_at(seed, 0, 0, i);
  return x;
}

// max |got − want| / max |want| (a norm-wise relative error); NaN anywhere counts as infinite.
double rel_err(const std::vector<float>& got, const std::vector<float>& want) {
  double worst = 0, scale = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    double e = std::fabs(double(got[i]) - double(want[i]));
    if (std::isnan(e)) return INFINITY;
    worst = std::max(worst, e);
    scale = std::max(scale, std::fabs(double(want[i])));
  }
  return worst / std::max(scale, 1e-30);
}

const float kNaN = NAN;

// f64 references for what only the device kernels produce: per (n, head, row) the log-sum-exp of
// the scaled scores and D = dO·O, both in the [N, heads, L] layout.
std::vector<float> reference_lse(const AttentionDesc& d, const std::vector<float>& q, const std::vector<float>& k) {
  const int64_t L = d.len, W = d.width(), dh = d.head_dim;
  std::vector<float> lse(d.n * d.heads * L);
  for (int64_t n = 0; n < d.n; ++n)
    for (int64_t h = 0; h < d.heads; ++h)
      for (int64_t i = 0; i < L; ++i) {
        std::vector<double> s(L);
        double mx = -INFINITY, total = 0;
        for (int64_t j = 0; j < L; ++j) {
          double dot = 0;
          for (int64_t c = 0; c < dh; ++c)
            dot += double(q[(n * L + i) * W + h * dh + c]) * k[(n * L + j) * W + h * dh + c];
          mx = std::max(mx, s[j] = dot / std::sqrt(double(dh)));
        }
        for (double x : s) total += std::exp(x - mx);
        lse[(n * d.heads + h) * L + i] = static_cast<float>(mx + std::log(total));
      }
  return lse;
}

std::vector<float> reference_delta(const AttentionDesc& d, const std::vector<float>& out,
                                   const std::vector<float>& dout) {
  const int64_t L = d.len, W = d.width(), dh = d.head_dim;
  std::vector<float> delta(d.n * d.heads * L);
  for (int64_t n = 0; n < d.n; ++n)
    for (int64_t h = 0; h < d.heads; ++h)
      for (int64_t i = 0; i < L; ++i) {
        double dot = 0;
        for (int64_t c = 0; c < dh; ++c)
          dot += double(out[(n * L + i) * W + h * dh + c]) * dout[(n * L + i) * W + h * dh + c];
        delta[(n * d.heads + h) * L + i] = static_cast<float>(dot);
      }
  return delta;
}

struct Inputs {
  std::vector<float> q, k, v, dout;
};

Inputs make_inputs(const AttentionDesc& d, uint64_t seed) {
  const size_t count = static_cast<size_t>(d.n * d.len * d.width());
  return {normals(count, seed), normals(count, seed + 1), normals(count, seed + 2), normals(count, seed + 3)};
}

// The f32 kernels against the CPU twin, forward and backward.
void check_f32(const AttentionDesc& d) {
  INFO("N " << d.n << " L " << d.len << " heads " << d.heads << " d " << d.head_dim);
  const Inputs in = make_inputs(d, 17 + d.len + d.head_dim);
  const size_t count = in.q.size(), stats = static_cast<size_t>(d.n * d.heads * d.len);
  std::vector<float> out_ref(count), dq_ref(count), dk_ref(count), dv_ref(count);
  kernels::cpu::attention_forward<float>(d, in.q.data(), in.k.data(), in.v.data(), out_ref.data());
  kernels::cpu::attention_backward<float>(d, in.q.data(), in.k.data(), in.v.data(), out_ref.data(), in.dout.data(),
                                          dq_ref.data(), dk_ref.data(), dv_ref.data());
  const std::vector<float> lse_ref = reference_lse(d, in.q, in.k);
  const std::vector<float> delta_ref = reference_delta(d, out_ref, in.dout);

  std::vector<float> out(count, kNaN), lse(stats, kNaN);
  kernels::emu::attention_forward(d, in.q.data(), in.k.data(), in.v.data(), out.data(), lse.data(), nullptr);
  CHECK(rel_err(out, out_ref) < 1e-5);
  CHECK(rel_err(lse, lse_ref) < 1e-5);

  std::vector<float> delta(stats, kNaN), dq(count, kNaN), dk(count, kNaN), dv(count, kNaN);
  kernels::emu::attention_backward(d, in.q.data(), in.k.data(), in.v.data(), out.data(), in.dout.data(), lse.data(),
                                   delta.data(), dq.data(), dk.data(), dv.data(), nullptr);
  CHECK(rel_err(delta, delta_ref) < 1e-5);
  CHECK(rel_err(dq, dq_ref) < 2e-5);
  CHECK(rel_err(dk, dk_ref) < 2e-5);
  CHECK(rel_err(dv, dv_ref) < 2e-5);
}

}  // namespace

TEST_CASE("attention: flash forward and backward match the CPU twin in f32", "[emu][attention]") {
  check_f32(desc(2, 37, 2, 32));   // one partial tile of everything
  check_f32(desc(2, 70, 2, 32));   // two query and key tiles, the second partial
  check_f32(desc(2, 37, 2, 64));
  check_f32(desc(1, 70, 2, 64));
  check_f32(desc(2, 37, 2, 128));  // d = 128: key tiles of 32, so two of them
  check_f32(desc(1, 70, 1, 256));  // d = 256: query and key tiles of 32, three of each, the last partial
}

TEST_CASE("attention: a single key gives out = v, dv = dout and (nearly) zero dq, dk", "[emu][attention]") {
  const AttentionDesc d = desc(2, 1, 3, 32);
  const Inputs in = make_inputs(d, 3);
  const size_t count = in.q.size(), stats = static_cast<size_t>(d.n * d.heads);
  std::vector<float> out(count, kNaN), lse(stats, kNaN), delta(stats, kNaN);
  std::vector<float> dq(count, kNaN), dk(count, kNaN), dv(count, kNaN);
  kernels::emu::attention_forward(d, in.q.data(), in.k.data(), in.v.data(), out.data(), lse.data(), nullptr);
  kernels::emu::attention_backward(d, in.q.data(), in.k.data(), in.v.data(), out.data(), in.dout.data(), lse.data(),
                                   delta.data(), dq.data(), dk.data(), dv.data(), nullptr);
  CHECK(out == in.v);
  CHECK(dv == in.dout);
  CHECK(rel_err(lse, reference_lse(d, in.q, in.k)) < 1e-6);
  // dS = P (dP − D) with P = 1 and dP = D up to rounding: dq, dk are rounding noise around 0.
  CHECK(std::all_of(dq.begin(), dq.end(), [](float x) { return std::fabs(x) < 1e-5f; }));
  CHECK(std::all_of(dk.begin(), dk.end(), [](float x) { return std::fabs(x) < 1e-5f; }));
}

TEST_CASE("attention: bf16 inputs agree with the CPU on the same rounded inputs", "[emu][attention]") {
  for (int64_t dh : {32, 64, 256}) {
    const AttentionDesc d = desc(2, 37, 2, dh);
    INFO("d " << dh);
    const Inputs in = make_inputs(d, 99 + dh);
    const std::vector<uint16_t> q = to_bf16(in.q), k = to_bf16(in.k), v = to_bf16(in.v), dout = to_bf16(in.dout);
    const std::vector<float> qf = from_bf16(q), kf = from_bf16(k), vf = from_bf16(v), doutf = from_bf16(dout);
    const size_t count = q.size(), stats = static_cast<size_t>(d.n * d.heads * d.len);
    std::vector<float> out_ref(count), dq_ref(count), dk_ref(count), dv_ref(count);
    kernels::cpu::attention_forward<float>(d, qf.data(), kf.data(), vf.data(), out_ref.data());
    kernels::cpu::attention_backward<float>(d, qf.data(), kf.data(), vf.data(), out_ref.data(), doutf.data(),
                                            dq_ref.data(), dk_ref.data(), dv_ref.data());

    std::vector<uint16_t> out(count, kernels::float_to_bf16(kNaN));
    std::vector<float> lse(stats, kNaN);
    kernels::emu::attention_forward(d, q.data(), k.data(), v.data(), out.data(), lse.data(), nullptr);
    CHECK(rel_err(from_bf16(out), out_ref) < 1e-2);
    CHECK(rel_err(lse, reference_lse(d, qf, kf)) < 1e-5);  // f32 math on exact bf16 values

    const uint16_t poison = kernels::float_to_bf16(kNaN);
    std::vector<uint16_t> dq(count, poison), dk(count, poison), dv(count, poison);
    std::vector<float> delta(stats, kNaN);
    kernels::emu::attention_backward(d, q.data(), k.data(), v.data(), out.data(), dout.data(), lse.data(),
                                     delta.data(), dq.data(), dk.data(), dv.data(), nullptr);
    CHECK(rel_err(from_bf16(dq), dq_ref) < 1e-2);
    CHECK(rel_err(from_bf16(dk), dk_ref) < 1e-2);
    CHECK(rel_err(from_bf16(dv), dv_ref) < 1e-2);
  }
}

TEST_CASE("attention: backward computes only the grads asked for", "[emu][attention]") {
  const AttentionDesc d = desc(1, 37, 1, 32);
  const Inputs in = make_inputs(d, 5);
  const size_t count = in.q.size(), stats = static_cast<size_t>(d.len);
  std::vector<float> out(count), lse(stats), dq_ref(count), dk_ref(count), dv_ref(count);
  kernels::emu::attention_forward(d, in.q.data(), in.k.data(), in.v.data(), out.data(), lse.data(), nullptr);
  kernels::cpu::attention_backward<float>(d, in.q.data(), in.k.data(), in.v.data(), out.data(), in.dout.data(),
                                          dq_ref.data(), dk_ref.data(), dv_ref.data());
  std::vector<float> delta(stats, kNaN), dq(count, kNaN), dk(count, kNaN), dv(count, kNaN);
  kernels::emu::attention_backward(d, in.q.data(), in.k.data(), in.v.data(), out.data(), in.dout.data(), lse.data(),
                                   delta.data(), nullptr, dk.data(), nullptr, nullptr);
  CHECK(rel_err(dk, dk_ref) < 2e-5);
  CHECK(std::all_of(dq.begin(), dq.end(), [](float x) { return std::isnan(x); }));
  CHECK(std::all_of(dv.begin(), dv.end(), [](float x) { return std::isnan(x); }));
  std::fill(dk.begin(), dk.end(), kNaN);
  kernels::emu::attention_backward(d, in.q.data(), in.k.data(), in.v.data(), out.data(), in.dout.data(), lse.data(),
                                   delta.data(), dq.data(), nullptr, nullptr, nullptr);
  CHECK(rel_err(dq, dq_ref) < 2e-5);
  CHECK(std::all_of(dk.begin(), dk.end(), [](float x) { return std::isnan(x); }));
  // The forward without a log-sum-exp (no backward to come) writes the same output.
  std::vector<float> out2(count, kNaN);
  kernels::emu::attention_forward(d, in.q.data(), in.k.data(), in.v.data(), out2.data(), nullptr, nullptr);
  CHECK(out2 == out);
}

TEST_CASE("attention: the device launchers reject what the kernels do not support", "[emu][attention]") {
  std::vector<float> buf(4 * 64 * 48 + 8, 0.0f), lse(64, 0.0f);
  float* p = buf.data();
  auto fwd = [&](const AttentionDesc& d, float* x) {
    return test::error_of([&] { kernels::emu::attention_forward(d, x, x, x, x, lse.data(), nullptr); });
  };
  CHECK_THAT(fwd(desc(1, 4, 1, 48), p), Catch::Contains("head dims 32, 64, 128 and 256"));
  CHECK_THAT(fwd(desc(1, 4, 1, 32), p + 1), Catch::Contains("16-byte aligned"));
  CHECK_THAT(fwd(desc(70000, 1, 1, 32), p), Catch::Contains("grid limits"));
  CHECK(fwd(desc(0, 4, 1, 32), p).empty());  // nothing to do
  CHECK(fwd(desc(1, 0, 1, 32), p).empty());
}
