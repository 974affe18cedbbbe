// Dropout and mse_loss (nn/ops_loss.cpp): dropout's determinism in (seed, offset), its drop
// rate and its errors; mse_loss gives no grad to a target that asks for one, and its errors.
// Their forward and backward on every backend (the Philox mask included) are rows of the op table
// (tests/ops/rows_loss_diffusion.cpp).
#include <catch2/catch.hpp>
#include <cmath>

#include "nn/autograd.h"
#include "nn/ops.h"

using namespace diffuse;

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

TEST_CASE("dropout rejects p outside 0 <= p < 1", "[ops][loss][dropout][errors]") {
  Tensor x = Tensor::zeros({2, 3});
  CHECK_THROWS_WITH(ops::dropout(x, 1.0, 1, 0), Catch::Contains("dropout: p must be in [0, 1), got 1.0") &&
                                                   Catch::Contains("f32[2, 3]"));
  CHECK_THROWS_WITH(ops::dropout(x, -0.1, 1, 0), Catch::Contains("dropout: p must be in [0, 1)"));
  CHECK_THROWS_WITH(ops::dropout(x, std::nan(""), 1, 0), Catch::Contains("dropout: p must be in [0, 1)"));
  CHECK_THROWS_WITH(ops::dropout(Tensor::zeros({2}, DType::i64), 0.5, 1, 0), Catch::Contains("dropout: unsupported dtype"));
}

TEST_CASE("mse_loss gives no grad to a target that requires one", "[ops][loss][mse][grad]") {
  Tensor pred = Tensor::randn({3, 1, 5}, 5, 0, 0, DType::f64).set_requires_grad(true);
  Tensor target = Tensor::randn({3, 1, 5}, 6, 0, 0, DType::f64).set_requires_grad(true);
  Tensor w = Tensor::from({0.5, 2.0, 1.25}, {3}, DType::f64);
  ops::mse_loss(pred, target, w).backward();
  CHECK(pred.grad().defined());
  CHECK_FALSE(target.grad().defined());
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
