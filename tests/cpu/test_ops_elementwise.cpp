// Element-wise ops (nn/ops_elementwise.cpp): forward against naive loops written here, backward
// against central finite differences in f64, and the broadcast/dtype errors. Broadcast shapes
// cover what the UNet uses: per-channel [C], per-(n, c) [N, 1, 1, C], a scalar [1], same shape.
#include <catch2/catch.hpp>
#include <cmath>

#include "nn/autograd.h"
#include "nn/ops.h"
#include "support/gradcheck.h"

using namespace diffuse;
using diffuse::test::check_gradients;
using diffuse::test::max_rel_error;
using diffuse::test::weighted_sum;

namespace {

// b's flat index for a's flat index i, with b right-aligned against a and broadcast where 1.
int64_t broadcast_index(const Shape& a, const Shape& b, int64_t i) {
  int64_t bi = 0, bstride = 1;
  size_t off = a.size() - b.size();
  for (int k = static_cast<int>(a.size()) - 1; k >= 0; --k) {
    int64_t idx = i % a[k];
    i /= a[k];
    if (k >= static_cast<int>(off)) {
      int64_t bd = b[k - off];
      if (bd != 1) bi += idx * bstride;
      bstride *= bd;
    }
  }
  return bi;
}

enum class Bin { add, sub, mul };

Tensor naive_binary(Bin op, const Tensor& a, const Tensor& b) {
  auto va = a.to_vector(), vb = b.to_vector();
  std::vector<double> out(va.size());
  for (size_t i = 0; i < va.size(); ++i) {
    double x = va[i], y = vb[broadcast_index(a.shape(), b.shape(), static_cast<int64_t>(i))];
    out[i] = op == Bin::add ? x + y : op == Bin::sub ? x - y : x * y;
  }
  return Tensor::from(out, a.shape(), DType::f64);
}

Tensor run_binary(Bin op, const Tensor& a, const Tensor& b) {
  return op == Bin::add ? ops::add(a, b) : op == Bin::sub ? ops::sub(a, b) : ops::mul(a, b);
}

const std::vector<Shape> kBroadcastShapes = {{5}, {2, 1, 1, 5}, {1}, {2, 3, 3, 5}, {3, 1, 5}, {2, 1, 3, 1}, {}, {1, 1, 1, 1}};

}  // namespace

TEST_CASE("add, sub and mul broadcast b over a like a naive loop", "[ops][elementwise]") {
  const Shape as = {2, 3, 3, 5};
  for (DType dt : {DType::f32, DType::f64}) {
    for (const Shape& bs : kBroadcastShapes) {
      Tensor a = Tensor::randn(as, 1, 0, 0, dt);
      Tensor b = Tensor::randn(bs, 2, 0, 0, dt);
      for (Bin op : {Bin::add, Bin::sub, Bin::mul}) {
        INFO("b " << shape_str(bs) << " op " << static_cast<int>(op) << " dtype " << dtype_name(dt));
        Tensor y = run_binary(op, a, b);
        CHECK(y.shape() == as);
        CHECK(y.dtype() == dt);
        CHECK(max_rel_error(y, naive_binary(op, a, b)) < (dt == DType::f32 ? 1e-6 : 1e-15));
      }
    }
  }
}

TEST_CASE("add, sub and mul gradients match finite differences for every broadcast shape", "[ops][elementwise][grad]") {
  const Shape as = {2, 3, 3, 5};
  for (const Shape& bs : kBroadcastShapes) {
    for (Bin op : {Bin::add, Bin::sub, Bin::mul}) {
      INFO("b " << shape_str(bs) << " op " << static_cast<int>(op));
      Tensor a = Tensor::randn(as, 3, 0, 0, DType::f64).set_requires_grad(true);
      Tensor b = Tensor::randn(bs, 4, 0, 0, DType::f64).set_requires_grad(true);
      check_gradients([op](const std::vector<Tensor>& in) { return weighted_sum(run_binary(op, in[0], in[1])); },
                      {a, b});
    }
  }
  // Only one side needing grad still works (mul saves just what it needs).
  Tensor a = Tensor::randn({3, 5}, 5, 0, 0, DType::f64);
  Tensor b = Tensor::randn({5}, 6, 0, 0, DType::f64).set_requires_grad(true);
  check_gradients([](const std::vector<Tensor>& in) { return weighted_sum(ops::mul(in[0], in[1])); }, {a, b});
}

