// Op table rows for nn/ops_elementwise.cpp: add, sub and mul over every broadcast the UNet uses
// (per-channel [C], per-(n, c) [N, 1, 1, C], a scalar [1], same shape) and odd ones (a with size-1
// dims, b of lower rank, one side not differentiated); add_in_place, scale, silu, reshape, sum and
// mean at aligned (float4) and odd sizes. sum and mean take positive inputs so their result cannot
// cancel towards zero (an error relative to a near-zero peak would measure nothing). cast
// (f32/f64 <-> bf16 storage) as a round trip through bf16.
#include <utility>

#include "nn/ops.h"
#include "ops/naive_reference.h"
#include "ops/op_table.h"

namespace diffuse::test::op_table {

namespace {

struct BinaryOp {
  const char* name;
  naive::Binary kind;
  Tensor (*run)(const Tensor&, const Tensor&);
};
const BinaryOp kBinaryOps[] = {{"add", naive::Binary::add, ops::add},
                               {"sub", naive::Binary::sub, ops::sub},
                               {"mul", naive::Binary::mul, ops::mul}};

OpRow binary_row(const BinaryOp& op, const InputSpec& a, const InputSpec& b) {
  const naive::Binary kind = op.kind;
  const auto run = op.run;
  return {.op = op.name,
          .name = shape_str(a.shape) + " with b " + shape_str(b.shape) + (b.grad ? "" : " (b not differentiated)"),
          .inputs = {a, b},
          .run = [run](const Inputs& in) -> Outputs { return {run(in[0], in[1])}; },
          .reference = [kind](const Inputs& in) -> Outputs { return {naive::binary(kind, in[0], in[1])}; },
          .bounds = kElementRounding};
}

OpRow unary_row(const char* op, const InputSpec& x, Tensor (*run)(const Tensor&), Tensor (*reference)(const Tensor&),
                const Bounds& bounds) {
  return {.op = op,
          .name = shape_str(x.shape),
          .inputs = {x},
          .run = [run](const Inputs& in) -> Outputs { return {run(in[0])}; },
          .reference = [reference](const Inputs& in) -> Outputs { return {reference(in[0])}; },
          .bounds = bounds};
}

}  // namespace

std::vector<OpRow> elementwise_rows() {
  std::vector<OpRow> rows;
  // (a, b): b's shapes right-aligned against a; a itself with size-1 dims; UNet-sized aligned
  // channels (float4 paths) and odd ones (scalar tails).
  const std::vector<std::pair<Shape, Shape>> broadcasts = {
      {{2, 3, 3, 5}, {5}},          {{2, 3, 3, 5}, {2, 1, 1, 5}}, {{2, 3, 3, 5}, {1}},
      {{2, 3, 3, 5}, {2, 3, 3, 5}}, {{2, 3, 3, 5}, {3, 1, 5}},    {{2, 3, 3, 5}, {2, 1, 3, 1}},
      {{2, 3, 3, 5}, {}},           {{2, 3, 3, 5}, {1, 1, 1, 1}}, {{3, 1, 4, 1}, {4, 1}},
      {{3, 1, 4, 1}, {1, 1, 4, 1}}, {{3, 1, 4, 1}, {3, 1, 1, 1}}, {{3, 1, 4, 1}, {1, 1}},
      {{2, 4, 4, 8}, {8}},          {{2, 4, 4, 8}, {2, 1, 1, 8}}, {{2, 4, 4, 8}, {2, 4, 4, 8}},
      {{4, 32}, {32}}};
  for (const BinaryOp& op : kBinaryOps) {
    for (const auto& [a, b] : broadcasts) rows.push_back(binary_row(op, normal(a), normal(b)));
    // Only one side differentiated (mul saves just what it needs).
    rows.push_back(binary_row(op, normal({3, 5}), constant({5})));
    rows.push_back(binary_row(op, constant({3, 5}), normal({5})));
  }

  const std::vector<Shape> shapes = {{7}, {3, 5, 1, 3}, {2, 4, 4, 8}, {3, 5, 7, 3}};
  // add_in_place (the tape's gradient sums): into a copy of a, so the row's inputs stay as made.
  for (const Shape& s : shapes)
    rows.push_back({.op = "add_in_place",
                    .name = shape_str(s),
                    .inputs = {constant(s), constant(s, 2.0)},
                    .run = [](const Inputs& in) -> Outputs {
                      Tensor a = in[0].clone();
                      ops::add_in_place(a, in[1]);
                      return {a};
                    },
                    .reference = [](const Inputs& in) -> Outputs { return {naive::binary(naive::Binary::add, in[0], in[1])}; },
                    .differentiable = false,
                    .bounds = kElementRounding});
  for (const Shape& s : shapes) {
    rows.push_back({.op = "scale",
                    .name = shape_str(s) + " by -2.5",
                    .inputs = {normal(s)},
                    .run = [](const Inputs& in) -> Outputs { return {ops::scale(in[0], -2.5)}; },
                    .reference = [](const Inputs& in) -> Outputs { return {naive::scale(in[0], -2.5)}; },
                    .bounds = kElementRounding});
    rows.push_back(unary_row("silu", normal(s, 3.0), ops::silu, naive::silu, kElementRounding));
  }
  // cast: to bf16 and back is a rounding to 8 significant bits, exact against the naive rounding on
  // every backend (inputs are f32 values, so f64 -> bf16 rounds once too); a round trip is
  // piecewise constant, so it is not differentiated here (tests/cuda/test_bf16_autocast.cpp checks
  // that grads come back through casts in the master weights' dtype). A cast to the input's own
  // dtype is the identity, grad included.
  for (const Shape& s : std::vector<Shape>{{7}, {2, 4, 4, 8}, {3, 5, 7, 3}}) {
    rows.push_back({.op = "cast",
                    .name = shape_str(s) + " to bf16 and back",
                    .inputs = {constant(s, 3.0)},
                    .run = [](const Inputs& in) -> Outputs {
                      return {ops::cast(ops::cast(in[0], DType::bf16), in[0].dtype())};
                    },
                    .reference = [](const Inputs& in) -> Outputs { return {naive::round_to_bf16(in[0])}; },
                    .differentiable = false,
                    .bounds = kExactCopy});
  }
  rows.push_back({.op = "cast",
                  .name = "[3, 5] to its own dtype",
                  .inputs = {normal({3, 5})},
                  .run = [](const Inputs& in) -> Outputs { return {ops::cast(in[0], in[0].dtype())}; },
                  .reference = [](const Inputs& in) -> Outputs { return {in[0].to(DType::f64)}; },
                  .bounds = kExactCopy});
  // A sum within 1e-6 of its value in f32 (the bound of the per-op test the table replaced).
  const Bounds reduction{1e-12, 1e-6, 1e-3};
  for (const Shape& s : std::vector<Shape>{{1}, {7}, {3, 5, 7, 3}, {2, 4, 4, 8}}) {
    rows.push_back(unary_row("sum", positive(s), ops::sum, naive::sum, reduction));
    rows.push_back(unary_row("mean", positive(s), ops::mean, naive::mean, reduction));
  }
  rows.push_back({.op = "reshape",
                  .name = "[3, 5, 1, 3] to [5, -1]",
                  .inputs = {normal({3, 5, 1, 3})},
                  .run = [](const Inputs& in) -> Outputs { return {ops::reshape(in[0], {5, -1})}; },
                  .reference = [](const Inputs& in) -> Outputs { return {in[0].view({5, 9})}; },
                  .bounds = kExactCopy});
  // A view: the grad must flow back through it into the op before, and silu after it sees the data.
  rows.push_back({.op = "reshape",
                  .name = "[2, 4, 4, 8] to [2, 16, 8], then silu",
                  .inputs = {normal({2, 4, 4, 8})},
                  .run = [](const Inputs& in) -> Outputs { return {ops::silu(ops::reshape(in[0], {2, 16, 8}))}; },
                  .reference = [](const Inputs& in) -> Outputs { return {naive::silu(in[0].view({2, 16, 8}))}; },
                  .bounds = kElementRounding});
  return rows;
}

}  // namespace diffuse::test::op_table
