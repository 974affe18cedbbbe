// linear (nn/ops_linear.cpp): the argument errors. Its forward and backward on every backend,
// threaded and column-split sizes included, are rows of the op table (tests/ops/rows_conv_linear.cpp).
#include <catch2/catch.hpp>

#include "nn/ops.h"

using namespace diffuse;

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
