// Shape ops (nn/ops_shape.cpp): the shape errors. Their forward and backward on every backend
// are rows of the op table (tests/ops/rows_shape_embedding.cpp).
#include <catch2/catch.hpp>

#include "nn/ops.h"

using namespace diffuse;

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
