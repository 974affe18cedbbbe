// The f32 vector kernels of GroupNorm, the element-wise ops and the optimizer (kernels/cpu/simd/
// {group_norm,elementwise,optim}) on every instruction-set path this CPU runs, at the sizes the op
// table's small rows do not reach: a GroupNorm image cut into channel blocks, a large mean beside
// the fused add, one element per group; element-wise runs long enough to be cut into pieces; sums
// and AdamW chunks over several threads.
#include <catch2/catch.hpp>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "support/cpu_isa_guard.h"
#include "support/f32_vs_f64.h"
#include "kernels/cpu_isa.h"
#include "kernels/elementwise.h"
#include "kernels/group_norm.h"
#include "kernels/optim.h"

namespace diffuse {
namespace {

using kernels::cpu::CpuIsa;

using test::normal_values;
using test::rel_to_peak;
using test::to_f32;

struct NormCase {
  const char* what;
  int64_t n, spatial, channels, groups;
  bool silu, add;
  double x_mean;
};

// The f32 GroupNorm forward and backward against the f64 kernels on the same inputs.
void check_group_norm(const NormCase& c) {
  kernels::GroupNormDesc d;
  d.n = c.n;
  d.spatial = c.spatial;
  d.channels = c.channels;
  d.groups = c.groups;
  d.silu = c.silu;
  const size_t numel = size_t(c.n * c.spatial * c.channels), C = size_t(c.channels), NC = size_t(c.n * c.channels);
  const std::vector<double> x = normal_values(numel, 1, c.x_mean, 1.0), add = normal_values(NC, 2);
  const std::vector<double> gamma = normal_values(C, 3, 1.0, 0.2), beta = normal_values(C, 4, 0.2, 0.3);
  const std::vector<double> dy = normal_values(numel, 5);
  const std::vector<float> xf = to_f32(x), addf = to_f32(add), gammaf = to_f32(gamma), betaf = to_f32(beta),
                           dyf = to_f32(dy);
  const size_t NG = size_t(c.n * c.groups);
  std::vector<double> y(numel), mean(NG), rstd(NG), dx(numel), dgamma(C), dbeta(C), dadd(NC);
  kernels::cpu::group_norm_forward<double>(d, x.data(), c.add ? add.data() : nullptr, gamma.data(), beta.data(),
                                           y.data(), mean.data(), rstd.data());
  kernels::cpu::group_norm_backward<double>(d, x.data(), c.add ? add.data() : nullptr, gamma.data(), beta.data(),
                                            mean.data(), rstd.data(), dy.data(), dx.data(), dgamma.data(),
                                            dbeta.data(), c.add ? dadd.data() : nullptr);
  test::CpuIsaGuard guard;
  for (CpuIsa isa : kernels::cpu::available_cpu_isas()) {
    kernels::cpu::set_cpu_isa(isa);
    INFO(c.what << " on the " << kernels::cpu::cpu_isa_name(isa) << " path");
    std::vector<float> yf(numel), dxf(numel), dgammaf(C), dbetaf(C), daddf(NC);
    std::vector<double> meanf(NG), rstdf(NG);
    kernels::cpu::group_norm_forward<float>(d, xf.data(), c.add ? addf.data() : nullptr, gammaf.data(), betaf.data(),
                                            yf.data(), meanf.data(), rstdf.data());
    // The op table's f32 forward bound: 1e-5 relative (to max(1, |y|)).
    double worst = 0;
    for (size_t i = 0; i < numel; ++i)
      worst = std::max(worst, std::fabs(double(yf[i]) - y[i]) / std::max(1.0, std::fabs(y[i])));
    CHECK(worst <= 1e-5);
    for (size_t i = 0; i < NG; ++i) {
      CHECK(std::fabs(meanf[i] - mean[i]) <= 1e-6 * (1 + std::fabs(mean[i])));
      CHECK(std::fabs(rstdf[i] - rstd[i]) <= 1e-5 * rstd[i]);
    }
    if (c.x_mean != 0.0) continue;  // the f32 backward's x − mean rounds at the mean's magnitude
    kernels::cpu::group_norm_backward<float>(d, xf.data(), c.add ? addf.data() : nullptr, gammaf.data(),
                                             betaf.data(), meanf.data(), rstdf.data(), dyf.data(), dxf.data(),
                                             dgammaf.data(), dbetaf.data(), c.add ? daddf.data() : nullptr);
    CHECK(rel_to_peak(dxf, dx) <= 1e-5);
    CHECK(rel_to_peak(dgammaf, dgamma) <= 1e-5);
    CHECK(rel_to_peak(dbetaf, dbeta) <= 1e-5);
    if (c.add) CHECK(rel_to_peak(daddf, dadd) <= 1e-5);
  }
}

}  // namespace

TEST_CASE("GroupNorm f32 kernels match the f64 ones on every path: channel blocks, odd widths, a large mean",
          "[group_norm][simd]") {
  const NormCase cases[] = {
      // One image of 256 channels: cut into channel blocks of whole groups (several per thread).
      {"one image, 256 channels in blocks", 1, 35, 256, 32, true, true, 0.0},
      // 12 channels per group: every row of a block ends in a masked tail on the wider paths.
      {"odd group width", 3, 17, 36, 3, true, true, 0.0},
      {"no SiLU, no add", 2, 64, 64, 8, false, false, 0.0},
      // 1000 + N(0, 1) with the fused add: one-pass f32 statistics would lose the variance, and
      // (h − mean) formed at the mean's magnitude would lose the output.
      {"large mean with add_nc", 2, 64, 64, 8, true, true, 1000.0},
      {"large mean, one block of 128 channels", 1, 100, 128, 4, false, false, 1000.0},
  };
  for (const NormCase& c : cases) check_group_norm(c);
}

TEST_CASE("GroupNorm f32 backward gives exactly zero for groups of one element on every path", "[group_norm][simd]") {
  // One position, one channel per group: normalisation maps every input to beta, so dx is 0.
  kernels::GroupNormDesc d;
  d.n = 2;
  d.spatial = 1;
  d.channels = 20;
  d.groups = 20;
  d.silu = true;
  const std::vector<float> x = to_f32(normal_values(40, 7, 3.0)), gamma = to_f32(normal_values(20, 8, 1.0, 0.2)),
                           beta = to_f32(normal_values(20, 9)), dy = to_f32(normal_values(40, 10));
  test::CpuIsaGuard guard;
  for (CpuIsa isa : kernels::cpu::available_cpu_isas()) {
    kernels::cpu::set_cpu_isa(isa);
    INFO("path " << kernels::cpu::cpu_isa_name(isa));
    std::vector<float> y(40), dx(40, 1.0f), dgamma(20), dbeta(20);
    std::vector<double> mean(40), rstd(40);
    kernels::cpu::group_norm_forward<float>(d, x.data(), nullptr, gamma.data(), beta.data(), y.data(), mean.data(),
                                            rstd.data());
    kernels::cpu::group_norm_backward<float>(d, x.data(), nullptr, gamma.data(), beta.data(), mean.data(),
                                             rstd.data(), dy.data(), dx.data(), dgamma.data(), dbeta.data(),
                                             nullptr);
    CHECK(std::all_of(dx.begin(), dx.end(), [](float v) { return v == 0.0f; }));
  }
}

TEST_CASE("element-wise f32 kernels over long runs on every path", "[simd]") {
  // [3, 40001] with b [3, 1] (a scalar per run) and with b of a's shape (one run): runs long
  // enough to be cut into pieces across threads, with tails.
  const int64_t rows = 3, cols = 40001, n = rows * cols;
  const std::vector<float> a = to_f32(normal_values(size_t(n), 11)), b_same = to_f32(normal_values(size_t(n), 12)),
                           b_col = to_f32(normal_values(size_t(rows), 13));
  test::CpuIsaGuard guard;
  for (CpuIsa isa : kernels::cpu::available_cpu_isas()) {
    kernels::cpu::set_cpu_isa(isa);
    INFO("path " << kernels::cpu::cpu_isa_name(isa));
    for (auto op : {kernels::BinaryOp::add, kernels::BinaryOp::sub, kernels::BinaryOp::mul}) {
      auto exact = [op](float p, float q) {
        return op == kernels::BinaryOp::add ? p + q : op == kernels::BinaryOp::sub ? p - q : p * q;
      };
      std::vector<float> out(a.size());
      kernels::cpu::binary<float>(op, kernels::make_broadcast({rows, cols}, {rows, 1}, "test"), a.data(),
                                  b_col.data(), out.data());
      int64_t wrong = 0;
      for (int64_t i = 0; i < n; ++i) wrong += out[size_t(i)] != exact(a[size_t(i)], b_col[size_t(i / cols)]);
      CHECK(wrong == 0);
      kernels::cpu::binary<float>(op, kernels::make_broadcast({rows, cols}, {rows, cols}, "test"), a.data(),
                                  b_same.data(), out.data());
      wrong = 0;
      for (int64_t i = 0; i < n; ++i) wrong += out[size_t(i)] != exact(a[size_t(i)], b_same[size_t(i)]);
      CHECK(wrong == 0);
    }
    // The SiLU grad against the formula in f64.
    std::vector<float> gx(a.size());
    kernels::cpu::silu_backward<float>(n, a.data(), b_same.data(), gx.data());
    double worst = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double xv = a[size_t(i)], s = 1.0 / (1.0 + std::exp(-xv));
      const double want = double(b_same[size_t(i)]) * s * (1.0 + xv * (1.0 - s));
      worst = std::max(worst, std::fabs(gx[size_t(i)] - want) / std::max(1.0, std::fabs(want)));
    }
    CHECK(worst <= 1e-6);
    // The sum: within 1e-6 of the f64 one, and the same bits with one thread as with several.
    double want = 0;
    for (float v : a) want += std::fabs(v);
    std::vector<float> abs_a(a.size());
    std::transform(a.begin(), a.end(), abs_a.begin(), [](float v) { return std::fabs(v); });
    const float threaded = kernels::cpu::sum<float>(n, abs_a.data());
    const int saved_threads = omp_get_max_threads();
    omp_set_num_threads(1);
    const float serial = kernels::cpu::sum<float>(n, abs_a.data());
    omp_set_num_threads(saved_threads);
    CHECK(threaded == serial);
    CHECK(std::fabs(threaded - want) <= 1e-6 * want);
  }
}

