// The CPU's own f32 GEMM (kernels/cpu/gemm_blocked.h and its per-path micro-kernels) against a
// naive f64 GEMM: odd sizes in every dimension so every edge tile runs, both transposes, alpha and
// beta (beta 0 over NaN), the bias row, sizes that cross the KC / MC / NC block edges, and the
// same result whatever the thread count — on every instruction-set path this CPU runs.
#include <catch2/catch.hpp>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <tuple>
#include <vector>

#include "support/cpu_isa_guard.h"
#include "kernels/cpu/simd/gemm_micro.h"
#include "kernels/cpu_isa.h"
#include "kernels/gemm.h"

namespace diffuse {
namespace {

using kernels::cpu::CpuIsa;

struct Case {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  float alpha = 1, beta = 0;
  bool with_bias = false;
};

// Runs one case on the active path and checks every element of c against f64 arithmetic, within
// a bound proportional to the sum of the magnitudes that went into it.
void check_case(const Case& t, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  const int64_t lda = (t.trans_a ? t.m : t.k) + 3, ldb = (t.trans_b ? t.k : t.n) + 2, ldc = t.n + 5;
  std::vector<float> a((t.trans_a ? t.k : t.m) * lda), b((t.trans_b ? t.n : t.k) * ldb), bias(t.n);
  std::vector<float> c(t.m * ldc);
  for (float& v : a) v = dist(rng);
  for (float& v : b) v = dist(rng);
  for (float& v : bias) v = dist(rng);
  for (float& v : c) v = t.beta == 0 ? std::numeric_limits<float>::quiet_NaN() : dist(rng);
  const std::vector<float> c0 = c;
  auto at_a = [&](int64_t i, int64_t p) { return double(t.trans_a ? a[p * lda + i] : a[i * lda + p]); };
  auto at_b = [&](int64_t p, int64_t j) { return double(t.trans_b ? b[j * ldb + p] : b[p * ldb + j]); };
  if (t.with_bias) {
    kernels::cpu::gemm_bias(t.trans_a, t.trans_b, t.m, t.n, t.k, t.alpha, a.data(), lda, b.data(), ldb, t.beta,
                            bias.data(), c.data(), ldc);
  } else {
    kernels::cpu::gemm<float>(t.trans_a, t.trans_b, t.m, t.n, t.k, t.alpha, a.data(), lda, b.data(), ldb, t.beta,
                              c.data(), ldc);
  }
  int64_t bad = 0;
  for (int64_t i = 0; i < t.m; ++i) {
    for (int64_t j = 0; j < t.n; ++j) {
      double sum = 0, mag = 0;
      for (int64_t p = 0; p < t.k; ++p) {
        sum += at_a(i, p) * at_b(p, j);
        mag += std::abs(at_a(i, p) * at_b(p, j));
      }
      double want = double(t.alpha) * sum, scale = std::abs(double(t.alpha)) * mag;
      if (t.beta != 0) {
        want += double(t.beta) * double(c0[i * ldc + j]);
        scale += std::abs(double(t.beta) * double(c0[i * ldc + j]));
      }
      if (t.with_bias) {
        want += double(bias[j]);
        scale += std::abs(double(bias[j]));
      }
      const double got = double(c[i * ldc + j]);
      if (!(std::abs(got - want) <= 1e-6 * scale)) ++bad;  // ~8 f32 ulps of the magnitudes summed
    }
  }
  // Padding between the rows of c is never written.
  for (int64_t i = 0; i < t.m; ++i)
    for (int64_t j = t.n; j < ldc; ++j)
      if (!(c[i * ldc + j] == c0[i * ldc + j] || (std::isnan(c[i * ldc + j]) && std::isnan(c0[i * ldc + j])))) ++bad;
  INFO("m " << t.m << " n " << t.n << " k " << t.k << " trans_a " << t.trans_a << " trans_b " << t.trans_b
            << " alpha " << t.alpha << " beta " << t.beta << " bias " << t.with_bias);
  CHECK(bad == 0);
}

}  // namespace

TEST_CASE("f32 GEMM matches f64 arithmetic at odd sizes, transposes, alpha, beta and bias on every path",
          "[simd][gemm]") {
  const int64_t sizes[] = {1, 2, 5, 7, 13, 16, 17, 33, 48, 67};
  const float alphas[] = {1.0f, -0.5f};
  const float betas[] = {0.0f, 1.0f, 0.25f};
  test::CpuIsaGuard guard;
  for (CpuIsa isa : kernels::cpu::available_cpu_isas()) {
    INFO("path " << kernels::cpu::cpu_isa_name(isa));
    kernels::cpu::set_cpu_isa(isa);
    std::mt19937 rng(7);
    int variant = 0;
    for (int64_t m : sizes)
      for (int64_t n : sizes)
        for (int64_t k : sizes)
          for (int tr = 0; tr < 4; ++tr, ++variant) {
            Case t{(tr & 1) != 0, (tr & 2) != 0, m, n, k, alphas[variant % 2], betas[variant % 3], variant % 5 == 0};
            check_case(t, rng);
          }
  }
}

TEST_CASE("f32 GEMM across block edges, with k = 0 and empty shapes, on every path", "[simd][gemm]") {
  test::CpuIsaGuard guard;
  for (CpuIsa isa : kernels::cpu::available_cpu_isas()) {
    INFO("path " << kernels::cpu::cpu_isa_name(isa));
    kernels::cpu::set_cpu_isa(isa);
    std::mt19937 rng(11);
    // More than one reduction block (256), row block (192) and column block (512).
    for (int tr = 0; tr < 4; ++tr) check_case({(tr & 1) != 0, (tr & 2) != 0, 203, 531, 517, 0.75f, 0.5f, tr == 2}, rng);
    // A small c over a long reduction: the reduction is sliced and the slices summed into c.
    for (int tr = 0; tr < 4; ++tr) check_case({(tr & 1) != 0, (tr & 2) != 0, 13, 35, 5000, -1.5f, tr * 0.5f, tr != 1}, rng);
    check_case({false, false, 9, 35, 0, 1.0f, 0.5f, true}, rng);   // k = 0: c = beta · c + bias
    check_case({true, false, 9, 35, 0, 1.0f, 0.0f, false}, rng);   // k = 0, beta = 0: zeros over NaN
    check_case({false, true, 0, 35, 12, 1.0f, 0.0f, true}, rng);   // nothing to do
    check_case({false, false, 12, 0, 12, 1.0f, 0.0f, false}, rng);
  }
}

TEST_CASE("f32 GEMM gives the same bits with one thread and with all of them", "[simd][gemm]") {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  // A tall c (split into row blocks) and a small c over a long reduction (sliced along k).
  for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{301, 77, 600}, {32, 288, 9000}}) {
    std::vector<float> a(m * k), b(k * n), one(m * n), all(m * n);
    for (float& v : a) v = dist(rng);
    for (float& v : b) v = dist(rng);
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    kernels::cpu::gemm<float>(false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, one.data(), n);
    omp_set_num_threads(std::max(saved, 2));
    kernels::cpu::gemm<float>(false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, all.data(), n);
    omp_set_num_threads(saved);
    CHECK(one == all);
  }
}

