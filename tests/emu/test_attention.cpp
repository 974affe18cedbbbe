// The `attention` family under the emulator: kernels/cuda/attention_{forward,backward}.cu against
// the CPU twin (out, dq, dk, dv) and against f64 loops here (the log-sum-exp and D = rowsum(dO∘O)
// the CPU twin does not produce), for head dims 32, 64, 128, lengths that are not multiples of
// any tile (partial query and key tiles, several of each), f32 and bf16. Every output and the
// scratch are NaN-poisoned before each launch, so an unwritten element fails. The thread order
// is the one CTest sets (DIFFUSE_EMU_ORDER = fwd, rev, shuffle: each test runs under all three).
// Also the GEMM path's row kernels (attention_softmax.cu: softmax and softmax gradient, P and dS
// written in place over f32 scores) against f64 loops.
#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "emu_test_helpers.h"
#include "kernels/attention.h"
#include "kernels/compat.cuh"
#include "kernels/cuda/grid_helpers.cuh"
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

// ---- the GEMM path's row kernels (attention_softmax.cu) against f64 loops -----------------------

namespace {

// The storage-type view of a row written in place over f32 scores: element j of row r.
float in_place(const std::vector<float>& rows, int64_t len, int64_t r, int64_t j, bool bf16) {
  if (!bf16) return rows[static_cast<size_t>(r * len + j)];
  const auto* bits = reinterpret_cast<const uint16_t*>(rows.data() + r * len);
  return kernels::bf16_to_float(bits[j]);
}

}  // namespace

TEST_CASE("attention: the GEMM path's softmax writes P over the scores and the log-sum-exp", "[emu][attention]") {
  const int64_t rows = 20, len = 70;  // three 32-element steps a row, the last partial
  std::vector<float> s = normals(static_cast<size_t>(rows * len), 41);
  for (float& x : s) x *= 3.0f;
  for (int64_t j = 0; j < len; ++j) s[static_cast<size_t>(5 * len + j)] += 400.0f;  // exp overflows without the max
  for (bool bf16 : {false, true}) {
    INFO((bf16 ? "bf16 P" : "f32 P"));
    const kernels::emu::grid::ScopedBlockCap cap(2);  // 16 warps for 20 rows: the row loop runs twice
    std::vector<float> p = s, lse(rows, kNaN);
    kernels::emu::attention_softmax_rows(rows, len, bf16 ? kernels::DenseType::bf16 : kernels::DenseType::f32,
                                         p.data(), lse.data(), nullptr);
    std::vector<float> got, want, lse_want;
    for (int64_t r = 0; r < rows; ++r) {
      double mx = -INFINITY, total = 0;
      for (int64_t j = 0; j < len; ++j) mx = std::max(mx, double(s[static_cast<size_t>(r * len + j)]));
      for (int64_t j = 0; j < len; ++j) total += std::exp(double(s[static_cast<size_t>(r * len + j)]) - mx);
      lse_want.push_back(static_cast<float>(mx + std::log(total)));
      for (int64_t j = 0; j < len; ++j) {
        want.push_back(static_cast<float>(std::exp(double(s[static_cast<size_t>(r * len + j)]) - mx) / total));
        got.push_back(in_place(p, len, r, j, bf16));
      }
    }
    CHECK(rel_err(got, want) < (bf16 ? 4e-3 : 2e-6));  // bf16: one rounding, 2^-9 relative
    CHECK(rel_err(lse, lse_want) < 1e-6);
    // Without a log-sum-exp (no backward to come): the same P.
    std::vector<float> p2 = s;
    kernels::emu::attention_softmax_rows(rows, len, bf16 ? kernels::DenseType::bf16 : kernels::DenseType::f32,
                                         p2.data(), nullptr, nullptr);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < len; ++j) REQUIRE(in_place(p2, len, r, j, bf16) == in_place(p, len, r, j, bf16));
  }
}

TEST_CASE("attention: the GEMM path's softmax gradient writes P and dS over S and dP", "[emu][attention]") {
  // delta_r = Σ_j P_rj dP_rj is the kernel's own (f32); rows of 37: a full and a partial 32-lane step.
  const int64_t rows = 30, len = 37;
  const std::vector<float> s = normals(static_cast<size_t>(rows * len), 62), dp = normals(s.size(), 63);
  std::vector<float> lse(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    double total = 0;
    for (int64_t j = 0; j < len; ++j) total += std::exp(double(s[static_cast<size_t>(r * len + j)]));
    lse[static_cast<size_t>(r)] = static_cast<float>(std::log(total));
  }
  std::vector<float> p_want, ds_want;
  for (int64_t r = 0; r < rows; ++r) {
    double delta = 0;
    for (int64_t j = 0; j < len; ++j) {
      const size_t at = static_cast<size_t>(r * len + j);
      delta += std::exp(double(s[at]) - double(lse[static_cast<size_t>(r)])) * dp[at];
    }
    for (int64_t j = 0; j < len; ++j) {
      const size_t at = static_cast<size_t>(r * len + j);
      const double pj = std::exp(double(s[at]) - double(lse[static_cast<size_t>(r)]));
      p_want.push_back(static_cast<float>(pj));
      ds_want.push_back(static_cast<float>(pj * (double(dp[at]) - delta)));
    }
  }
  for (bool bf16 : {false, true}) {
    INFO((bf16 ? "bf16 P and dS" : "f32 P and dS"));
    const kernels::DenseType type = bf16 ? kernels::DenseType::bf16 : kernels::DenseType::f32;
    const kernels::emu::grid::ScopedBlockCap cap(3);  // 24 warps for 30 rows: the row loop runs twice
    std::vector<float> p = s, ds = dp;
    kernels::emu::attention_softmax_grad(rows, len, type, p.data(), ds.data(), lse.data(), nullptr);
    std::vector<float> p_got, ds_got;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < len; ++j) {
        p_got.push_back(in_place(p, len, r, j, bf16));
        ds_got.push_back(in_place(ds, len, r, j, bf16));
      }
    CHECK(rel_err(p_got, p_want) < (bf16 ? 4e-3 : 2e-6));
    CHECK(rel_err(ds_got, ds_want) < (bf16 ? 4e-3 : 2e-6));
    // Without dp (only dv wanted): the same P.
    std::vector<float> p2 = s;
    kernels::emu::attention_softmax_grad(rows, len, type, p2.data(), nullptr, lse.data(), nullptr);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < len; ++j) REQUIRE(in_place(p2, len, r, j, bf16) == in_place(p, len, r, j, bf16));
  }
}
