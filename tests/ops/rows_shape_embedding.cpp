// Op table rows for nn/ops_shape.cpp and nn/ops_embedding.cpp: concat_channels of NHWC maps,
// [N, L, C] sequences and vectors (one side frozen: its grad is split off, not needed);
// upsample_nearest2x; embedding with i32 and i64 ids, repeated ids (grads scatter-add into one
// row) and unused rows; the sinusoidal timestep embedding (not differentiable) of f32, f64 and
// integer timesteps, even and odd dims, flipped or not, with a frequency shift of 0 or 1.
// Timesteps stay small: f32 arguments t·freq carry t·2⁻²⁴ of rounding, which at t = 999 is
// diffusers' own f32 arithmetic (checked against its numbers in tests/cpu/test_ops_embedding.cpp),
// not an error against the f64 formula to bound here.
#include <string>

#include "nn/ops.h"
#include "ops/naive_reference.h"
#include "ops/op_table.h"

namespace diffuse::test::op_table {

namespace {

OpRow concat_row(const InputSpec& a, const InputSpec& b) {
  return {.op = "concat_channels",
          .name = shape_str(a.shape) + " and " + shape_str(b.shape) + (a.grad ? "" : " (a frozen)") +
                  (b.grad ? "" : " (b frozen)"),
          .inputs = {a, b},
          .run = [](const Inputs& in) -> Outputs { return {ops::concat_channels(in[0], in[1])}; },
          .reference = [](const Inputs& in) -> Outputs { return {naive::concat_channels(in[0], in[1])}; },
          .bounds = kExactCopy};
}

OpRow embedding_row(const Shape& table, const std::vector<double>& ids, DType id_dtype) {
  return {.op = "embedding",
          .name = "table " + shape_str(table) + ", " + std::string(dtype_name(id_dtype)) + " ids",
          .inputs = {normal(table), fixed(ids, {static_cast<int64_t>(ids.size())}, id_dtype)},
          .run = [](const Inputs& in) -> Outputs { return {ops::embedding(in[0], in[1])}; },
          .reference = [](const Inputs& in) -> Outputs { return {naive::embedding(in[0], in[1])}; },
          .bounds = kExactCopy};
}

OpRow timestep_row(DType t_dtype, int dim, bool flip, double shift) {
  const bool float_t = t_dtype == DType::f32;
  const std::vector<double> ts = float_t ? std::vector<double>{0, 1, 2.5, 17, 40} : std::vector<double>{0, 1, 3, 17, 40};
  return {.op = "timestep_embedding",
          .name = std::string(float_t ? "float" : dtype_name(t_dtype)) + " t, dim " + std::to_string(dim) + (flip ? ", flipped" : "") +
                  ", shift " + std::to_string(static_cast<int>(shift)),
          // f32 timesteps follow the backend's dtype (f64 on CPU f64); integer ones give f32 everywhere.
          .inputs = {fixed(ts, {static_cast<int64_t>(ts.size())}, t_dtype)},
          .run = [dim, flip, shift](const Inputs& in) -> Outputs {
            return {ops::timestep_embedding(in[0], dim, flip, shift)};
          },
          .reference = [dim, flip, shift](const Inputs& in) -> Outputs {
            return {naive::timestep_embedding(in[0], dim, flip, shift)};
          },
          .differentiable = false,
          .bounds = Bounds{}};
}

}  // namespace

std::vector<OpRow> shape_embedding_rows() {
  std::vector<OpRow> rows = {
      concat_row(normal({2, 3, 5, 3}), normal({2, 3, 5, 4})),
      concat_row(normal({1, 2, 2, 32}), normal({1, 2, 2, 16})),
      concat_row(normal({2, 5, 3}), normal({2, 5, 1})),
      concat_row(normal({2}), normal({1})),
      concat_row(constant({2, 3, 1, 3}), normal({2, 3, 1, 5})),
      concat_row(normal({2, 3, 1, 3}), constant({2, 3, 1, 5})),
  };
  for (const Shape& s : std::vector<Shape>{{2, 3, 5, 3}, {1, 2, 3, 2}, {2, 3, 1, 5}, {1, 2, 2, 16}})
    rows.push_back({.op = "upsample_nearest2x",
                    .name = shape_str(s),
                    .inputs = {normal(s)},
                    .run = [](const Inputs& in) -> Outputs { return {ops::upsample_nearest2x(in[0])}; },
                    .reference = [](const Inputs& in) -> Outputs { return {naive::upsample_nearest2x(in[0])}; },
                    .bounds = kExactCopy});
  for (DType id : {DType::i32, DType::i64}) rows.push_back(embedding_row({5, 3}, {4, 0, 2, 4, 1}, id));
  rows.push_back(embedding_row({4, 3}, {3, 1, 3, 3, 0}, DType::i64));  // row 2 unused, row 3 thrice
  rows.push_back(embedding_row({11, 16}, {3, 0, 10, 3, 3, 7}, DType::i64));
  rows.push_back(embedding_row({11, 16}, {10, 10}, DType::i32));
  for (int dim : {1, 6, 9, 32})
    for (bool flip : {false, true})
      for (double shift : {0.0, 1.0}) rows.push_back(timestep_row(DType::f32, dim, flip, shift));
  for (DType t : {DType::i32, DType::i64}) {
    rows.push_back(timestep_row(t, 8, true, 0));
    rows.push_back(timestep_row(t, 7, false, 1));
  }
  return rows;
}

}  // namespace diffuse::test::op_table
