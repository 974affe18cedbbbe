// Dropout and mse_loss (nn/ops_loss.cpp): the dropout mask against Philox drawn here, its
// determinism in (seed, offset), its drop rate, and a backward that masks the same elements;
// mse_loss forward against a naive weighted mean, backward against finite differences.
#include <catch2/catch.hpp>
#include <cmath>

#include "kernels/philox.h"
#include "nn/autograd.h"
#include "nn/ops.h"
#include "support/gradcheck.h"

using namespace diffuse;
using diffuse::test::check_gradients;
using diffuse::test::max_rel_error;
using diffuse::test::weighted_sum;

TEST_CASE("dropout zeroes the Philox-chosen elements and scales the rest by 1/(1-p)", "[ops][loss][dropout]") {
  for (DType dt : {DType::f32, DType::f64}) {
    const double p = 0.35;
    Tensor x = Tensor::randn({3, 5, 7}, 1, 0, 0, dt);
    Tensor y = ops::dropout(x, p, 1234, 10);
    REQUIRE(y.shape() == x.shape());
    auto vx = x.to_vector(), vy = y.to_vector();
    int dropped = 0;
    for (size_t i = 0; i < vx.size(); ++i) {
      bool drop = philox::uniform_at(1234, philox::kDropout, 10, i) < static_cast<float>(p);
      dropped += drop;
      double expect = drop ? 0.0 : (dt == DType::f32 ? double(float(vx[i]) * float(1.0 / (1.0 - p))) : vx[i] / (1.0 - p));
      CHECK(vy[i] == Approx(expect).epsilon(1e-15).margin(0));
    }
    CHECK(dropped > 0);
    CHECK(dropped < static_cast<int>(vx.size()));
  }
}

TEST_CASE("dropout is a pure function of (seed, offset)", "[ops][loss][dropout]") {
  Tensor x = Tensor::ones({64});
  auto a = ops::dropout(x, 0.5, 7, 0).to_vector();
  CHECK(a == ops::dropout(x, 0.5, 7, 0).to_vector());
  CHECK(a != ops::dropout(x, 0.5, 8, 0).to_vector());
  CHECK(a != ops::dropout(x, 0.5, 7, 16).to_vector());
  // Offset counts Philox blocks of 4 elements: offset 2 starts where element 8 of offset 0 was.
  auto shifted = ops::dropout(x, 0.5, 7, 2).to_vector();
  for (size_t i = 0; i + 8 < a.size(); ++i) CHECK(shifted[i] == a[i + 8]);
}

TEST_CASE("dropout drops a fraction p of the elements", "[ops][loss][dropout]") {
  Tensor x = Tensor::ones({100000});
  for (double p : {0.1, 0.3, 0.5, 0.9}) {
    auto v = ops::dropout(x, p, 99, 0).to_vector();
    int64_t zeros = 0;
    double total = 0;
    for (double e : v) {
      zeros += e == 0.0;
      total += e;
    }
    INFO("p " << p);
    CHECK(std::fabs(double(zeros) / v.size() - p) < 0.01);  // > 3 standard deviations for every p here
    CHECK(std::fabs(total / v.size() - 1.0) < 0.05);         // inverted dropout keeps the mean
  }
  Tensor same = ops::dropout(x, 0.0, 99, 0);
  CHECK(same.same_storage(x));
}

TEST_CASE("dropout backward masks the same elements (finite differences)", "[ops][loss][dropout][grad]") {
  Tensor x = Tensor::randn({2, 3, 1, 5}, 2, 0, 0, DType::f64).set_requires_grad(true);
  check_gradients([](const std::vector<Tensor>& in) { return weighted_sum(ops::dropout(in[0], 0.4, 5, 3)); }, {x});
  x.zero_grad();
  Tensor y = ops::dropout(x, 0.4, 5, 3);
  ops::sum(y).backward();
  auto vy = y.to_vector(), vx = x.to_vector(), g = x.grad().to_vector();
  for (size_t i = 0; i < g.size(); ++i) {
    bool dropped = vy[i] == 0.0 && vx[i] != 0.0;
    CHECK(g[i] == (dropped ? 0.0 : 1.0 / 0.6));
  }
}

