// Op table rows for nn/ops_group_norm.cpp and nn/ops_attention.cpp.
// group_norm: NHWC and [N, L, C] tokens, with and without the fused per-(n, c) add and SiLU, one
// channel per group, float4 groups (channels per group % 4 == 0) and scalar ones, x with an offset
// mean and a non-trivial affine (gamma 1 ± 0.2) so every grad is exercised; CUDA's chunked
// two-pass path forced on tiny shapes by a lowered shared-memory cap (GroupNormOptions::
// cuda_smem_limit_bytes; the CPU ignores it); a large mean, where one-pass f32 statistics would lose
// the variance. attention: head dims 32, 64, 128 and 256 (the flash kernels) and 48 (which they
// do not take: the GEMM path only), lengths off the 64-row tile, several heads, one key, some of q, k, v
// frozen, and large logits (the softmax must subtract the row max). attention_packed: the same
// kernels reading q, k and v packed in one qkv (flash and GEMM-path head dims, lengths off the
// tiles), and the attention block's fused projection (one linear, weights stacked) against three
// linears, every weight and bias but k's differentiated. CUDA runs the attention rows on each of its
// paths (tests/ops/cuda/test_op_table_cuda.cpp).
#include <cmath>
#include <string>

#include "nn/ops.h"
#include "ops/naive_reference.h"
#include "ops/op_table.h"

