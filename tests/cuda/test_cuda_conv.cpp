// conv2d on a CUDA device (cuDNN, kernels/cuda/conv2d.cpp; a GPU or the emulated device) against the CPU
// implementation in f64: forward and all three gradients into NaN-poisoned outputs, f32 (no TF32:
// 2e-4) and bf16 (1e-2 of the tensor's scale), including diffusers' stride-2 (0, 1, 0, 1)
// downsample, with the algorithms chosen by timing and by cuDNN's heuristics; the algorithm
// search runs once per shape and mode; the op and its autograd node dispatch to the device.
#include <catch2/catch.hpp>

#include "cuda_test_util.h"
#include "kernels/conv2d.h"
#include "nn/autograd.h"
#include "nn/ops.h"
#include "support/gradcheck.h"

using namespace diffuse;
namespace k = diffuse::kernels;

namespace {

struct Case {
  const char* name;
  Shape x, w;
  ops::Conv2dOptions opt;
};

const Case kCases[] = {
    {"3x3 same padding", {2, 5, 7, 3}, {4, 3, 3, 3}, ops::Conv2dOptions::same(3)},
    {"3x3 stride 2 pad (0,1,0,1), the diffusers downsample", {2, 6, 8, 8}, {8, 3, 3, 8}, {2, 0, 1, 0, 1}},
    {"3x3 stride 2 pad (0,1,0,1) on odd sizes", {1, 7, 5, 3}, {5, 3, 3, 3}, {2, 0, 1, 0, 1}},
    {"3x3 stride 2 pad 1", {2, 6, 6, 4}, {3, 3, 3, 4}, ops::Conv2dOptions::same(3, 2)},
    {"1x1 pointwise", {2, 5, 7, 6}, {5, 1, 1, 6}, {}},
    {"2x3 kernel with uneven padding on both axes", {2, 5, 7, 3}, {2, 2, 3, 3}, {2, 1, 0, 2, 1}},
};

k::Conv2dDesc desc_of(const Shape& x, const Shape& w, const ops::Conv2dOptions& o) {
  k::Conv2dDesc d;
  d.n = x[0], d.h = x[1], d.w = x[2], d.cin = x[3];
  d.cout = w[0], d.kh = w[1], d.kw = w[2];
  d.stride = o.stride;
  d.pad_top = o.pad_top, d.pad_bottom = o.pad_bottom, d.pad_left = o.pad_left, d.pad_right = o.pad_right;
  return d;
}

struct Grads {
  Tensor y, dx, dw, db;
};

// The CPU reference in f64 from the same (dtype-rounded) values.
Grads cpu_reference(const k::Conv2dDesc& d, const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& dy) {
  Tensor x64 = x.to(DType::f64), w64 = w.to(DType::f64), b64 = b.to(DType::f64), dy64 = dy.to(DType::f64);
  Grads r{Tensor::empty({d.n, d.out_h(), d.out_w(), d.cout}, DType::f64), Tensor::empty(x.shape(), DType::f64),
          Tensor::empty(w.shape(), DType::f64), Tensor::empty({d.cout}, DType::f64)};
  k::cpu::conv2d_forward<double>(d, x64.data<double>(), w64.data<double>(), b64.data<double>(), r.y.data<double>());
  k::cpu::conv2d_backward<double>(d, x64.data<double>(), w64.data<double>(), dy64.data<double>(), r.dx.data<double>(),
                                  r.dw.data<double>(), r.db.data<double>());
  return r;
}

double error(const Tensor& got, const Tensor& want, DType dt) {
  return dt == DType::f32 ? test::max_rel_error(got, want) : test::max_scaled_error(got, want);
}

void check_case(const Case& c, DType dt, double tol) {
  INFO(c.name << " " << dtype_name(dt));
  const k::Conv2dDesc d = desc_of(c.x, c.w, c.opt);
  const Shape y_shape{d.n, d.out_h(), d.out_w(), d.cout};
  // Inputs rounded to dt on the host, so the reference sees exactly what the device sees.
  Tensor x = Tensor::randn(c.x, 11, 0, 0, dt), w = Tensor::randn(c.w, 12, 0, 0, dt);
  Tensor b = Tensor::randn({d.cout}, 13, 0, 0, dt), dy = Tensor::randn(y_shape, 14, 0, 0, dt);
  const Grads ref = cpu_reference(d, x, w, b, dy);

  Tensor xd = x.to(Device::cuda), wd = w.to(Device::cuda), bd = b.to(Device::cuda), dyd = dy.to(Device::cuda);
  Tensor y = test::nan_cuda(y_shape, dt);
  test::conv2d_forward(d, xd, wd, bd, y);
  CHECK(error(y, ref.y, dt) < tol);

  Tensor dx = test::nan_cuda(c.x, dt), dw = test::nan_cuda(c.w, dt), db = test::nan_cuda({d.cout}, dt);
  test::conv2d_backward(d, xd, wd, dyd, dx, dw, db);
  CHECK(error(dx, ref.dx, dt) < tol);
  CHECK(error(dw, ref.dw, dt) < tol);
  CHECK(error(db, ref.db, dt) < tol);

  // Only some gradients wanted: the others stay untouched.
  Tensor dw_only = test::nan_cuda(c.w, dt);
  test::conv2d_backward(d, xd, wd, dyd, Tensor(), dw_only, Tensor());
  CHECK(error(dw_only, ref.dw, dt) < tol);
}

}  // namespace

