// attention (nn/ops_attention.cpp): the argument errors. Its forward and backward on every
// backend, large logits and threaded sizes included, are rows of the op table
// (tests/ops/rows_group_norm_attention.cpp).
#include <catch2/catch.hpp>

#include "nn/ops.h"

using namespace diffuse;

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