TEST_CASE("the block-summing micro-kernel gives gemm_block's bits block by block on every path", "[simd][gemm]") {
  // gemm_block_ksum (Winograd's per-position GEMMs) keeps the sums of its reduction blocks in
  // registers; it must give exactly what gemm_block gives run block by block (beta 0, then 1):
  // rows that are not a multiple of the tile's, a partial last panel and block, one block only.
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  test::CpuIsaGuard guard;
  for (CpuIsa isa : kernels::cpu::available_cpu_isas()) {
    kernels::cpu::set_cpu_isa(isa);
    namespace simd = kernels::cpu::simd;
    const int64_t nr = simd::gemm_panel_width();
    for (auto [m, n, k, kblock] : {std::tuple<int64_t, int64_t, int64_t, int64_t>{23, 40, 70, 32},
                                   {6, 64, 64, 32}, {13, 17, 96, 32}, {48, 96, 20, 32}, {1, 1, 33, 32}}) {
      const int64_t lda = k + 3, ldc = n + 5, n_pad = (n + nr - 1) / nr * nr;
      std::vector<float> a(m * lda), bmat(k * n), panels(k * n_pad);
      for (float& v : a) v = dist(rng);
      for (float& v : bmat) v = dist(rng);
      for (int64_t p0 = 0; p0 < k; p0 += kblock) {
        const int64_t kc = std::min(kblock, k - p0);
        simd::gemm_pack_b(bmat.data() + p0 * n, n, n, kc, panels.data() + p0 * n_pad);
      }
      std::vector<float> want(m * ldc, -7.0f), got(m * ldc, -7.0f);
      for (int64_t p0 = 0; p0 < k; p0 += kblock)
        simd::gemm_block(m, n, std::min(kblock, k - p0), a.data() + p0, lda, panels.data() + p0 * n_pad, 1.0f,
                         p0 == 0 ? 0.0f : 1.0f, nullptr, want.data(), ldc);
      simd::gemm_block_ksum(m, n, k, kblock, a.data(), lda, panels.data(), n_pad, got.data(), ldc);
      INFO(kernels::cpu::cpu_isa_name(isa) << " path, m " << m << " n " << n << " k " << k);
      CHECK(got == want);
    }
  }
}

}  // namespace diffuse
