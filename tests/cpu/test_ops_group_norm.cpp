// group_norm against a naive f64 loop (NHWC and [N, L, C], with and without the fused add_nc and
// SiLU), its backward for x, gamma, beta and add_nc against finite differences, f32 against f64
// (including inputs with a large mean, where one-pass f32 statistics would fail), and the errors.
#include <catch2/catch.hpp>
#include <cmath>

#include "nn/autograd.h"
#include "nn/ops.h"
#include "support/gradcheck.h"

using namespace diffuse;

namespace {

Tensor rnd(const Shape& s, uint64_t seed, DType dt = DType::f64) { return Tensor::randn(s, seed, 0, 0, dt); }

Tensor naive_group_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, const ops::GroupNormOptions& o,
                        const Tensor& add_nc) {
  const int64_t N = x.dim(0), C = x.dim(-1), S = x.numel() / (N * C), G = o.groups, cg = C / G;
  auto xv = x.to_vector(), gv = gamma.to_vector(), bv = beta.to_vector();
  std::vector<double> av = add_nc.defined() ? add_nc.to_vector() : std::vector<double>(size_t(N * C), 0.0);
  auto h = [&](int64_t n, int64_t s, int64_t c) { return xv[(n * S + s) * C + c] + av[n * C + c]; };
  std::vector<double> y(xv.size());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < G; ++g) {
      double sum = 0, sq = 0;
      for (int64_t s = 0; s < S; ++s)
        for (int64_t c = g * cg; c < (g + 1) * cg; ++c) sum += h(n, s, c);
      double mean = sum / double(S * cg);
      for (int64_t s = 0; s < S; ++s)
        for (int64_t c = g * cg; c < (g + 1) * cg; ++c) sq += (h(n, s, c) - mean) * (h(n, s, c) - mean);
      double var = sq / double(S * cg);
      for (int64_t s = 0; s < S; ++s)
        for (int64_t c = g * cg; c < (g + 1) * cg; ++c) {
          double v = (h(n, s, c) - mean) / std::sqrt(var + o.eps) * gv[c] + bv[c];
          y[(n * S + s) * C + c] = o.silu ? v / (1 + std::exp(-v)) : v;
        }
    }
  return Tensor::from(y, x.shape(), DType::f64);
}

struct Case {
  const char* name;
  Shape x;
  int groups;
  bool silu, add;
};
const Case kCases[] = {
    {"NHWC 5x7, 6 channels in 3 groups", {2, 5, 7, 6}, 3, false, false},
    {"NHWC with fused SiLU", {2, 5, 7, 6}, 3, true, false},
    {"NHWC with fused add_nc", {2, 5, 7, 6}, 3, false, true},
    {"NHWC with add_nc and SiLU", {2, 3, 5, 6}, 2, true, true},
    {"[N, L, C] tokens, one group", {3, 5, 4}, 1, false, false},
    {"one channel per group", {2, 3, 3, 4}, 4, true, true},
};

}  // namespace

TEST_CASE("group_norm forward matches a naive loop, f32 agrees with f64", "[group_norm]") {
  for (const Case& c : kCases) {
    INFO(c.name);
    const int64_t C = c.x.back();
    Tensor x = rnd(c.x, 1), gamma = rnd({C}, 2), beta = rnd({C}, 3);
    Tensor add = c.add ? rnd({c.x[0], C}, 4) : Tensor();
    ops::GroupNormOptions o{c.groups, 1e-5, c.silu};
    Tensor y = ops::group_norm(x, gamma, beta, o, add);
    Tensor ref = naive_group_norm(x, gamma, beta, o, add);
    CHECK(test::max_abs_error(y, ref) < 1e-12);
    Tensor y32 = ops::group_norm(x.to(DType::f32), gamma.to(DType::f32), beta.to(DType::f32), o,
                                 c.add ? add.to(DType::f32) : Tensor());
    CHECK(test::max_rel_error(y32, ref) < 1e-5);
  }
}

TEST_CASE("group_norm backward matches finite differences", "[group_norm]") {
  for (const Case& c : kCases) {
    INFO(c.name);
    const int64_t C = c.x.back();
    Tensor x = rnd(c.x, 5).set_requires_grad(true);
    Tensor gamma = rnd({C}, 6).set_requires_grad(true);
    Tensor beta = rnd({C}, 7).set_requires_grad(true);
    Tensor add = c.add ? rnd({c.x[0], C}, 8).set_requires_grad(true) : Tensor();
    ops::GroupNormOptions o{c.groups, 1e-5, c.silu};
    test::check_gradients(
        [o](const std::vector<Tensor>& in) {
          return test::weighted_sum(ops::group_norm(in[0], in[1], in[2], o, in[3]));
        },
        {x, gamma, beta, add}, 1e-6, 1e-6);
  }
}

