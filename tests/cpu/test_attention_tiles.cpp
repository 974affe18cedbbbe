// The CPU attention's tiling (kernels/cpu/attention.cpp) on every instruction-set path this
// machine runs: sequences long enough to span several tiles of query rows, a single (n, head)
// pair (its tiles split into groups whose dk, dv partials are added after the region) and
// several pairs (each pair's tiles summed in turn), at 1, 2 and 3 threads with the same bits, and
// short sequences whose backward
// runs one transposed tile per pair, each grad wanted alone; against a naive f64 attention written
// out here. Also the row and column kernels (kernels/cpu/simd/softmax.h) on lengths around every
// vector width, rows padded to a larger stride.
#include <catch2/catch.hpp>

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "support/cpu_isa_guard.h"
#include "kernels/attention.h"
#include "kernels/cpu/simd/softmax.h"
#include "kernels/cpu_isa.h"

namespace diffuse {
namespace {

using kernels::AttentionDesc;
using kernels::cpu::CpuIsa;

struct ThreadsGuard {
  int saved = omp_get_max_threads();
  ~ThreadsGuard() { omp_set_num_threads(saved); }
};

std::vector<float> normals(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Naive attention in f64: out, and the grads of sum(out ∘ dout).
struct Reference {
  std::vector<double> out, dq, dk, dv;
};

Reference naive(const AttentionDesc& d, const std::vector<float>& q, const std::vector<float>& k,
                const std::vector<float>& v, const std::vector<float>& dout) {
  const int64_t L = d.len, dh = d.head_dim, W = d.width();
  const double scale = 1.0 / std::sqrt(double(dh));
  Reference r;
  for (auto* x : {&r.out, &r.dq, &r.dk, &r.dv}) x->assign(q.size(), 0.0);
  std::vector<double> p(size_t(L * L)), ds(size_t(L * L));
  for (int64_t n = 0; n < d.n; ++n)
    for (int64_t h = 0; h < d.heads; ++h) {
      auto at = [&](int64_t row, int64_t c) { return size_t(n * L * W + row * W + h * dh + c); };
      for (int64_t i = 0; i < L; ++i) {
        double mx = -INFINITY, total = 0;
        for (int64_t j = 0; j < L; ++j) {
          double s = 0;
          for (int64_t c = 0; c < dh; ++c) s += double(q[at(i, c)]) * double(k[at(j, c)]);
          p[i * L + j] = s * scale;
          mx = std::max(mx, s * scale);
        }
        for (int64_t j = 0; j < L; ++j) total += p[i * L + j] = std::exp(p[i * L + j] - mx);
        for (int64_t j = 0; j < L; ++j) p[i * L + j] /= total;
        for (int64_t c = 0; c < dh; ++c)
          for (int64_t j = 0; j < L; ++j) r.out[at(i, c)] += p[i * L + j] * double(v[at(j, c)]);
      }
      for (int64_t i = 0; i < L; ++i) {
        double delta = 0;
        for (int64_t c = 0; c < dh; ++c) delta += double(dout[at(i, c)]) * r.out[at(i, c)];
        for (int64_t j = 0; j < L; ++j) {
          double dp = 0;
          for (int64_t c = 0; c < dh; ++c) dp += double(dout[at(i, c)]) * double(v[at(j, c)]);
          ds[i * L + j] = p[i * L + j] * (dp - delta);
        }
      }
      for (int64_t i = 0; i < L; ++i)
        for (int64_t j = 0; j < L; ++j)
          for (int64_t c = 0; c < dh; ++c) {
            r.dv[at(j, c)] += p[i * L + j] * double(dout[at(i, c)]);
            r.dq[at(i, c)] += ds[i * L + j] * double(k[at(j, c)]) * scale;
            r.dk[at(j, c)] += ds[i * L + j] * double(q[at(i, c)]) * scale;
          }
    }
  return r;
}

// Largest |got − want| over the largest |want|.
double relative_error(const std::vector<float>& got, const std::vector<double>& want) {
  double err = 0, peak = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    err = std::max(err, std::abs(double(got[i]) - want[i]));
    peak = std::max(peak, std::abs(want[i]));
  }
  return err / peak;
}

void check_attention(const AttentionDesc& d) {
  const size_t size = size_t(d.n * d.len * d.width());
  const auto q = normals(size, 1), k = normals(size, 2), v = normals(size, 3), dout = normals(size, 4);
  const Reference want = naive(d, q, k, v, dout);
  std::vector<float> out(size);
  kernels::cpu::attention_forward<float>(d, q.data(), k.data(), v.data(), out.data());
  CHECK(relative_error(out, want.out) < 1e-5);
  // All three grads at once, then each alone (the others null).
  for (int wanted = 0; wanted < 4; ++wanted) {
    CAPTURE(wanted);
    std::vector<float> dq(size, NAN), dk(size, NAN), dv(size, NAN);
    kernels::cpu::attention_backward<float>(d, q.data(), k.data(), v.data(), out.data(), dout.data(),
                                            wanted == 0 || wanted == 1 ? dq.data() : nullptr,
                                            wanted == 0 || wanted == 2 ? dk.data() : nullptr,
                                            wanted == 0 || wanted == 3 ? dv.data() : nullptr);
    if (wanted == 0 || wanted == 1) CHECK(relative_error(dq, want.dq) < 1e-5);
    if (wanted == 0 || wanted == 2) CHECK(relative_error(dk, want.dk) < 1e-5);
    if (wanted == 0 || wanted == 3) CHECK(relative_error(dv, want.dv) < 1e-5);
  }
  // The same bits at 1, 2 and 3 threads (a lone pair's groups of tiles, and the order their
  // partials are added in, depend on the shape only).
  std::vector<float> bits[3][4];
  for (int threads = 1; threads <= 3; ++threads) {
    const ThreadsGuard restore;
    omp_set_num_threads(threads);
    auto& [o, dq, dk, dv] = bits[threads - 1];
    for (auto* b : {&o, &dq, &dk, &dv}) b->assign(size, 0.0f);
    kernels::cpu::attention_forward<float>(d, q.data(), k.data(), v.data(), o.data());
    kernels::cpu::attention_backward<float>(d, q.data(), k.data(), v.data(), o.data(), dout.data(), dq.data(),
                                            dk.data(), dv.data());
  }
  for (int t = 1; t < 3; ++t) {
    CAPTURE(t + 1);
    for (int g = 0; g < 4; ++g) CHECK(bits[t][g] == bits[0][g]);
  }
  // q, k and v packed side by side in one qkv [N, L, 3W] (AttentionDesc::packed), the grads in one
  // tensor of that shape: the same GEMMs with a row stride of 3W, so the same bits.
  AttentionDesc pd = d;
  pd.packed = true;
  const int64_t rows = d.n * d.len, W = d.width();
  std::vector<float> qkv(3 * size), gqkv(3 * size, NAN), o(size);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < W; ++c) {
      qkv[size_t(r * 3 * W + c)] = q[size_t(r * W + c)];
      qkv[size_t(r * 3 * W + W + c)] = k[size_t(r * W + c)];
      qkv[size_t(r * 3 * W + 2 * W + c)] = v[size_t(r * W + c)];
    }
  kernels::cpu::attention_forward<float>(pd, qkv.data(), qkv.data() + W, qkv.data() + 2 * W, o.data());
  CHECK(o == bits[0][0]);
  kernels::cpu::attention_backward<float>(pd, qkv.data(), qkv.data() + W, qkv.data() + 2 * W, o.data(), dout.data(),
                                          gqkv.data(), gqkv.data() + W, gqkv.data() + 2 * W);
  for (int64_t r = 0; r < rows; ++r)
    for (int which = 0; which < 3; ++which)
      for (int64_t c = 0; c < W; ++c)
        REQUIRE(gqkv[size_t(r * 3 * W + which * W + c)] == bits[0][1 + which][size_t(r * W + c)]);
}

// One element of a row or column kernel's softmax (p against the f64 want_p) and of its softmax
// backward ds = p · (b − dot), from the kernel's own p and dot: only its arithmetic is under test.
void check_softmax_element(float p, double want_p, float ds, float b, float dot) {
  CHECK(std::abs(p - want_p) <= 1e-6 * std::max(want_p, 1e-30) + 1e-30);
  const double want_ds = double(p) * (double(b) - double(dot));
  const double magnitude = std::abs(p) * (std::abs(b) + std::abs(dot));
  CHECK(std::abs(ds - want_ds) <= 1e-6 * magnitude + 1e-30);
}

}  // namespace

