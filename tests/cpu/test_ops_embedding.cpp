// Embedding ops (nn/ops_embedding.cpp): out-of-range ids and bad arguments, and the sinusoidal
// timestep embedding against numbers printed by diffusers' own get_timestep_embedding. Their
// forward and backward on every backend are rows of the op table (tests/ops/rows_shape_embedding.cpp).
#include <catch2/catch.hpp>

#include "nn/ops.h"
#include "support/gradcheck.h"

using namespace diffuse;
using diffuse::test::max_abs_error;

TEST_CASE("embedding rejects out-of-range ids and bad dtypes with one error", "[ops][embedding][errors]") {
  Tensor table = Tensor::zeros({10, 4});
  CHECK_THROWS_WITH(ops::embedding(table, Tensor::from({1, 10}, {2}, DType::i32)),
                    Catch::Contains("embedding: index 10 at position 1 is outside a table of 10 rows"));
  CHECK_THROWS_WITH(ops::embedding(table, Tensor::from({-1}, {1}, DType::i64)),
                    Catch::Contains("embedding: index -1 at position 0"));
  CHECK_THROWS_WITH(ops::embedding(table, Tensor::from({1}, {1}, DType::f32)),
                    Catch::Contains("embedding: index must be i32 or i64, got f32[1]"));
  CHECK_THROWS_WITH(ops::embedding(table, Tensor::zeros({2, 1}, DType::i32)),
                    Catch::Contains("embedding: index [N] must have rank 1, got i32[2, 1]"));
  CHECK_THROWS_WITH(ops::embedding(Tensor::zeros({10}), Tensor::zeros({2}, DType::i32)),
                    Catch::Contains("embedding: table [V, D] must have rank 2, got f32[10]"));
  CHECK_THROWS_WITH(ops::embedding(Tensor::zeros({10, 4}, DType::i32), Tensor::zeros({2}, DType::i32)),
                    Catch::Contains("embedding: unsupported dtype for i32[10, 4]"));
}

// Printed by diffusers 0.21.4 (get_timestep_embedding is unchanged through 0.42) on torch 1.13:
//   from diffusers.models.embeddings import get_timestep_embedding
//   t = torch.tensor([0., 1., 17., 999.])
//   p = lambda e: print(", ".join("%.9g" % v for v in e.flatten().tolist()))
//   p(get_timestep_embedding(t, 7, flip_sin_to_cos=False, downscale_freq_shift=1))
//   p(get_timestep_embedding(t, 8, flip_sin_to_cos=True, downscale_freq_shift=0))
static const std::vector<double> kTembD7NoFlipShift1 = {
    0, 0, 0, 1, 1, 1, 0,
    0.841470957, 0.00999983307, 9.99999902e-05, 0.540302336, 0.999949992, 1, 0,
    -0.961397529, 0.169182345, 0.00169999897, -0.275163352, 0.985584795, 0.999998569, 0,
    -0.0264607519, -0.535603166, 0.0997339115, 0.999649823, -0.844469845, 0.995014131, 0};
static const std::vector<double> kTembD8FlipShift0 = {
    1, 1, 1, 1, 0, 0, 0, 0,
    0.540302336, 0.995004177, 0.999949992, 0.999999523, 0.841470957, 0.099833414, 0.00999983307, 0.000999999815,
    -0.275163352, -0.128844425, 0.985584736, 0.999855518, -0.961397529, 0.991664827, 0.169182345, 0.0169991795,
    0.999649823, 0.807455063, -0.844469845, 0.541143537, -0.0264607519, -0.589929104, -0.535603166, 0.840930223};

TEST_CASE("timestep_embedding matches diffusers' get_timestep_embedding", "[ops][embedding]") {
  Tensor t = Tensor::from({0, 1, 17, 999}, {4});
  Tensor a = ops::timestep_embedding(t, 7, false, 1.0);
  REQUIRE(a.shape() == Shape{4, 7});
  REQUIRE(a.dtype() == DType::f32);
  // The kernel repeats diffusers' float32 arithmetic; at t = 999 a 1-ulp change of a frequency
  // would move sin by ~6e-5, so agreement to 1e-6 means the same arithmetic.
  CHECK(max_abs_error(a, Tensor::from(kTembD7NoFlipShift1, {4, 7})) < 1e-6);
  Tensor b = ops::timestep_embedding(t, 8, true, 0.0);
  REQUIRE(b.shape() == Shape{4, 8});
  CHECK(max_abs_error(b, Tensor::from(kTembD8FlipShift0, {4, 8})) < 1e-6);
  // Integer timesteps give the same f32 result.
  CHECK(max_abs_error(ops::timestep_embedding(Tensor::from({0, 1, 17, 999}, {4}, DType::i64), 8, true, 0.0), b) == 0);
  CHECK(max_abs_error(ops::timestep_embedding(Tensor::from({0, 1, 17, 999}, {4}, DType::i32), 7, false, 1.0), a) == 0);
}

TEST_CASE("timestep_embedding rejects bad arguments", "[ops][embedding][errors]") {
  Tensor t = Tensor::from({1, 2}, {2});
  CHECK_THROWS_WITH(ops::timestep_embedding(t, 0, false, 1.0), Catch::Contains("timestep_embedding: dim must be positive"));
  CHECK_THROWS_WITH(ops::timestep_embedding(t, 2, false, 1.0), Catch::Contains("timestep_embedding: dim 2 with freq_shift 1"));
  CHECK_THROWS_WITH(ops::timestep_embedding(Tensor::zeros({2, 1}), 8, false, 1.0),
                    Catch::Contains("timestep_embedding: t [N] must have rank 1, got f32[2, 1]"));
  CHECK_THROWS_WITH(ops::timestep_embedding(Tensor::zeros({2}, DType::bf16), 8, false, 1.0),
                    Catch::Contains("timestep_embedding: t must be f32, f64, i32 or i64, got bf16[2]"));
}
