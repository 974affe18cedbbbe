// conv2d against a naive NHWC/OHWI loop in f64, its backward against finite differences (and,
// for a batch big enough to split the im2col buffer into chunks, a directional derivative),
// f32 against f64, and the argument errors.
#include <catch2/catch.hpp>
#include <cmath>

#include "nn/autograd.h"
#include "nn/ops.h"
#include "support/gradcheck.h"

using namespace diffuse;

namespace {

Tensor rnd(const Shape& s, uint64_t seed, DType dt = DType::f64) { return Tensor::randn(s, seed, 0, 0, dt); }

// y[n, oh, ow, co] = b[co] + sum over ki, kj, ci of x[n, oh*s - pt + ki, ow*s - pl + kj, ci] * w[co, ki, kj, ci].
Tensor naive_conv(const Tensor& x, const Tensor& w, const Tensor& b, const ops::Conv2dOptions& o) {
  const int64_t N = x.dim(0), H = x.dim(1), W = x.dim(2), Ci = x.dim(3);
  const int64_t Co = w.dim(0), KH = w.dim(1), KW = w.dim(2);
  const int64_t Ho = (H + o.pad_top + o.pad_bottom - KH) / o.stride + 1;
  const int64_t Wo = (W + o.pad_left + o.pad_right - KW) / o.stride + 1;
  auto xv = x.to_vector(), wv = w.to_vector();
  std::vector<double> bv = b.defined() ? b.to_vector() : std::vector<double>(size_t(Co), 0.0);
  std::vector<double> y(size_t(N * Ho * Wo * Co));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow)
        for (int64_t co = 0; co < Co; ++co) {
          double acc = bv[co];
          for (int64_t ki = 0; ki < KH; ++ki)
            for (int64_t kj = 0; kj < KW; ++kj) {
              int64_t ih = oh * o.stride - o.pad_top + ki, iw = ow * o.stride - o.pad_left + kj;
              if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
              for (int64_t ci = 0; ci < Ci; ++ci)
                acc += xv[((n * H + ih) * W + iw) * Ci + ci] * wv[((co * KH + ki) * KW + kj) * Ci + ci];
            }
          y[((n * Ho + oh) * Wo + ow) * Co + co] = acc;
        }
  return Tensor::from(y, {N, Ho, Wo, Co}, DType::f64);
}

struct Case {
  const char* name;
  Shape x, w;
  bool bias;
  ops::Conv2dOptions opt;
};

const Case kCases[] = {
    {"3x3 same padding with bias", {2, 5, 7, 3}, {4, 3, 3, 3}, true, ops::Conv2dOptions::same(3)},
    {"3x3 stride 2 pad (0,1,0,1) (diffusers downsample_padding=0)", {2, 5, 7, 3}, {4, 3, 3, 3}, true, {2, 0, 1, 0, 1}},
    {"3x3 stride 2 pad 1 on even sizes", {2, 6, 6, 4}, {3, 3, 3, 4}, true, ops::Conv2dOptions::same(3, 2)},
    {"1x1 without bias", {2, 5, 7, 6}, {5, 1, 1, 6}, false, {}},
    {"3x3 without padding or bias", {1, 5, 6, 2}, {3, 3, 3, 2}, false, {}},
    {"2x3 kernel stride 2 with uneven padding", {2, 5, 7, 3}, {2, 2, 3, 3}, true, {2, 1, 0, 2, 1}},
    {"1x1 stride 2", {1, 5, 7, 3}, {2, 1, 1, 3}, true, {2, 0, 0, 0, 0}},
};

}  // namespace

TEST_CASE("conv2d forward matches a naive loop, f32 agrees with f64", "[conv]") {
  for (const Case& c : kCases) {
    INFO(c.name);
    Tensor x = rnd(c.x, 1), w = rnd(c.w, 2), b = c.bias ? rnd({c.w[0]}, 3) : Tensor();
    Tensor y = ops::conv2d(x, w, b, c.opt);
    Tensor ref = naive_conv(x, w, b, c.opt);
    REQUIRE(y.shape() == ref.shape());
    CHECK(test::max_abs_error(y, ref) < 1e-12);
    Tensor y32 = ops::conv2d(x.to(DType::f32), w.to(DType::f32), c.bias ? b.to(DType::f32) : Tensor(), c.opt);
    CHECK(y32.dtype() == DType::f32);
    CHECK(test::max_rel_error(y32, ref) < 1e-5);
  }
}

TEST_CASE("conv2d stride 2 with (0,1,0,1) padding has the diffusers output size", "[conv]") {
  Tensor x = Tensor::zeros({1, 8, 8, 2}, DType::f64);
  Tensor w = Tensor::zeros({2, 3, 3, 2}, DType::f64);
  CHECK(ops::conv2d(x, w, Tensor(), {2, 0, 1, 0, 1}).shape() == Shape{1, 4, 4, 2});
  CHECK(ops::conv2d(x, w, Tensor(), ops::Conv2dOptions::same(3, 2)).shape() == Shape{1, 4, 4, 2});
}

