// Op table rows for nn/ops_conv.cpp and nn/ops_linear.cpp: conv2d 3x3 with same padding, stride 2
// with both of diffusers' downsample paddings (1 and the asymmetric (0,1,0,1)), 1x1 (ResnetBlock's
// conv_shortcut), uneven kernels and paddings, with and without bias, with some inputs frozen
// (only the grads asked for); linear on rank-1 to rank-3 inputs, odd widths, with and without bias.
// The fused residual (conv2d's and linear's `residual`, ResnetBlock's and AttentionBlock's skip)
// has rows of its own, against the unfused composition (the naive conv or linear, then a naive
// add): with and without bias, the residual alone differentiated, the paths that start y from the
// residual (implicit GEMM, 1x1 through linear, f64 im2col chunks). Weights are scaled by 1/√fan_in
// so outputs stay O(1). The cpu_only rows are the sizes at which
// the CPU kernels split their work (conv2d's im2col chunks; linear's threaded bias grad and GEMM
// split by columns).
#include <cmath>
#include <string>

#include "nn/ops.h"
#include "ops/naive_reference.h"
#include "ops/op_table.h"

namespace diffuse::test::op_table {

namespace {

std::string pads(const ops::Conv2dOptions& o) {
  return "stride " + std::to_string(o.stride) + " pad (" + std::to_string(o.pad_top) + "," +
         std::to_string(o.pad_bottom) + "," + std::to_string(o.pad_left) + "," + std::to_string(o.pad_right) + ")";
}

// x [N, H, W, Cin] by w [cout, k, k(w), Cin]; which of x, w, bias are differentiated is up to the specs.
OpRow conv_row(const std::string& what, const InputSpec& x, const InputSpec& w, const InputSpec& b,
               const ops::Conv2dOptions& opt, bool cpu_only = false) {
  return {.op = "conv2d",
          .name = what + ": x " + shape_str(x.shape) + " w " + shape_str(w.shape) + " " + pads(opt) +
                  (b.kind == InputSpec::Kind::absent ? " no bias" : " bias"),
          .inputs = {x, w, b},
          .run = [opt](const Inputs& in) -> Outputs { return {ops::conv2d(in[0], in[1], in[2], opt)}; },
          .reference = [opt](const Inputs& in) -> Outputs { return {naive::conv2d(in[0], in[1], in[2], opt)}; },
          .cpu_only = cpu_only,
          .bounds = Bounds{}};
}

// y = conv(x, w) + bias + residual, the residual of the output's shape.
OpRow conv_residual_row(const std::string& what, const InputSpec& x, const InputSpec& w, const InputSpec& b,
                        const InputSpec& r, const ops::Conv2dOptions& opt, bool cpu_only = false) {
  OpRow row = conv_row(what, x, w, b, opt, cpu_only);
  row.name += " + residual";
  row.inputs.push_back(r);
  row.run = [opt](const Inputs& in) -> Outputs { return {ops::conv2d(in[0], in[1], in[2], opt, in[3])}; };
  row.reference = [opt](const Inputs& in) -> Outputs {
    return {naive::binary(naive::Binary::add, naive::conv2d(in[0], in[1], in[2], opt), in[3])};
  };
  return row;
}

InputSpec conv_weight(int64_t cout, int64_t kh, int64_t kw, int64_t cin, bool grad = true) {
  InputSpec w = normal({cout, kh, kw, cin}, 1 / std::sqrt(static_cast<double>(kh * kw * cin)));
  w.grad = grad;
  return w;
}

OpRow linear_row(const std::string& what, const InputSpec& x, const InputSpec& w, const InputSpec& b,
                 bool cpu_only = false) {
  return {.op = "linear",
          .name = what + ": x " + shape_str(x.shape) + " w " + shape_str(w.shape) +
                  (b.kind == InputSpec::Kind::absent ? " no bias" : " bias"),
          .inputs = {x, w, b},
          .run = [](const Inputs& in) -> Outputs { return {ops::linear(in[0], in[1], in[2])}; },
          .reference = [](const Inputs& in) -> Outputs { return {naive::linear(in[0], in[1], in[2])}; },
          .cpu_only = cpu_only,
          .bounds = Bounds{}};
}

OpRow linear_residual_row(const std::string& what, const InputSpec& x, const InputSpec& w, const InputSpec& b,
                          const InputSpec& r) {
  OpRow row = linear_row(what, x, w, b);
  row.name += " + residual";
  row.inputs.push_back(r);
  row.run = [](const Inputs& in) -> Outputs { return {ops::linear(in[0], in[1], in[2], in[3])}; };
  row.reference = [](const Inputs& in) -> Outputs {
    return {naive::binary(naive::Binary::add, naive::linear(in[0], in[1], in[2]), in[3])};
  };
  return row;
}

InputSpec linear_weight(int64_t out, int64_t in, bool grad = true) {
  InputSpec w = normal({out, in}, 1 / std::sqrt(static_cast<double>(in)));
  w.grad = grad;
  return w;
}

}  // namespace

std::vector<OpRow> conv_linear_rows() {
  const auto same3 = ops::Conv2dOptions::same(3);
  const InputSpec bias4 = normal({4}, 0.1), no_bias = absent();
  std::vector<OpRow> rows = {
      conv_row("3x3 same", normal({2, 5, 7, 3}), conv_weight(4, 3, 3, 3), bias4, same3),
      conv_row("3x3 downsample_padding 0", normal({2, 5, 7, 3}), conv_weight(4, 3, 3, 3), bias4, {2, 0, 1, 0, 1}),
      conv_row("3x3 downsample_padding 0, odd sizes", normal({1, 9, 7, 5}), conv_weight(6, 3, 3, 5), normal({6}, 0.1),
               {2, 0, 1, 0, 1}),
      conv_row("3x3 downsample_padding 1 on even sizes", normal({2, 6, 6, 4}), conv_weight(3, 3, 3, 4),
               normal({3}, 0.1), ops::Conv2dOptions::same(3, 2)),
      conv_row("1x1", normal({2, 5, 7, 6}), conv_weight(5, 1, 1, 6), no_bias, {}),
      conv_row("1x1, aligned channels", normal({1, 4, 4, 16}), conv_weight(8, 1, 1, 16), normal({8}, 0.1), {}),
      conv_row("3x3 unpadded", normal({1, 5, 6, 2}), conv_weight(3, 3, 3, 2), no_bias, {}),
      conv_row("2x3 kernel, uneven padding", normal({2, 5, 7, 3}), conv_weight(2, 2, 3, 3), normal({2}, 0.1),
               {2, 1, 0, 2, 1}),
      conv_row("1x1 stride 2", normal({1, 5, 7, 3}), conv_weight(2, 1, 1, 3), normal({2}, 0.1), {2, 0, 0, 0, 0}),
      conv_row("3x3 same, aligned channels", normal({1, 4, 4, 16}), conv_weight(8, 3, 3, 16), normal({8}, 0.1), same3),
      // 16 channels or more per tap: forward (and dx, when Cout has as many) read x (dy) in place
      // through a table of rows (kernels/cpu/conv2d.cpp WindowRowsA): padding, the stride-2
      // downsample's sparse dx rows, and 48 channels whose 9 taps span two reduction blocks.
      conv_row("3x3 downsample, 16 channels in and out", normal({2, 7, 6, 16}), conv_weight(16, 3, 3, 16),
               normal({16}, 0.1), {2, 0, 1, 0, 1}),
      conv_row("3x3 same, 48 channels in, 20 out, odd sizes", normal({1, 7, 9, 48}), conv_weight(20, 3, 3, 48),
               normal({20}, 0.1), same3),
      // Only the grads asked for: conv_in's x needs none; a frozen weight and bias; the bias alone.
      conv_row("x not differentiated", constant({1, 4, 4, 2}), conv_weight(3, 3, 3, 2), normal({3}, 0.1), same3),
      conv_row("frozen weight and bias", normal({1, 4, 4, 2}), conv_weight(3, 3, 3, 2, false), constant({3}, 0.1),
               same3),
      conv_row("only the bias", constant({1, 4, 4, 2}), conv_weight(3, 3, 3, 2, false), normal({3}, 0.1), same3),
      // Five 32x32x40 f64 images need ~2.9 MB of columns each; the kernel bounds its column buffer
      // at 8 MB, so it runs chunks of 2, 2 and 1 images, accumulating dw over chunks.
      conv_row("a batch split into im2col chunks", normal({5, 32, 32, 40}), conv_weight(3, 3, 3, 40), normal({3}, 0.1),
               same3, true),
      // The fused residual: ResnetBlock's conv2 (3x3 same, the skip of the output's shape), the
      // 1x1 path (linear's GEMM), a strided conv, 16+ channels (the in-place window rows), no
      // bias, a frozen residual and the residual alone differentiated, and the f64 chunks.
      conv_residual_row("3x3 same", normal({2, 5, 7, 3}), conv_weight(4, 3, 3, 3), bias4, normal({2, 5, 7, 4}), same3),
      conv_residual_row("1x1", normal({2, 5, 7, 6}), conv_weight(5, 1, 1, 6), normal({5}, 0.1), normal({2, 5, 7, 5}),
                        {}),
      conv_residual_row("3x3 downsample_padding 0", normal({1, 9, 7, 5}), conv_weight(6, 3, 3, 5), no_bias,
                        normal({1, 4, 3, 6}), {2, 0, 1, 0, 1}),
      conv_residual_row("3x3 same, 48 channels in, 20 out", normal({1, 5, 6, 48}), conv_weight(20, 3, 3, 48),
                        normal({20}, 0.1), normal({1, 5, 6, 20}), same3),
      conv_residual_row("frozen residual", normal({1, 4, 4, 2}), conv_weight(3, 3, 3, 2), normal({3}, 0.1),
                        constant({1, 4, 4, 3}), same3),
      conv_residual_row("only the residual", constant({1, 4, 4, 2}), conv_weight(3, 3, 3, 2, false),
                        constant({3}, 0.1), normal({1, 4, 4, 3}), same3),
      conv_residual_row("a batch split into im2col chunks", normal({5, 32, 32, 40}), conv_weight(3, 3, 3, 40),
                        normal({3}, 0.1), normal({5, 32, 32, 3}), same3, true),
      linear_row("rank 3", normal({2, 3, 5}), linear_weight(4, 5), normal({4}, 0.1)),
      linear_row("rank 2", normal({7, 5}), linear_weight(3, 5), absent()),
      linear_row("rank 1", normal({5}), linear_weight(6, 5), normal({6}, 0.1)),
      linear_row("one feature", normal({3, 1}), linear_weight(2, 1), normal({2}, 0.1)),
      linear_row("odd widths", normal({2, 17, 32}), linear_weight(48, 32), normal({48}, 0.1)),
      linear_row("odd widths", normal({3, 5, 33}), linear_weight(7, 33), absent()),
      linear_row("time-embedding MLP row", normal({2, 32}), linear_weight(64, 32), normal({64}, 0.1)),
      linear_row("x not differentiated", constant({6, 32}), linear_weight(16, 32), normal({16}, 0.1)),
      linear_row("frozen weight", normal({6, 32}), linear_weight(16, 32, false), absent()),
      linear_row("many rows (threaded bias grad)", normal({64, 40, 24}), linear_weight(16, 24), normal({16}, 0.1), true),
      linear_row("few rows, many outputs (GEMM split by columns)", normal({3, 64}), linear_weight(2048, 64),
                 normal({2048}, 0.1), true),
      // The fused residual: AttentionBlock's to_out ([N, L, C] tokens), no bias, rank 1, a frozen
      // residual, the residual alone differentiated.
      linear_residual_row("attention to_out", normal({2, 6, 8}), linear_weight(8, 8), normal({8}, 0.1),
                          normal({2, 6, 8})),
      linear_residual_row("odd widths", normal({3, 5, 33}), linear_weight(7, 33), absent(), normal({3, 5, 7})),
      linear_residual_row("rank 1", normal({5}), linear_weight(6, 5), normal({6}, 0.1), normal({6})),
      linear_residual_row("frozen residual", normal({4, 16}), linear_weight(12, 16), normal({12}, 0.1),
                          constant({4, 12})),
      linear_residual_row("only the residual", constant({4, 16}), linear_weight(12, 16, false), constant({12}, 0.1),
                          normal({4, 12})),
  };
  return rows;
}

}  // namespace diffuse::test::op_table