TEST_CASE("dropout rejects p outside 0 <= p < 1", "[ops][loss][dropout][errors]") {
  Tensor x = Tensor::zeros({2, 3});
  CHECK_THROWS_WITH(ops::dropout(x, 1.0, 1, 0), Catch::Contains("dropout: p must be in [0, 1), got 1.0") &&
                                                   Catch::Contains("f32[2, 3]"));
  CHECK_THROWS_WITH(ops::dropout(x, -0.1, 1, 0), Catch::Contains("dropout: p must be in [0, 1)"));
  CHECK_THROWS_WITH(ops::dropout(x, std::nan(""), 1, 0), Catch::Contains("dropout: p must be in [0, 1)"));
  CHECK_THROWS_WITH(ops::dropout(Tensor::zeros({2}, DType::i64), 0.5, 1, 0), Catch::Contains("dropout: unsupported dtype"));
}

namespace {
double naive_mse(const Tensor& pred, const Tensor& target, const std::vector<double>& w) {
  auto p = pred.to_vector(), t = target.to_vector();
  int64_t per = pred.numel() / pred.dim(0);
  double total = 0;
  for (size_t i = 0; i < p.size(); ++i) total += (w.empty() ? 1.0 : w[i / per]) * (p[i] - t[i]) * (p[i] - t[i]);
  return total / p.size();
}
}  // namespace

TEST_CASE("mse_loss is the (weighted) mean of squared errors", "[ops][loss][mse]") {
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor pred = Tensor::randn({3, 2, 5, 3}, 3, 0, 0, dt);
    Tensor target = Tensor::randn({3, 2, 5, 3}, 4, 0, 0, dt);
    std::vector<double> w = {0.5, 2.0, 1.25};
    Tensor loss = ops::mse_loss(pred, target);
    REQUIRE(loss.shape() == Shape{});
    REQUIRE(loss.dtype() == dt);
    double tol = dt == DType::f32 ? 1e-6 : 1e-14;
    CHECK(loss.item() == Approx(naive_mse(pred, target, {})).epsilon(tol));
    CHECK(ops::mse_loss(pred, target, Tensor::from(w, {3}, dt)).item() == Approx(naive_mse(pred, target, w)).epsilon(tol));
  }
}

TEST_CASE("mse_loss backward reaches pred only (finite differences)", "[ops][loss][mse][grad]") {
  Tensor pred = Tensor::randn({3, 1, 5}, 5, 0, 0, DType::f64).set_requires_grad(true);
  Tensor target = Tensor::randn({3, 1, 5}, 6, 0, 0, DType::f64);
  Tensor w = Tensor::from({0.5, 2.0, 1.25}, {3}, DType::f64);
  check_gradients([&](const std::vector<Tensor>& in) { return ops::mse_loss(in[0], target, w); }, {pred});
  check_gradients([&](const std::vector<Tensor>& in) { return ops::scale(ops::mse_loss(in[0], target), 3.0); }, {pred});
  // A target that requires grad gets none.
  Tensor t2 = target.clone().set_requires_grad(true);
  pred.zero_grad();
  ops::mse_loss(pred, t2, w).backward();
  CHECK(pred.grad().defined());
  CHECK_FALSE(t2.grad().defined());
}

TEST_CASE("mse_loss rejects mismatched shapes, weights and dtypes", "[ops][loss][mse][errors]") {
  Tensor p = Tensor::zeros({2, 3});
  CHECK_THROWS_WITH(ops::mse_loss(p, Tensor::zeros({2, 4})),
                    Catch::Contains("mse_loss: pred and target differ in shape: f32[2, 3]") &&
                        Catch::Contains("f32[2, 4]"));
  CHECK_THROWS_WITH(ops::mse_loss(p, Tensor::zeros({2, 3}), Tensor::zeros({3})),
                    Catch::Contains("mse_loss: weight must be [N] = [2] for pred f32[2, 3] cpu, got f32[3]"));
  CHECK_THROWS_WITH(ops::mse_loss(p, Tensor::zeros({2, 3}, DType::f64)), Catch::Contains("mse_loss: tensors disagree"));
  CHECK_THROWS_WITH(ops::mse_loss(p, Tensor::zeros({2, 3}), Tensor::zeros({2}, DType::f64)),
                    Catch::Contains("mse_loss: tensors disagree"));
  CHECK_THROWS_WITH(ops::mse_loss(Tensor::zeros({}), Tensor::zeros({})), Catch::Contains("mse_loss: pred must have a batch dim"));
  CHECK_THROWS_WITH(ops::mse_loss(p, Tensor()), Catch::Contains("mse_loss: target is undefined"));
}