TEST_CASE("f32 AdamW + EMA gives the scalar formula's bits on every path", "[simd]") {
  // 70001 elements: two chunks, the second with a tail; a small tensor with EMA only.
  const int64_t n = 70001;
  const std::vector<float> p0 = to_f32(normal_values(size_t(n), 21)), g = to_f32(normal_values(size_t(n), 22, 0, 0.1)),
                           m0 = to_f32(normal_values(size_t(n), 23, 0, 0.01)),
                           e0 = to_f32(normal_values(size_t(n), 25)), q0 = to_f32(normal_values(7, 26));
  std::vector<float> v0 = to_f32(normal_values(size_t(n), 24, 0, 0.001));
  for (float& v : v0) v = std::fabs(v);
  kernels::AdamWHyper h;
  h.lr = 1e-3;
  h.weight_decay = 0.01;
  h.ema_decay = 0.999;
  const double step_size = h.lr / (1 - 0.9 * 0.9), bc2 = std::sqrt(1 - 0.999 * 0.999);
  // The scalar loop of kernels/cpu/optim.cpp, in f32 (compiled for baseline x86-64: no FMA).
  std::vector<float> p_want = p0, m_want = m0, v_want = v0, e_want = e0, q_ema_want = q0;
  const float decay_factor = float(1.0 - h.lr * h.weight_decay), b1 = float(h.beta1), omb1 = float(1.0 - h.beta1),
              b2 = float(h.beta2), omb2 = float(1.0 - h.beta2), eps = float(h.eps), omd = float(1.0 - h.ema_decay),
              neg_step = float(-step_size), bc2f = float(bc2);
  for (size_t i = 0; i < size_t(n); ++i) {
    float p = p_want[i] * decay_factor;
    const float m = b1 * m_want[i] + omb1 * g[i];
    const float v = b2 * v_want[i] + omb2 * (g[i] * g[i]);
    m_want[i] = m;
    v_want[i] = v;
    p += neg_step * (m / (std::sqrt(v) / bc2f + eps));
    p_want[i] = p;
    e_want[i] -= omd * (e_want[i] - p);
  }
  std::vector<float> q_param = q0;
  for (size_t i = 0; i < q0.size(); ++i) q_ema_want[i] -= omd * (q_ema_want[i] - q_param[i]);
  test::CpuIsaGuard guard;
  for (CpuIsa isa : kernels::cpu::available_cpu_isas()) {
    kernels::cpu::set_cpu_isa(isa);
    INFO("path " << kernels::cpu::cpu_isa_name(isa));
    std::vector<float> p = p0, m = m0, v = v0, e = e0, q_ema = q0;
    kernels::OptimEntry<float> entries[2];
    entries[0] = {p.data(), g.data(), m.data(), v.data(), e.data(), n, step_size, bc2};
    entries[1] = {q_param.data(), nullptr, nullptr, nullptr, q_ema.data(), int64_t(q0.size()), 0.0, 1.0};
    kernels::cpu::adamw_ema_step<float>(h, entries, 2);
    CHECK(p == p_want);
    CHECK(m == m_want);
    CHECK(v == v_want);
    CHECK(e == e_want);
    CHECK(q_ema == q_ema_want);
    CHECK(q_param == q0);  // no grad: the parameter stays, only its EMA moves
  }
}

}  // namespace diffuse
