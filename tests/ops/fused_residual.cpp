// The fused residual of conv2d and linear (nn/ops.h: y = op(x, w) + bias + residual in one output
// pass) against its unfused composition on the same backend and dtype: ops::add(residual,
// op(x, w, bias)). The op-table rows (rows_conv_linear.cpp) hold the fused ops to a naive f64
// reference on cpu-f32, cpu-f64 and cuda-f32; this adds bf16 storage on CUDA, which the table does
// not run, and checks the backward exactly: with the same upstream grad the fused op's x, w and
// bias grads are the unfused conv's (the same kernels on the same dy) and the residual's grad is
// dy itself, bit for bit.
#include <catch2/catch.hpp>

#include <functional>
#include <string>

#include "nn/autograd.h"
#include "nn/ops.h"
#include "ops/op_table.h"
#include "support/cuda_compare.h"

namespace diffuse::test::op_table {

namespace {

// A leaf on `device` in `dtype` from N(0, scale) f32 values (bf16: rounded on the device).
Tensor leaf(const Shape& shape, double scale, uint64_t seed, Device device, DType dtype) {
  Tensor t = Tensor::randn(shape, seed);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<float>(p[i] * scale);
  t = t.to(device);
  if (dtype != DType::f32) t = ops::cast(t, dtype).detach();
  return t.set_requires_grad(true);
}

using Op = std::function<Tensor(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& r)>;

struct Case {
  std::string name;
  Shape x, w, b, y;  // b empty: no bias
  Op op;
};

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.defined() && b.defined() && a.shape() == b.shape() && a.to_vector() == b.to_vector();
}

}  // namespace

void check_fused_residual(Device device, DType dtype, double forward_bound) {
  const auto same3 = ops::Conv2dOptions::same(3);
  auto conv = [](ops::Conv2dOptions opt) {
    return [opt](const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& r) {
      return ops::conv2d(x, w, b, opt, r);
    };
  };
  auto linear = [](const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& r) {
    return ops::linear(x, w, b, r);
  };
  const std::vector<Case> cases = {
      {"conv2d 3x3 same (ResnetBlock conv2)", {2, 5, 6, 8}, {8, 3, 3, 8}, {8}, {2, 5, 6, 8}, conv(same3)},
      {"conv2d 3x3 same, 20 channels, no bias", {1, 4, 5, 20}, {20, 3, 3, 20}, {}, {1, 4, 5, 20}, conv(same3)},
      {"conv2d 1x1 (conv_shortcut-shaped)", {2, 3, 5, 6}, {5, 1, 1, 6}, {5}, {2, 3, 5, 5}, conv({})},
      {"conv2d 3x3 downsample", {1, 7, 6, 4}, {4, 3, 3, 4}, {4}, {1, 3, 3, 4}, conv({2, 0, 1, 0, 1})},
      {"linear (AttentionBlock to_out)", {2, 6, 8}, {8, 8}, {8}, {2, 6, 8}, linear},
      {"linear, odd widths, no bias", {3, 7}, {5, 7}, {}, {3, 5}, linear},
  };
  uint64_t seed = 1500;
  for (const Case& c : cases) {
    INFO(c.name << " on " << (device == Device::cuda ? "cuda" : "cpu") << " " << dtype_name(dtype));
    const double fan_in = static_cast<double>(shape_numel(c.w) / c.w[0]);
    auto make = [&](uint64_t s) {
      return std::vector<Tensor>{leaf(c.x, 1, s, device, dtype), leaf(c.w, 1 / std::sqrt(fan_in), s + 1, device, dtype),
                                 c.b.empty() ? Tensor() : leaf(c.b, 0.1, s + 2, device, dtype),
                                 leaf(c.y, 1, s + 3, device, dtype)};
    };
    const std::vector<Tensor> f = make(seed), u = make(seed);  // the same values, separate leaves
    const Tensor dy = leaf(c.y, 1, seed + 4, device, dtype).detach();
    seed += 10;

    // One tape at a time: a backward runs every node recorded since the last one.
    const Tensor fused = c.op(f[0], f[1], f[2], f[3]);
    run_backward(fused, dy);
    const Tensor unfused = ops::add(u[3], c.op(u[0], u[1], u[2], Tensor()));
    run_backward(unfused, dy);
    REQUIRE(fused.dtype() == dtype);
    REQUIRE(fused.device() == device);
    CHECK(rel_to_peak_error(fused, unfused) <= forward_bound);
    for (int i = 0; i < 4; ++i) {
      if (!f[i].defined()) continue;
      INFO("grad of input " << i << " (x, w, bias, residual)");
      CHECK(bit_equal(f[i].grad(), u[i].grad()));
    }
    CHECK(bit_equal(f[3].grad(), dy));
  }
}

void check_fused_residual_errors(Device device) {
  const Tensor x = Tensor::zeros({1, 4, 4, 2}, DType::f32, device), w = Tensor::zeros({3, 3, 3, 2}, DType::f32, device);
  const Tensor b = Tensor::zeros({3}, DType::f32, device);
  const auto same3 = ops::Conv2dOptions::same(3);
  CHECK_THROWS_WITH(ops::conv2d(x, w, b, same3, Tensor::zeros({1, 4, 4, 2}, DType::f32, device)),
                    Catch::Contains("conv2d") && Catch::Contains("residual") &&
                        Catch::Contains("must have the output's shape [1, 4, 4, 3]"));
  CHECK_THROWS_WITH(ops::conv2d(x, w, b, same3, Tensor::zeros({1, 4, 4, 3}, DType::f64, device)),
                    Catch::Contains("conv2d") && Catch::Contains("disagree in dtype or device"));
  const Tensor lx = Tensor::zeros({2, 5}, DType::f32, device), lw = Tensor::zeros({3, 5}, DType::f32, device);
  CHECK_THROWS_WITH(ops::linear(lx, lw, Tensor(), Tensor::zeros({3, 2}, DType::f32, device)),
                    Catch::Contains("linear") && Catch::Contains("must have the output's shape [2, 3]"));
}

}  // namespace diffuse::test::op_table
