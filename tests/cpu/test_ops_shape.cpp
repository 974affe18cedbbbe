// Shape ops (nn/ops_shape.cpp): concat along the last dim and nearest 2x upsampling, forward
// against naive index loops, backward against finite differences in f64, and shape errors.
#include <catch2/catch.hpp>

#include "nn/autograd.h"
#include "nn/ops.h"
#include "support/gradcheck.h"

using namespace diffuse;
using diffuse::test::check_gradients;
using diffuse::test::max_abs_error;
using diffuse::test::weighted_sum;

TEST_CASE("concat_channels places a's channels before b's in every row", "[ops][shape]") {
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor a = Tensor::randn({2, 3, 5, 3}, 1, 0, 0, dt);
    Tensor b = Tensor::randn({2, 3, 5, 4}, 2, 0, 0, dt);
    Tensor y = ops::concat_channels(a, b);
    REQUIRE(y.shape() == Shape{2, 3, 5, 7});
    auto va = a.to_vector(), vb = b.to_vector(), vy = y.to_vector();
    std::vector<double> expect;
    for (int64_t r = 0; r < 30; ++r) {
      for (int c = 0; c < 3; ++c) expect.push_back(va[r * 3 + c]);
      for (int c = 0; c < 4; ++c) expect.push_back(vb[r * 4 + c]);
    }
    CHECK(vy == expect);
  }
  // [N, L, C] sequences and rank-1 vectors work too.
  CHECK(ops::concat_channels(Tensor::zeros({2, 5, 3}), Tensor::zeros({2, 5, 1})).shape() == Shape{2, 5, 4});
  CHECK(ops::concat_channels(Tensor::from({1, 2}, {2}), Tensor::from({3}, {1})).to_vector() ==
        std::vector<double>{1, 2, 3});
}

TEST_CASE("concat_channels backward splits the grad (finite differences)", "[ops][shape][grad]") {
  Tensor a = Tensor::randn({2, 3, 1, 3}, 3, 0, 0, DType::f64).set_requires_grad(true);
  Tensor b = Tensor::randn({2, 3, 1, 5}, 4, 0, 0, DType::f64).set_requires_grad(true);
  auto f = [](const std::vector<Tensor>& in) { return weighted_sum(ops::concat_channels(in[0], in[1])); };
  check_gradients(f, {a, b});
  // Only one input needing grad.
  check_gradients(f, {a.detach(), b});
  check_gradients(f, {a, b.detach()});
}

TEST_CASE("upsample_nearest2x copies each pixel into a 2x2 block", "[ops][shape]") {
  for (DType dt : {DType::f32, DType::f64}) {
    const int64_t N = 2, H = 3, W = 5, C = 3;
    Tensor x = Tensor::randn({N, H, W, C}, 5, 0, 0, dt);
    Tensor y = ops::upsample_nearest2x(x);
    REQUIRE(y.shape() == Shape{N, 2 * H, 2 * W, C});
    auto vx = x.to_vector(), vy = y.to_vector();
    std::vector<double> expect;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < 2 * H; ++i)
        for (int64_t j = 0; j < 2 * W; ++j)
          for (int64_t c = 0; c < C; ++c) expect.push_back(vx[((n * H + i / 2) * W + j / 2) * C + c]);
    CHECK(vy == expect);
  }
}

TEST_CASE("upsample_nearest2x backward sums the four children (finite differences)", "[ops][shape][grad]") {
  Tensor x = Tensor::randn({2, 3, 1, 5}, 6, 0, 0, DType::f64).set_requires_grad(true);
  check_gradients([](const std::vector<Tensor>& in) { return weighted_sum(ops::upsample_nearest2x(in[0])); }, {x});
  // And the exact value: with an all-ones upstream grad every input pixel receives 4.
  Tensor z = Tensor::randn({1, 2, 3, 2}, 7, 0, 0, DType::f64).set_requires_grad(true);
  ops::sum(ops::upsample_nearest2x(z)).backward();
  CHECK(max_abs_error(z.grad(), Tensor::full({1, 2, 3, 2}, 4.0, DType::f64)) == 0.0);
}

TEST_CASE("shape ops reject mismatched inputs with one error naming op and shapes", "[ops][shape][errors]") {
  CHECK_THROWS_WITH(ops::concat_channels(Tensor::zeros({2, 4, 4, 3}), Tensor::zeros({2, 4, 5, 3})),
                    Catch::Contains("concat_channels: inputs must agree in every dim but the last") &&
                        Catch::Contains("f32[2, 4, 4, 3]") && Catch::Contains("f32[2, 4, 5, 3]"));
  CHECK_THROWS_WITH(ops::concat_channels(Tensor::zeros({2, 4, 3}), Tensor::zeros({2, 4, 4, 3})),
                    Catch::Contains("concat_channels: inputs must agree"));
  CHECK_THROWS_WITH(ops::concat_channels(Tensor::zeros({2, 3}), Tensor::zeros({2, 3}, DType::f64)),
                    Catch::Contains("concat_channels: tensors disagree in dtype"));
  CHECK_THROWS_WITH(ops::concat_channels(Tensor::zeros({2, 3}, DType::i32), Tensor::zeros({2, 3}, DType::i32)),
                    Catch::Contains("concat_channels: unsupported dtype"));
  CHECK_THROWS_WITH(ops::upsample_nearest2x(Tensor::zeros({2, 4, 4})),
                    Catch::Contains("upsample_nearest2x: x (NHWC) must have rank 4, got f32[2, 4, 4]"));
  CHECK_THROWS_WITH(ops::upsample_nearest2x(Tensor()), Catch::Contains("upsample_nearest2x: x is undefined"));
}