TEST_CASE("CPU attention over several tiles of query rows matches a naive f64 attention on every path",
          "[attention]") {
  test::CpuIsaGuard isa_guard;
  ThreadsGuard threads_guard;
  omp_set_num_threads(2);  // check_attention also runs 1 and 3
  for (CpuIsa isa : kernels::cpu::available_cpu_isas()) {
    kernels::cpu::set_cpu_isa(isa);
    CAPTURE(kernels::cpu::cpu_isa_name(isa));
    // L = 300: 96-row tiles, the last one of 12 rows, a lone pair's 4 tiles in 4 groups; L = 520:
    // 48-row tiles, 11 of them (the last of 40), in 6 groups (five of 2 tiles, one of 1), with a
    // head dim off every vector width.
    check_attention({.n = 1, .len = 300, .heads = 1, .head_dim = 32});
    check_attention({.n = 3, .len = 300, .heads = 2, .head_dim = 16});
    check_attention({.n = 1, .len = 520, .heads = 1, .head_dim = 20});
    // Short sequences (L² ≤ 64K): the backward's whole-pair transposed tiles, one pair per item
    // (L = 256 the longest such; L = 37 with a head dim off every vector width).
    check_attention({.n = 1, .len = 256, .heads = 1, .head_dim = 32});
    check_attention({.n = 3, .len = 37, .heads = 2, .head_dim = 20});
  }
}

