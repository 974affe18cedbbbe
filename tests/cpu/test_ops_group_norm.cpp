// group_norm (nn/ops_group_norm.cpp): the argument errors. Its forward and backward on every
// backend, the large-mean statistics and threaded sizes included, are rows of the op table
// (tests/ops/rows_group_norm_attention.cpp).
#include <catch2/catch.hpp>

#include "nn/ops.h"

using namespace diffuse;

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
