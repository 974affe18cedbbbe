// attention against a naive per-(n, head, query) loop in f64, its backward against finite
// differences, f32 against f64, large logits (the max subtraction), a threaded size, and errors.
#include <catch2/catch.hpp>
#include <cmath>

#include "nn/autograd.h"
#include "nn/ops.h"
#include "support/gradcheck.h"

using namespace diffuse;

namespace {

Tensor rnd(const Shape& s, uint64_t seed, DType dt = DType::f64) { return Tensor::randn(s, seed, 0, 0, dt); }

Tensor naive_attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads) {
  const int64_t N = q.dim(0), L = q.dim(1), W = q.dim(2), d = W / heads;
  auto qv = q.to_vector(), kv = k.to_vector(), vv = v.to_vector();
  std::vector<double> out(qv.size());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < L; ++i) {
        std::vector<double> s(static_cast<size_t>(L));
        double mx = -INFINITY, total = 0;
        for (int64_t j = 0; j < L; ++j) {
          double dot = 0;
          for (int64_t c = 0; c < d; ++c) dot += qv[(n * L + i) * W + h * d + c] * kv[(n * L + j) * W + h * d + c];
          s[j] = dot / std::sqrt(double(d));
          mx = std::max(mx, s[j]);
        }
        for (int64_t j = 0; j < L; ++j) total += (s[j] = std::exp(s[j] - mx));
        for (int64_t c = 0; c < d; ++c) {
          double acc = 0;
          for (int64_t j = 0; j < L; ++j) acc += s[j] / total * vv[(n * L + j) * W + h * d + c];
          out[(n * L + i) * W + h * d + c] = acc;
        }
      }
  return Tensor::from(out, q.shape(), DType::f64);
}

struct Case {
  Shape shape;
  int heads;
};
const Case kCases[] = {{{2, 5, 6}, 2}, {{1, 7, 4}, 1}, {{2, 3, 12}, 4}, {{1, 1, 3}, 1}};

}  // namespace

TEST_CASE("attention forward matches a naive loop, f32 agrees with f64", "[attention]") {
  for (const Case& c : kCases) {
    INFO(shape_str(c.shape) << " heads " << c.heads);
    Tensor q = rnd(c.shape, 1), k = rnd(c.shape, 2), v = rnd(c.shape, 3);
    Tensor y = ops::attention(q, k, v, c.heads);
    Tensor ref = naive_attention(q, k, v, c.heads);
    CHECK(test::max_abs_error(y, ref) < 1e-12);
    Tensor y32 = ops::attention(q.to(DType::f32), k.to(DType::f32), v.to(DType::f32), c.heads);
    CHECK(test::max_rel_error(y32, ref) < 1e-5);
  }
}

TEST_CASE("attention backward matches finite differences", "[attention]") {
  for (const Case& c : kCases) {
    INFO(shape_str(c.shape) << " heads " << c.heads);
    Tensor q = rnd(c.shape, 4).set_requires_grad(true);
    Tensor k = rnd(c.shape, 5).set_requires_grad(true);
    Tensor v = rnd(c.shape, 6).set_requires_grad(true);
    const int heads = c.heads;
    test::check_gradients(
        [heads](const std::vector<Tensor>& in) { return test::weighted_sum(ops::attention(in[0], in[1], in[2], heads)); },
        {q, k, v});
  }
}

TEST_CASE("attention with large logits stays finite (softmax subtracts the row max)", "[attention]") {
  // Scores of several hundred: exp overflows f32 (and f64 past ~709) without the max subtraction.
  Tensor q = ops::scale(rnd({1, 6, 8}, 7), 40.0), k = ops::scale(rnd({1, 6, 8}, 8), 40.0), v = rnd({1, 6, 8}, 9);
  Tensor ref = naive_attention(q, k, v, 2);
  Tensor y32 = ops::attention(q.to(DType::f32), k.to(DType::f32), v.to(DType::f32), 2);
  CHECK(test::max_rel_error(y32, ref) < 1e-4);
  CHECK(test::max_abs_error(ops::attention(q, k, v, 2), ref) < 1e-12);
}

TEST_CASE("attention on threaded sizes matches the reference, backward too", "[attention]") {
  // 2 x 2 (n, head) pairs run in parallel; a single pair of L = 96 runs alone with split GEMMs.
  struct Big {
    Shape shape;
    int heads;
  };
  for (const Big& c : {Big{{2, 40, 32}, 2}, Big{{1, 96, 32}, 1}}) {
    INFO(shape_str(c.shape) << " heads " << c.heads);
    Tensor q = rnd(c.shape, 10).set_requires_grad(true);
    Tensor k = rnd(c.shape, 11).set_requires_grad(true);
    Tensor v = rnd(c.shape, 12).set_requires_grad(true);
    Tensor y = ops::attention(q, k, v, c.heads);
    CHECK(test::max_abs_error(y, naive_attention(q.detach(), k.detach(), v.detach(), c.heads)) < 1e-12);
    test::weighted_sum(y, 55).backward();
    NoGrad no_grad;
    for (Tensor* t : {&q, &k, &v}) {
      Tensor u = rnd(t->shape(), 15);
      Tensor keep = t->detach().clone();
      auto loss_at = [&](double s) {
        t->detach().copy_from(ops::add(keep, ops::scale(u, s)));
        return test::weighted_sum(ops::attention(q, k, v, c.heads), 55).item();
      };
      const double eps = 1e-5;
      double numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps);
      t->detach().copy_from(keep);
      double analytic = ops::sum(ops::mul(t->grad(), u)).item();
      CHECK(std::fabs(analytic - numeric) < 1e-6 * std::max(1.0, std::fabs(numeric)));
    }
  }
}

TEST_CASE("attention rejects bad arguments with one message naming the shapes", "[attention]") {
  Tensor q = Tensor::zeros({2, 5, 6});
  CHECK_THROWS_WITH(ops::attention(q, q, q, 4),
                    Catch::Contains("attention") && Catch::Contains("4 heads do not divide the width 6") &&
                        Catch::Contains("f32[2, 5, 6]"));
  CHECK_THROWS_WITH(ops::attention(q, Tensor::zeros({2, 4, 6}), q, 2),
                    Catch::Contains("attention") && Catch::Contains("same shape") && Catch::Contains("f32[2, 4, 6]"));
  CHECK_THROWS_WITH(ops::attention(q, q, Tensor::zeros({2, 5, 8}), 2),
                    Catch::Contains("attention") && Catch::Contains("f32[2, 5, 8]"));
  CHECK_THROWS_WITH(ops::attention(Tensor::zeros({10, 6}), Tensor::zeros({10, 6}), Tensor::zeros({10, 6}), 2),
                    Catch::Contains("attention") && Catch::Contains("f32[10, 6]"));
  CHECK_THROWS_WITH(ops::attention(q, q, q, 0), Catch::Contains("attention") && Catch::Contains("0 heads"));
  CHECK_THROWS_WITH(ops::attention(q, q.to(DType::f64), q, 2),
                    Catch::Contains("attention") && Catch::Contains("f64[2, 5, 6]"));
  Tensor qi = Tensor::zeros({2, 5, 6}, DType::i64);
  CHECK_THROWS_WITH(ops::attention(qi, qi, qi, 2), Catch::Contains("attention") && Catch::Contains("i64[2, 5, 6]"));
}
