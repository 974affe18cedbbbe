// attention and attention_packed (nn/ops_attention.cpp): the argument errors. Their forwards and
// backwards on every backend, large logits and threaded sizes included, are rows of the op table
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

TEST_CASE("attention_packed rejects bad arguments with one message naming the shape", "[attention]") {
  Tensor qkv = Tensor::zeros({2, 5, 18});
  CHECK_THROWS_WITH(ops::attention_packed(qkv, 4), Catch::Contains("attention_packed") &&
                                                       Catch::Contains("4 heads do not divide the width 6") &&
                                                       Catch::Contains("f32[2, 5, 18]"));
  CHECK_THROWS_WITH(ops::attention_packed(qkv, 0), Catch::Contains("attention_packed") && Catch::Contains("0 heads"));
  CHECK_THROWS_WITH(ops::attention_packed(Tensor::zeros({2, 5, 16}), 2),
                    Catch::Contains("attention_packed") && Catch::Contains("3 * heads * d") &&
                        Catch::Contains("f32[2, 5, 16]"));
  CHECK_THROWS_WITH(ops::attention_packed(Tensor::zeros({10, 18}), 2),
                    Catch::Contains("attention_packed") && Catch::Contains("f32[10, 18]"));
  CHECK_THROWS_WITH(ops::attention_packed(Tensor(), 2), Catch::Contains("attention_packed") && Catch::Contains("qkv"));
  Tensor qi = Tensor::zeros({2, 5, 18}, DType::i64);
  CHECK_THROWS_WITH(ops::attention_packed(qi, 2),
                    Catch::Contains("attention_packed") && Catch::Contains("i64[2, 5, 18]"));
}
