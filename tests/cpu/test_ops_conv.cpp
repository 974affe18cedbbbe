// conv2d (nn/ops_conv.cpp): diffusers' downsample output sizes and the argument errors. Its
// forward and backward on every backend, chunked batches included, are rows of the op table
// (tests/ops/rows_conv_linear.cpp).
#include <catch2/catch.hpp>

#include "nn/ops.h"

using namespace diffuse;

TEST_CASE("conv2d stride 2 with (0,1,0,1) padding has the diffusers output size", "[conv]") {
  Tensor x = Tensor::zeros({1, 8, 8, 2}, DType::f64);
  Tensor w = Tensor::zeros({2, 3, 3, 2}, DType::f64);
  CHECK(ops::conv2d(x, w, Tensor(), {2, 0, 1, 0, 1}).shape() == Shape{1, 4, 4, 2});
  CHECK(ops::conv2d(x, w, Tensor(), ops::Conv2dOptions::same(3, 2)).shape() == Shape{1, 4, 4, 2});
}

TEST_CASE("conv2d rejects bad arguments with one message naming the shapes", "[conv]") {
  Tensor x = Tensor::zeros({2, 5, 7, 3});
  Tensor w = Tensor::zeros({4, 3, 3, 3});
  Tensor b = Tensor::zeros({4});
  auto opt = ops::Conv2dOptions::same(3);
  CHECK_THROWS_WITH(ops::conv2d(x, Tensor::zeros({4, 3, 3, 2}), b, opt),
                    Catch::Contains("conv2d") && Catch::Contains("3 channels") && Catch::Contains("f32[4, 3, 3, 2]"));
  CHECK_THROWS_WITH(ops::conv2d(x, Tensor::zeros({4, 9, 3}), b, opt),
                    Catch::Contains("conv2d") && Catch::Contains("f32[4, 9, 3]"));
  CHECK_THROWS_WITH(ops::conv2d(Tensor::zeros({5, 7, 3}), w, b, opt),
                    Catch::Contains("conv2d") && Catch::Contains("f32[5, 7, 3]"));
  CHECK_THROWS_WITH(ops::conv2d(x, w, Tensor::zeros({3}), opt),
                    Catch::Contains("conv2d") && Catch::Contains("bias must be [4]") && Catch::Contains("f32[3]"));
  CHECK_THROWS_WITH(ops::conv2d(x, w, b, {0, 1, 1, 1, 1}), Catch::Contains("conv2d") && Catch::Contains("stride"));
  CHECK_THROWS_WITH(ops::conv2d(Tensor::zeros({1, 2, 2, 3}), w, b, {}),
                    Catch::Contains("conv2d") && Catch::Contains("larger than the padded input"));
  CHECK_THROWS_WITH(ops::conv2d(x.to(DType::f64), w, b, opt),
                    Catch::Contains("conv2d") && Catch::Contains("f64[2, 5, 7, 3]"));
  CHECK_THROWS_WITH(ops::conv2d(Tensor::zeros({2, 5, 7, 3}, DType::i64), Tensor::zeros({4, 3, 3, 3}, DType::i64),
                                Tensor(), opt),
                    Catch::Contains("conv2d") && Catch::Contains("i64[2, 5, 7, 3]"));
}
