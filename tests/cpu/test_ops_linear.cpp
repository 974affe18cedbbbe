// linear against a naive loop in f64 (rank-1, rank-2 and rank-3 inputs, with and without bias),
// its backward against finite differences, f32 against f64, and the argument errors.
#include <catch2/catch.hpp>

#include "nn/autograd.h"
#include "nn/ops.h"
#include "support/gradcheck.h"

using namespace diffuse;

namespace {

Tensor rnd(const Shape& s, uint64_t seed, DType dt = DType::f64) { return Tensor::randn(s, seed, 0, 0, dt); }

// y[r, o] = b[o] + sum over i of x[r, i] * w[o, i], with r running over x's leading dims.
Tensor naive_linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  const int64_t in = w.dim(1), out = w.dim(0), rows = x.numel() / in;
  auto xv = x.to_vector(), wv = w.to_vector();
  std::vector<double> y(size_t(rows * out));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double acc = b.defined() ? b.to_vector()[o] : 0.0;
      for (int64_t i = 0; i < in; ++i) acc += xv[r * in + i] * wv[o * in + i];
      y[r * out + o] = acc;
    }
  Shape s = x.shape();
  s.back() = out;
  return Tensor::from(y, s, DType::f64);
}

struct Case {
  Shape x;
  int64_t out;
  bool bias;
};
const Case kCases[] = {{{2, 3, 5}, 4, true}, {{7, 5}, 3, false}, {{5}, 6, true}, {{3, 1}, 2, true}};

}  // namespace

TEST_CASE("linear forward matches a naive loop, f32 agrees with f64", "[linear]") {
  for (const Case& c : kCases) {
    INFO("x " << shape_str(c.x) << " out " << c.out << " bias " << c.bias);
    Tensor x = rnd(c.x, 1), w = rnd({c.out, c.x.back()}, 2), b = c.bias ? rnd({c.out}, 3) : Tensor();
    Tensor y = ops::linear(x, w, b);
    Tensor ref = naive_linear(x, w, b);
    REQUIRE(y.shape() == ref.shape());
    CHECK(test::max_abs_error(y, ref) < 1e-12);
    Tensor y32 = ops::linear(x.to(DType::f32), w.to(DType::f32), c.bias ? b.to(DType::f32) : Tensor());
    CHECK(test::max_rel_error(y32, ref) < 1e-5);
  }
}

TEST_CASE("linear backward matches finite differences", "[linear]") {
  for (const Case& c : kCases) {
    INFO("x " << shape_str(c.x) << " out " << c.out << " bias " << c.bias);
    Tensor x = rnd(c.x, 4).set_requires_grad(true);
    Tensor w = rnd({c.out, c.x.back()}, 5).set_requires_grad(true);
    Tensor b = c.bias ? rnd({c.out}, 6).set_requires_grad(true) : Tensor();
    test::check_gradients(
        [](const std::vector<Tensor>& in) { return test::weighted_sum(ops::linear(in[0], in[1], in[2])); },
        {x, w, b});
  }
}

TEST_CASE("linear on many rows (threaded bias grad) matches the naive loop", "[linear]") {
  Tensor x = rnd({64, 40, 24}, 7);
  Tensor w = rnd({16, 24}, 8);
  Tensor b = rnd({16}, 9).set_requires_grad(true);
  Tensor y = ops::linear(x, w, b);
  CHECK(test::max_abs_error(y, naive_linear(x, w, b.detach())) < 1e-11);
  Tensor g = rnd(y.shape(), 10);
  ops::sum(ops::mul(y, g)).backward();
  // d/db of sum(y * g) is g summed over every row.
  auto gv = g.to_vector();
  std::vector<double> expect(16, 0.0);
  for (size_t i = 0; i < gv.size(); ++i) expect[i % 16] += gv[i];
  CHECK(test::max_abs_error(b.grad(), Tensor::from(expect, {16}, DType::f64)) < 1e-10);
}

TEST_CASE("linear with few rows and many outputs (GEMM split by columns) matches the naive loop", "[linear]") {
  Tensor x = rnd({3, 64}, 11).set_requires_grad(true);
  Tensor w = rnd({2048, 64}, 12).set_requires_grad(true);
  Tensor b = rnd({2048}, 13);
  Tensor y = ops::linear(x, w, b);
  CHECK(test::max_abs_error(y, naive_linear(x.detach(), w.detach(), b)) < 1e-11);
  // sum(y * g): dx = g · w and dw = gᵀ · x, checked against plain loops.
  Tensor g = rnd(y.shape(), 14);
  ops::sum(ops::mul(y, g)).backward();
  auto gv = g.to_vector(), xv = x.to_vector(), wv = w.to_vector();
  std::vector<double> dx(3 * 64, 0.0), dw(2048 * 64, 0.0);
  for (int r = 0; r < 3; ++r)
    for (int o = 0; o < 2048; ++o)
      for (int i = 0; i < 64; ++i) {
        dx[r * 64 + i] += gv[r * 2048 + o] * wv[o * 64 + i];
        dw[o * 64 + i] += gv[r * 2048 + o] * xv[r * 64 + i];
      }
  CHECK(test::max_abs_error(x.grad(), Tensor::from(dx, {3, 64}, DType::f64)) < 1e-11);
  CHECK(test::max_abs_error(w.grad(), Tensor::from(dw, {2048, 64}, DType::f64)) < 1e-11);
}

TEST_CASE("linear rejects bad arguments with one message naming the shapes", "[linear]") {
  Tensor x = Tensor::zeros({2, 3, 5});
  Tensor w = Tensor::zeros({4, 5});
  CHECK_THROWS_WITH(ops::linear(x, Tensor::zeros({4, 6}), Tensor()),
                    Catch::Contains("linear") && Catch::Contains("5 features") && Catch::Contains("f32[4, 6]"));
  CHECK_THROWS_WITH(ops::linear(x, Tensor::zeros({20}), Tensor()),
                    Catch::Contains("linear") && Catch::Contains("f32[20]"));
  CHECK_THROWS_WITH(ops::linear(x, w, Tensor::zeros({5})),
                    Catch::Contains("linear") && Catch::Contains("bias must be [4]") && Catch::Contains("f32[5]"));
  CHECK_THROWS_WITH(ops::linear(x, w.to(DType::f64), Tensor()),
                    Catch::Contains("linear") && Catch::Contains("f64[4, 5]"));
  CHECK_THROWS_WITH(ops::linear(Tensor::zeros({2, 5}, DType::i64), Tensor::zeros({4, 5}, DType::i64), Tensor()),
                    Catch::Contains("linear") && Catch::Contains("i64[2, 5]"));
}