TEST_CASE("broadcasting works when a itself has size-1 dims", "[ops][elementwise][grad]") {
  const Shape as = {3, 1, 4, 1};
  for (const Shape& bs : std::vector<Shape>{{4, 1}, {1, 1, 4, 1}, {3, 1, 1, 1}, {1, 1}, {3, 1, 4, 1}}) {
    for (Bin op : {Bin::add, Bin::sub, Bin::mul}) {
      INFO("b " << shape_str(bs) << " op " << static_cast<int>(op));
      Tensor a = Tensor::randn(as, 9, 0, 0, DType::f64).set_requires_grad(true);
      Tensor b = Tensor::randn(bs, 10, 0, 0, DType::f64).set_requires_grad(true);
      CHECK(max_rel_error(run_binary(op, a, b), naive_binary(op, a, b)) < 1e-15);
      check_gradients([op](const std::vector<Tensor>& in) { return weighted_sum(run_binary(op, in[0], in[1])); },
                      {a, b});
    }
  }
}

TEST_CASE("scale, silu, reshape, sum and mean match naive loops", "[ops][elementwise]") {
  Tensor x = Tensor::randn({3, 7}, 7, 0, 0, DType::f64);
  auto v = x.to_vector();
  std::vector<double> scaled, silu;
  double total = 0;
  for (double e : v) {
    scaled.push_back(-2.5 * e);
    silu.push_back(e / (1.0 + std::exp(-e)));
    total += e;
  }
  CHECK(max_rel_error(ops::scale(x, -2.5), Tensor::from(scaled, x.shape(), DType::f64)) < 1e-15);
  CHECK(max_rel_error(ops::silu(x), Tensor::from(silu, x.shape(), DType::f64)) < 1e-15);
  CHECK(ops::sum(x).shape() == Shape{});
  CHECK(ops::sum(x).item() == Approx(total).epsilon(1e-14));
  CHECK(ops::mean(x).item() == Approx(total / 21).epsilon(1e-14));
  Tensor r = ops::reshape(x, {7, -1});
  CHECK(r.shape() == Shape{7, 3});
  CHECK(r.to_vector() == v);
  // f32 agrees with the f64 result to float precision.
  Tensor xf = x.to(DType::f32);
  CHECK(max_rel_error(ops::silu(xf), Tensor::from(silu, x.shape(), DType::f64)) < 1e-6);
  CHECK(ops::sum(xf).item() == Approx(total).epsilon(1e-6));
}

TEST_CASE("scale, silu, reshape, sum and mean gradients match finite differences", "[ops][elementwise][grad]") {
  Tensor x = Tensor::randn({3, 5, 1, 3}, 8, 0, 0, DType::f64).set_requires_grad(true);
  check_gradients([](const std::vector<Tensor>& in) { return weighted_sum(ops::scale(in[0], 0.3)); }, {x});
  check_gradients([](const std::vector<Tensor>& in) { return weighted_sum(ops::silu(in[0])); }, {x});
  check_gradients([](const std::vector<Tensor>& in) { return weighted_sum(ops::reshape(in[0], {5, -1})); }, {x});
  check_gradients([](const std::vector<Tensor>& in) { return ops::sum(ops::silu(in[0])); }, {x});
  check_gradients([](const std::vector<Tensor>& in) { return ops::mean(ops::mul(in[0], in[0])); }, {x});
}

TEST_CASE("element-wise ops reject shapes that do not broadcast and mixed dtypes", "[ops][elementwise][errors]") {
  Tensor a = Tensor::zeros({2, 3, 4});
  CHECK_THROWS_WITH(ops::add(a, Tensor::zeros({3})), Catch::Contains("add: cannot broadcast [3] over [2, 3, 4]"));
  CHECK_THROWS_WITH(ops::sub(a, Tensor::zeros({2, 1, 3})), Catch::Contains("sub: cannot broadcast [2, 1, 3]"));
  CHECK_THROWS_WITH(ops::mul(a, Tensor::zeros({1, 2, 3, 4})), Catch::Contains("mul: cannot broadcast [1, 2, 3, 4]"));
  CHECK_THROWS_WITH(ops::add(a, Tensor::zeros({4}, DType::f64)), Catch::Contains("add: tensors disagree in dtype"));
  CHECK_THROWS_WITH(ops::mul(a, Tensor()), Catch::Contains("mul: b is undefined"));
  CHECK_THROWS_WITH(ops::silu(Tensor::zeros({2}, DType::i32)), Catch::Contains("silu: unsupported dtype for i32[2]"));
  CHECK_THROWS_WITH(ops::reshape(a, {5, -1}), Catch::Contains("[2, 3, 4]"));
}