TEST_CASE("cuDNN conv2d f32 matches the CPU, forward and backward", "[cuda][conv2d]") {
  DIFFUSE_CUDA_TEST_GUARD();
  REQUIRE_FALSE(k::cuda::allow_tf32());
  for (const Case& c : kCases) check_case(c, DType::f32, 2e-4);
}

TEST_CASE("cuDNN conv2d bf16 (f32 compute) matches the CPU to bf16 rounding", "[cuda][conv2d]") {
  DIFFUSE_CUDA_TEST_GUARD();
  for (const Case& c : kCases) check_case(c, DType::bf16, 1e-2);
}

TEST_CASE("cuDNN conv2d with TF32 allowed stays within TF32 rounding", "[cuda][conv2d]") {
  DIFFUSE_CUDA_TEST_GUARD();
  k::cuda::set_allow_tf32(true);
  try {
    check_case(kCases[1], DType::f32, 1e-2);
  } catch (...) {
    k::cuda::set_allow_tf32(false);
    throw;
  }
  k::cuda::set_allow_tf32(false);
}

namespace {

// Sets the algorithm choice for one test and restores the default (timed) after it, thrown or not.
struct ScopedConvSearch {
  explicit ScopedConvSearch(k::cuda::ConvSearch mode) { k::cuda::set_conv_search(mode); }
  ~ScopedConvSearch() { k::cuda::set_conv_search(k::cuda::ConvSearch::timed); }
  ScopedConvSearch(const ScopedConvSearch&) = delete;
  ScopedConvSearch& operator=(const ScopedConvSearch&) = delete;
};

}  // namespace

TEST_CASE("the conv algorithm search runs once per shape, direction and mode", "[cuda][conv2d]") {
  DIFFUSE_CUDA_TEST_GUARD();
  REQUIRE(k::cuda::conv_search() == k::cuda::ConvSearch::timed);  // the default
  const k::Conv2dDesc d = desc_of({1, 9, 9, 5}, {6, 3, 3, 5}, {2, 0, 1, 0, 1});
  Tensor x = Tensor::randn({1, 9, 9, 5}, 1).to(Device::cuda), w = Tensor::randn({6, 3, 3, 5}, 2).to(Device::cuda);
  Tensor y = Tensor::empty({1, 4, 4, 6}, DType::f32, Device::cuda);
  Tensor dx = Tensor::empty(x.shape(), DType::f32, Device::cuda), dw = Tensor::empty(w.shape(), DType::f32, Device::cuda);
  auto step = [&] {
    test::conv2d_forward(d, x, w, Tensor(), y);
    test::conv2d_backward(d, x, w, y, dx, dw, Tensor());
  };
  const k::cuda::ConvSearchCounts before = k::cuda::conv_algorithm_searches();
  step();
  CHECK(k::cuda::conv_algorithm_searches().timed == before.timed + 3);
  step();
  CHECK(k::cuda::conv_algorithm_searches().timed == before.timed + 3);
  CHECK(k::cuda::conv_algorithm_searches().heuristic == before.heuristic);
  {
    // The same shape in the other mode chooses afresh, by ranking alone, once.
    ScopedConvSearch heuristic(k::cuda::ConvSearch::heuristic);
    step();
    step();
    CHECK(k::cuda::conv_algorithm_searches().heuristic == before.heuristic + 3);
    CHECK(k::cuda::conv_algorithm_searches().timed == before.timed + 3);
  }
  step();  // back to the timed plan made first
  CHECK(k::cuda::conv_algorithm_searches().timed == before.timed + 3);
}