TEST_CASE("CPU attention column kernels: softmax and the softmax backward down columns on every path",
          "[attention]") {
  test::CpuIsaGuard isa_guard;
  for (CpuIsa isa : kernels::cpu::available_cpu_isas()) {
    kernels::cpu::set_cpu_isa(isa);
    CAPTURE(kernels::cpu::cpu_isa_name(isa));
    for (int64_t cols : {1, 3, 8, 15, 16, 17, 33, 100}) {
      CAPTURE(cols);
      const int64_t rows = 7, ld = cols + 5;
      std::vector<float> s = normals(size_t(rows * ld), uint32_t(cols));
      for (float& x : s) x *= 30.0f;  // large scores: the max subtraction must happen
      const std::vector<float> original = s, b = normals(size_t(rows * ld), 11), dots = normals(size_t(cols), 12);
      std::vector<float> work(size_t(2 * cols));
      kernels::cpu::simd::softmax_columns(s.data(), rows, cols, ld, work.data());
      std::vector<float> ds = b;
      kernels::cpu::simd::softmax_backward_columns(s.data(), ds.data(), dots.data(), rows, cols, ld);
      for (int64_t j = 0; j < cols; ++j) {
        double mx = -INFINITY, total = 0;
        for (int64_t i = 0; i < rows; ++i) mx = std::max(mx, double(original[i * ld + j]));
        // x − max rounded to f32 as the kernel does (that rounding is the input's).
        auto e = [&](int64_t i) { return std::exp(double(original[i * ld + j] - float(mx))); };
        for (int64_t i = 0; i < rows; ++i) total += e(i);
        for (int64_t i = 0; i < rows; ++i)
          check_softmax_element(s[i * ld + j], e(i) / total, ds[i * ld + j], b[i * ld + j], dots[j]);
      }
      // The stride's padding is left alone.
      for (int64_t i = 0; i + 1 < rows; ++i)
        for (int64_t j = cols; j < ld; ++j) CHECK(s[i * ld + j] == original[i * ld + j]);
    }
  }
}

TEST_CASE("CPU attention row kernels: softmax, row dots and the softmax backward on every path", "[attention]") {
  test::CpuIsaGuard isa_guard;
  for (CpuIsa isa : kernels::cpu::available_cpu_isas()) {
    kernels::cpu::set_cpu_isa(isa);
    CAPTURE(kernels::cpu::cpu_isa_name(isa));
    for (int64_t len : {1, 3, 4, 5, 8, 9, 15, 16, 17, 33, 100}) {
      CAPTURE(len);
      const int64_t rows = 3, ld = len + 5;
      std::vector<float> s = normals(size_t(rows * ld), uint32_t(len));
      for (float& x : s) x *= 30.0f;  // large scores: the max subtraction must happen
      const std::vector<float> original = s, b = normals(size_t(rows * ld), 7);
      std::vector<float> dots(static_cast<size_t>(rows));
      // Unnormalised with each row's 1 / Σ first: times it, the normalised rows to the bit.
      std::vector<float> exps = s, inv(static_cast<size_t>(rows));
      kernels::cpu::simd::softmax_rows(exps.data(), rows, len, ld, inv.data());
      kernels::cpu::simd::softmax_rows(s.data(), rows, len, ld, nullptr);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < len; ++j) CHECK(exps[r * ld + j] * inv[r] == s[r * ld + j]);
      kernels::cpu::simd::row_dots(original.data(), b.data(), rows, len, ld, dots.data());
      std::vector<float> ds = b;
      kernels::cpu::simd::softmax_backward_rows(s.data(), ds.data(), dots.data(), rows, len, ld);
      for (int64_t r = 0; r < rows; ++r) {
        const float* x = original.data() + r * ld;
        const double mx = *std::max_element(x, x + len);
        double total = 0, dot = 0;
        // x − max rounded to f32 as the kernel does: that rounding is the input's, not the kernel's.
        auto e = [&](int64_t j) { return std::exp(double(x[j] - float(mx))); };
        for (int64_t j = 0; j < len; ++j) total += e(j);
        for (int64_t j = 0; j < len; ++j) dot += double(x[j]) * double(b[r * ld + j]);
        for (int64_t j = 0; j < len; ++j)
          check_softmax_element(s[r * ld + j], e(j) / total, ds[r * ld + j], b[r * ld + j], dots[r]);
        CHECK(std::abs(dots[r] - dot) <= 1e-5 * (std::abs(dot) + 1));
        // The stride's padding is left alone.
        for (int64_t j = len; j < ld && r + 1 < rows; ++j) CHECK(s[r * ld + j] == original[r * ld + j]);
      }
    }
  }
}

}  // namespace diffuse