TEST_CASE("conv2d backward matches finite differences", "[conv]") {
  for (const Case& c : kCases) {
    INFO(c.name);
    Tensor x = rnd(c.x, 4).set_requires_grad(true);
    Tensor w = rnd(c.w, 5).set_requires_grad(true);
    Tensor b = c.bias ? rnd({c.w[0]}, 6).set_requires_grad(true) : Tensor();
    auto opt = c.opt;
    test::check_gradients(
        [opt](const std::vector<Tensor>& in) { return test::weighted_sum(ops::conv2d(in[0], in[1], in[2], opt)); },
        {x, w, b});
  }
}

TEST_CASE("conv2d backward gives only the grads asked for", "[conv]") {
  Tensor x = rnd({1, 4, 4, 2}, 7);
  Tensor w = rnd({3, 3, 3, 2}, 8).set_requires_grad(true);
  Tensor b = rnd({3}, 9);
  test::weighted_sum(ops::conv2d(x, w, b, ops::Conv2dOptions::same(3))).backward();
  CHECK(w.grad().defined());
  CHECK_FALSE(x.grad().defined());
  CHECK_FALSE(b.grad().defined());
}

// Five 32x32x40 f64 images need about 2.9 MB of columns each; the kernel bounds its column buffer
// at 8 MB, so it runs them as chunks of 2, 2 and 1 images: the forward and the dw accumulated
// over chunks must still be right. The backward is checked along one random direction per input.
TEST_CASE("conv2d splits a large batch into chunks without changing the result", "[conv]") {
  const ops::Conv2dOptions opt = ops::Conv2dOptions::same(3);
  Tensor x = rnd({5, 32, 32, 40}, 10).set_requires_grad(true);
  Tensor w = rnd({3, 3, 3, 40}, 11).set_requires_grad(true);
  Tensor b = rnd({3}, 12).set_requires_grad(true);
  Tensor y = ops::conv2d(x, w, b, opt);
  CHECK(test::max_abs_error(y, naive_conv(x.detach(), w.detach(), b.detach(), opt)) < 1e-10);
  test::weighted_sum(y, 99).backward();
  NoGrad no_grad;
  for (Tensor* t : {&x, &w}) {
    Tensor u = rnd(t->shape(), 13);
    const double eps = 1e-5;
    Tensor keep = t->detach().clone();
    auto loss_at = [&](double s) {
      t->detach().copy_from(ops::add(keep, ops::scale(u, s)));
      return test::weighted_sum(ops::conv2d(x, w, b, opt), 99).item();
    };
    double numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps);
    t->detach().copy_from(keep);
    double analytic = ops::sum(ops::mul(t->grad(), u)).item();
    CHECK(std::fabs(analytic - numeric) < 1e-6 * std::max(1.0, std::fabs(numeric)));
  }
}

TEST_CASE("conv2d rejects bad arguments with one message naming the shapes", "[conv]") {
  Tensor x = Tensor::zeros({2, 5, 7, 3});
  Tensor w = Tensor::zeros({4, 3, 3, 3});
  Tensor b = Tensor::zeros({4});
  auto opt = ops::Conv2dOptions::same(3);
  CHECK_THROWS_WITH(ops::conv2d(x, Tensor::zeros({4, 3, 3, 2}), b, opt),
                    Catch::Contains("conv2d") && Catch::Contains("3 channels") && Catch::Contains("f32[4, 3, 3, 2]"));
  CHECK_THROWS_WITH(ops::conv2d(x, Tensor::zeros({4, 9, 3}), b, opt),
                    Catch::Contains("conv2d") && Catch::Contains("f32[4, 9, 3]"));
  CHECK_THROWS_WITH(ops::conv2d(Tensor::zeros({5, 7, 3}), w, b, opt),
                    Catch::Contains("conv2d") && Catch::Contains("f32[5, 7, 3]"));
  CHECK_THROWS_WITH(ops::conv2d(x, w, Tensor::zeros({3}), opt),
                    Catch::Contains("conv2d") && Catch::Contains("bias must be [4]") && Catch::Contains("f32[3]"));
  CHECK_THROWS_WITH(ops::conv2d(x, w, b, {0, 1, 1, 1, 1}), Catch::Contains("conv2d") && Catch::Contains("stride"));
  CHECK_THROWS_WITH(ops::conv2d(Tensor::zeros({1, 2, 2, 3}), w, b, {}),
                    Catch::Contains("conv2d") && Catch::Contains("larger than the padded input"));
  CHECK_THROWS_WITH(ops::conv2d(x.to(DType::f64), w, b, opt),
                    Catch::Contains("conv2d") && Catch::Contains("f64[2, 5, 7, 3]"));
  CHECK_THROWS_WITH(ops::conv2d(Tensor::zeros({2, 5, 7, 3}, DType::i64), Tensor::zeros({4, 3, 3, 3}, DType::i64),
                                Tensor(), opt),
                    Catch::Contains("conv2d") && Catch::Contains("i64[2, 5, 7, 3]"));
}