TEST_CASE("cuDNN conv2d with heuristic algorithm choice matches the CPU, f32 and bf16", "[cuda][conv2d]") {
  DIFFUSE_CUDA_TEST_GUARD();
  ScopedConvSearch heuristic(k::cuda::ConvSearch::heuristic);
  const int before = k::cuda::conv_algorithm_searches().heuristic;
  for (const Case& c : kCases) check_case(c, DType::f32, 2e-4);
  for (const Case& c : kCases) check_case(c, DType::bf16, 1e-2);
  CHECK(k::cuda::conv_algorithm_searches().heuristic > before);
}

TEST_CASE("the conv backward repeats its bits: only deterministic cuDNN algorithms are chosen", "[cuda][conv2d]") {
  // cuDNN's non-deterministic algorithms (atomics; the emulated device varies their order per call)
  // would make two calls differ; the search skips them, so every call of a shape gives the same bits.
  DIFFUSE_CUDA_TEST_GUARD();
  const k::Conv2dDesc d = desc_of({2, 8, 8, 6}, {5, 3, 3, 6}, ops::Conv2dOptions::same(3));
  Tensor x = Tensor::randn({2, 8, 8, 6}, 3).to(Device::cuda), w = Tensor::randn({5, 3, 3, 6}, 4).to(Device::cuda);
  Tensor dy = Tensor::randn({2, 8, 8, 5}, 5).to(Device::cuda);
  std::vector<double> first_dx, first_dw;
  for (int call = 0; call < 4; ++call) {
    Tensor dx = Tensor::empty(x.shape(), DType::f32, Device::cuda), dw = Tensor::empty(w.shape(), DType::f32, Device::cuda);
    test::conv2d_backward(d, x, w, dy, dx, dw, Tensor());
    if (call == 0) {
      first_dx = dx.to_vector();
      first_dw = dw.to_vector();
      continue;
    }
    INFO("call " << call);
    CHECK(dx.to_vector() == first_dx);
    CHECK(dw.to_vector() == first_dw);
  }
}

TEST_CASE("ops::conv2d on CUDA tensors runs forward and its backward node on the device", "[cuda][conv2d]") {
  DIFFUSE_CUDA_TEST_GUARD();
  const Case& c = kCases[1];
  const k::Conv2dDesc d = desc_of(c.x, c.w, c.opt);
  Tensor x = Tensor::randn(c.x, 21), w = Tensor::randn(c.w, 22), b = Tensor::randn({d.cout}, 23);
  Tensor dy = Tensor::randn({d.n, d.out_h(), d.out_w(), d.cout}, 24);
  const Grads ref = cpu_reference(d, x, w, b, dy);

  Tensor xd = x.to(Device::cuda).set_requires_grad(true), wd = w.to(Device::cuda).set_requires_grad(true);
  Tensor bd = b.to(Device::cuda).set_requires_grad(true);
  Tensor y = ops::conv2d(xd, wd, bd, c.opt);
  REQUIRE(y.device() == Device::cuda);
  CHECK(test::max_rel_error(y, ref.y) < 2e-4);
  run_backward(y, dy.to(Device::cuda));
  REQUIRE(xd.grad().defined());
  CHECK(xd.grad().device() == Device::cuda);
  CHECK(test::max_rel_error(xd.grad(), ref.dx) < 2e-4);
  CHECK(test::max_rel_error(wd.grad(), ref.dw) < 2e-4);
  CHECK(test::max_rel_error(bd.grad(), ref.db) < 2e-4);
}