TEST_CASE("group_norm statistics stay accurate for f32 inputs with a large mean", "[group_norm]") {
  // x = 1000 + N(0, 1): E[x²] − E[x]² in f32 would lose every significant digit of the variance.
  Tensor x32 = ops::add(rnd({2, 8, 8, 8}, 9, DType::f32), Tensor::full({1}, 1000.0));
  Tensor gamma = Tensor::ones({8}), beta = Tensor::zeros({8});
  ops::GroupNormOptions o{4, 1e-5, false};
  Tensor y = ops::group_norm(x32, gamma, beta, o);
  Tensor ref = naive_group_norm(x32.to(DType::f64), gamma.to(DType::f64), beta.to(DType::f64), o, Tensor());
  CHECK(test::max_abs_error(y, ref) < 1e-5);
}

TEST_CASE("group_norm on a batch big enough for threads matches the reference, backward too", "[group_norm]") {
  // 4 x 16 x 16 x 40 elements take the OpenMP path; the backward is checked along one direction.
  Tensor x = rnd({4, 16, 16, 40}, 10).set_requires_grad(true);
  Tensor gamma = rnd({40}, 11).set_requires_grad(true), beta = rnd({40}, 12).set_requires_grad(true);
  Tensor add = rnd({4, 40}, 13).set_requires_grad(true);
  ops::GroupNormOptions o{8, 1e-5, true};
  Tensor y = ops::group_norm(x, gamma, beta, o, add);
  CHECK(test::max_abs_error(y, naive_group_norm(x.detach(), gamma.detach(), beta.detach(), o, add.detach())) < 1e-12);
  test::weighted_sum(y, 77).backward();
  NoGrad no_grad;
  for (Tensor* t : {&x, &gamma, &beta, &add}) {
    Tensor u = rnd(t->shape(), 14);
    Tensor keep = t->detach().clone();
    auto loss_at = [&](double s) {
      t->detach().copy_from(ops::add(keep, ops::scale(u, s)));
      return test::weighted_sum(ops::group_norm(x, gamma, beta, o, add), 77).item();
    };
    const double eps = 1e-5;
    double numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps);
    t->detach().copy_from(keep);
    double analytic = ops::sum(ops::mul(t->grad(), u)).item();
    CHECK(std::fabs(analytic - numeric) < 1e-6 * std::max(1.0, std::fabs(numeric)));
  }
}

TEST_CASE("group_norm rejects bad arguments with one message naming the shapes", "[group_norm]") {
  Tensor x = Tensor::zeros({2, 5, 7, 6});
  Tensor g = Tensor::ones({6}), b = Tensor::zeros({6});
  CHECK_THROWS_WITH(ops::group_norm(x, g, b, {4}),
                    Catch::Contains("group_norm") && Catch::Contains("4 groups do not divide 6 channels") &&
                        Catch::Contains("f32[2, 5, 7, 6]"));
  CHECK_THROWS_WITH(ops::group_norm(x, Tensor::ones({5}), b, {3}),
                    Catch::Contains("group_norm") && Catch::Contains("gamma and beta must be [6]") &&
                        Catch::Contains("f32[5]"));
  CHECK_THROWS_WITH(ops::group_norm(x, g, b, {3}, Tensor::zeros({2, 5})),
                    Catch::Contains("group_norm") && Catch::Contains("add_nc must be [2, 6]") &&
                        Catch::Contains("f32[2, 5]"));
  CHECK_THROWS_WITH(ops::group_norm(Tensor::zeros({6}), g, b, {3}),
                    Catch::Contains("group_norm") && Catch::Contains("f32[6]"));
  CHECK_THROWS_WITH(ops::group_norm(x, g, b, {0}), Catch::Contains("group_norm") && Catch::Contains("0 groups"));
  CHECK_THROWS_WITH(ops::group_norm(x.to(DType::i64), g.to(DType::i64), b.to(DType::i64), {3}),
                    Catch::Contains("group_norm") && Catch::Contains("i64[2, 5, 7, 6]"));
}
