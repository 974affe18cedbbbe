// Element-wise ops (nn/ops_elementwise.cpp): the broadcast and dtype errors. Their forward and
// backward on every backend are rows of the op table (tests/ops/rows_elementwise.cpp).
#include <catch2/catch.hpp>

#include "nn/ops.h"

using namespace diffuse;

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