namespace diffuse::test::op_table {

namespace {

struct NormCase {
  const char* what;
  Shape x;
  int groups;
  bool silu, add;
  double eps = 1e-5;
  int64_t cuda_smem_limit = 0;  // 0: the device's limit
  bool cpu_only = false;
};

OpRow group_norm_row(const NormCase& c) {
  ops::GroupNormOptions o;
  o.groups = c.groups;
  o.eps = c.eps;
  o.silu = c.silu;
  o.cuda_smem_limit_bytes = c.cuda_smem_limit;
  const int64_t n = c.x.front(), ch = c.x.back();
  std::string name = std::string(c.what) + ": x " + shape_str(c.x) + ", " + std::to_string(c.groups) + " groups" +
                     (c.silu ? ", SiLU" : "") + (c.add ? ", add_nc" : "");
  if (c.cuda_smem_limit) name += ", CUDA shared memory capped at " + std::to_string(c.cuda_smem_limit) + " bytes";
  return {.op = "group_norm",
          .name = name,
          .inputs = {normal(c.x, 2.0, 0.7), normal({ch}, 0.2, 1.0), normal({ch}, 0.2),
                     c.add ? normal({n, ch}) : absent()},
          .run = [o](const Inputs& in) -> Outputs { return {ops::group_norm(in[0], in[1], in[2], o, in[3])}; },
          .reference = [o](const Inputs& in) -> Outputs {
            return {naive::group_norm(in[0], in[1], in[2], o, in[3])};
          },
          .cpu_only = c.cpu_only,
          .bounds = Bounds{}};
}

OpRow attention_row(const std::string& what, const InputSpec& q, const InputSpec& k, const InputSpec& v, int heads) {
  const int64_t d = q.shape.back() / heads;
  return {.op = "attention",
          .name = what + ": " + shape_str(q.shape) + ", " + std::to_string(heads) + " heads of " + std::to_string(d),
          .inputs = {q, k, v},
          .run = [heads](const Inputs& in) -> Outputs { return {ops::attention(in[0], in[1], in[2], heads)}; },
          .reference = [heads](const Inputs& in) -> Outputs {
            return {naive::attention(in[0], in[1], in[2], heads)};
          },
          .bounds = Bounds{}};
}

OpRow attention_row(const std::string& what, const Shape& s, int heads) {
  return attention_row(what, normal(s), normal(s), normal(s), heads);
}

// qkv [N, L, 3W] with W = heads · d.
OpRow attention_packed_row(const std::string& what, const Shape& s, int heads) {
  const int64_t d = s.back() / 3 / heads;
  return {.op = "attention_packed",
          .name = what + ": qkv " + shape_str(s) + ", " + std::to_string(heads) + " heads of " + std::to_string(d),
          .inputs = {normal(s)},
          .run = [heads](const Inputs& in) -> Outputs { return {ops::attention_packed(in[0], heads)}; },
          .reference = [heads](const Inputs& in) -> Outputs { return {naive::attention_packed(in[0], heads)}; },
          .bounds = Bounds{}};
}

// The attention block's fused projection (nn/layers.cpp): one linear with to_q, to_k and to_v's
// weights and biases stacked, into attention_packed, against the unfused composition (three
// linears into attention). Inputs: x [N, L, C], then the three weights [C, C] and biases [C]. k's
// bias adds q·b_k to every score of a row, which the softmax removes: its grad is zero in exact
// arithmetic and rounding noise otherwise, with no peak to compare against, so it is frozen.
OpRow fused_projection_row(const std::string& what, const Shape& x, int heads) {
  const int64_t c = x.back(), d = c / heads;
  const double w_scale = 1.0 / std::sqrt(double(c));
  return {.op = "attention_packed",
          .name = what + ": x " + shape_str(x) + ", " + std::to_string(heads) + " heads of " + std::to_string(d) +
                  ", fused q/k/v projection against three linears",
          .inputs = {normal(x), normal({c, c}, w_scale), normal({c, c}, w_scale), normal({c, c}, w_scale),
                     normal({c}, 0.1), constant({c}, 0.1), normal({c}, 0.1)},
          .run = [heads](const Inputs& in) -> Outputs {
            auto stack = [](const Tensor& a, const Tensor& b, const Tensor& t) {
              auto flat = [](const Tensor& u) { return ops::reshape(u, {u.numel()}); };
              Shape shape = a.shape();
              shape[0] *= 3;
              return ops::reshape(ops::concat_channels(ops::concat_channels(flat(a), flat(b)), flat(t)), shape);
            };
            return {ops::attention_packed(ops::linear(in[0], stack(in[1], in[2], in[3]), stack(in[4], in[5], in[6])),
                                          heads)};
          },
          .reference = [heads](const Inputs& in) -> Outputs {
            return {naive::attention(naive::linear(in[0], in[1], in[4]), naive::linear(in[0], in[2], in[5]),
                                     naive::linear(in[0], in[3], in[6]), heads)};
          },
          .bounds = Bounds{}};
}

}  // namespace

std::vector<OpRow> group_norm_attention_rows() {
  std::vector<OpRow> rows;
  const NormCase norms[] = {
      {"NHWC", {2, 5, 7, 6}, 3, false, false},
      {"NHWC", {2, 5, 7, 6}, 3, true, false},
      {"NHWC", {2, 5, 7, 6}, 3, false, true},
      {"NHWC", {2, 3, 5, 6}, 2, true, true},
      {"tokens [N, L, C]", {3, 5, 4}, 1, false, false},
      {"one channel per group", {2, 3, 3, 4}, 4, true, true},
      {"float4 groups, eps 1e-6", {2, 3, 5, 24}, 3, true, true, 1e-6},
      {"UNet-like 32 groups", {2, 4, 4, 64}, 32, true, true},
      {"chunked: float4 groups", {2, 6, 6, 64}, 16, true, true, 1e-5, 512},
      {"chunked: scalar groups", {2, 5, 7, 24}, 8, true, false, 1e-5, 256},
      {"chunked: chunks that do not divide the rows", {1, 9, 3, 12}, 4, false, true, 1e-5, 128},
      {"chunked: tokens", {2, 33, 64}, 32, false, false, 1e-5, 96},
      // 4 x 16 x 16 x 40 elements take the CPU kernel's OpenMP path.
      {"threaded", {4, 16, 16, 40}, 8, true, true, 1e-5, 0, true},
  };
  for (const NormCase& c : norms) rows.push_back(group_norm_row(c));
  // With one channel per group, normalisation removes whatever add_nc adds: its grad is zero in
  // exact arithmetic and rounding noise otherwise, with no peak to compare against. Frozen there
  // (the other add_nc rows differentiate it).
  for (OpRow& row : rows)
    if (row.name.rfind("one channel per group", 0) == 0) row.inputs[3].grad = false;
  // x = 1000 + N(0, 1): E[x²] − E[x]² in f32 would lose every significant digit of the variance.
  // Forward only: the f32 backward's x − mean carries the same 1000·2⁻²⁴ rounding by design.
  OpRow large_mean = group_norm_row({"large mean", {2, 8, 8, 8}, 4, false, false});
  large_mean.inputs[0] = constant({2, 8, 8, 8}, 1.0, 1000.0);
  large_mean.differentiable = false;
  rows.push_back(large_mean);

  rows.push_back(attention_row("tiny", {2, 5, 6}, 2));
  rows.push_back(attention_row("tiny", {1, 7, 4}, 1));
  rows.push_back(attention_row("tiny, four heads", {2, 3, 12}, 4));
  rows.push_back(attention_row("flash head dim 32", {2, 16, 64}, 2));
  rows.push_back(attention_row("flash head dim 32, length off the tile", {1, 70, 32}, 1));
  rows.push_back(attention_row("flash head dim 64", {1, 9, 128}, 2));
  rows.push_back(attention_row("flash head dim 64, length off the tile", {1, 65, 64}, 1));
  rows.push_back(attention_row("head dim 128", {1, 9, 128}, 1));
  rows.push_back(attention_row("head dim 48 (no flash kernel)", {2, 9, 96}, 2));
  rows.push_back(attention_row("head dim 48, one head, three images", {3, 17, 48}, 1));
  rows.push_back(attention_row("head dim 256 (ddpm-cifar10's one head)", {1, 6, 256}, 1));
  rows.push_back(attention_row("head dim 256, length off the 32-row tile", {2, 33, 512}, 2));
  // One key: the softmax is constant 1, so dq and dk are zero in exact arithmetic and rounding
  // noise otherwise, with no peak to compare against; only v is differentiated.
  rows.push_back(attention_row("one key", constant({1, 1, 3}), constant({1, 1, 3}), normal({1, 1, 3}), 1));
  rows.push_back(attention_row("one key, flash", constant({2, 1, 64}), constant({2, 1, 64}), normal({2, 1, 64}), 2));
  rows.push_back(attention_row("only q differentiated", normal({2, 20, 64}), constant({2, 20, 64}),
                               constant({2, 20, 64}), 2));
  rows.push_back(attention_row("only k and v differentiated", constant({2, 20, 64}), normal({2, 20, 64}),
                               normal({2, 20, 64}), 2));
  // Scores of several hundred: exp overflows f32 (and f64 past ~709) without the max subtraction.
  // f32 scores carry ~400·2⁻²⁴ of rounding, which the softmax passes on: 1e-4, forward only.
  OpRow large = attention_row("large logits", constant({1, 6, 8}, 40.0), constant({1, 6, 8}, 40.0),
                              constant({1, 6, 8}), 2);
  large.differentiable = false;
  large.bounds.cpu_f32 = 1e-4;
  rows.push_back(large);
  // (n, head) pairs run in parallel on the CPU; a single pair of L = 96 runs alone with split GEMMs.
  OpRow pairs = attention_row("threaded (n, head) pairs", {2, 40, 32}, 2);
  OpRow single = attention_row("one long pair (split GEMMs)", {1, 96, 32}, 1);
  pairs.cpu_only = single.cpu_only = true;
  rows.push_back(pairs);
  rows.push_back(single);

  rows.push_back(attention_packed_row("tiny", {2, 5, 18}, 2));
  rows.push_back(attention_packed_row("flash head dim 32", {2, 16, 192}, 2));
  rows.push_back(attention_packed_row("flash head dim 64, length off the tile", {1, 65, 192}, 1));
  rows.push_back(attention_packed_row("head dim 48 (no flash kernel)", {2, 9, 288}, 2));
  rows.push_back(attention_packed_row("head dim 256, length off the 32-row tile", {1, 33, 768}, 1));
  OpRow packed_pairs = attention_packed_row("threaded (n, head) pairs", {2, 40, 192}, 2);
  packed_pairs.cpu_only = true;
  rows.push_back(packed_pairs);
  rows.push_back(fused_projection_row("tiny", {2, 5, 8}, 2));
  rows.push_back(fused_projection_row("flash head dim 32", {2, 9, 64}, 2));
  return rows;
}

}  // namespace diffuse::test::op_table
