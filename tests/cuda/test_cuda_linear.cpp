// linear on a CUDA device (cuBLAS / cuBLASLt, kernels/cuda/linear.cpp; a GPU or the emulated device) against
// the CPU implementation in f64: forward through both the cuBLASLt bias epilogue and the GEMM +
// bias-add path, backward (dx, dw, dbias) into NaN-poisoned outputs, f32 (no TF32: 2e-4) and bf16
// (1e-2 of the tensor's scale), an input view at an odd offset, the row-major GEMM helper with
// transposes, and the op's autograd node on the device. Ends with a conv + linear step that
// allocates nothing new.
#include <catch2/catch.hpp>

#include "cuda_test_util.h"
#include "kernels/linear.h"
#include "nn/autograd.h"
#include "nn/cuda/caching_allocator.h"
#include "nn/ops.h"
#include "support/gradcheck.h"

using namespace diffuse;
namespace k = diffuse::kernels;

namespace {

struct Grads {
  Tensor y, dx, dw, db;
};

Grads cpu_reference(const k::LinearDesc& d, const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& dy) {
  Tensor x64 = x.to(DType::f64), w64 = w.to(DType::f64), b64 = b.to(DType::f64), dy64 = dy.to(DType::f64);
  Grads r{Tensor::empty({d.rows, d.out}, DType::f64), Tensor::empty({d.rows, d.in}, DType::f64),
          Tensor::empty({d.out, d.in}, DType::f64), Tensor::empty({d.out}, DType::f64)};
  k::cpu::linear_forward<double>(d, x64.data<double>(), w64.data<double>(), b64.data<double>(), r.y.data<double>());
  k::cpu::linear_backward<double>(d, x64.data<double>(), w64.data<double>(), dy64.data<double>(), r.dx.data<double>(),
                                  r.dw.data<double>(), r.db.data<double>());
  return r;
}

double error(const Tensor& got, const Tensor& want, DType dt) {
  return dt == DType::f32 ? test::max_rel_error(got, want) : test::max_scaled_error(got, want);
}

// x is a view starting at row 1 of a [rows + 1, in] tensor when `offset_view`, so its address is
// only 4- or 2-byte aligned for odd `in`.
void check_linear(int64_t rows, int64_t in, int64_t out, DType dt, bool use_lt, bool offset_view, double tol) {
  INFO("rows " << rows << " in " << in << " out " << out << " " << dtype_name(dt) << (use_lt ? " lt" : " gemm")
               << (offset_view ? " offset view" : ""));
  const k::LinearDesc d{rows, in, out};
  Tensor x_all = Tensor::randn({rows + 1, in}, 31, 0, 0, dt);
  Tensor x = offset_view ? x_all.slice0(1, rows + 1) : x_all.slice0(0, rows);
  Tensor w = Tensor::randn({out, in}, 32, 0, 0, dt), b = Tensor::randn({out}, 33, 0, 0, dt);
  Tensor dy = Tensor::randn({rows, out}, 34, 0, 0, dt);
  const Grads ref = cpu_reference(d, x, w, b, dy);

  Tensor xd = x_all.to(Device::cuda).slice0(offset_view ? 1 : 0, offset_view ? rows + 1 : rows);
  Tensor wd = w.to(Device::cuda), bd = b.to(Device::cuda), dyd = dy.to(Device::cuda);
  kernels::cuda::set_linear_use_lt(use_lt);
  Tensor y = test::nan_cuda({rows, out}, dt), y_nobias = test::nan_cuda({rows, out}, dt);
  try {
    test::linear_forward(d, xd, wd, bd, y);
    test::linear_forward(d, xd, wd, Tensor(), y_nobias);
  } catch (...) {
    kernels::cuda::set_linear_use_lt(true);
    throw;
  }
  kernels::cuda::set_linear_use_lt(true);
  CHECK(error(y, ref.y, dt) < tol);
  // Without bias: y - b.
  std::vector<double> yv = ref.y.to_vector(), bv = b.to_vector();
  for (size_t i = 0; i < yv.size(); ++i) yv[i] -= bv[i % static_cast<size_t>(out)];
  CHECK(error(y_nobias, Tensor::from(yv, {rows, out}, DType::f64), dt) < tol);

  Tensor dx = test::nan_cuda({rows, in}, dt), dw = test::nan_cuda({out, in}, dt), db = test::nan_cuda({out}, dt);
  test::linear_backward(d, xd, wd, dyd, dx, dw, db);
  CHECK(error(dx, ref.dx, dt) < tol);
  CHECK(error(dw, ref.dw, dt) < tol);
  CHECK(error(db, ref.db, dt) < tol);
}

}  // namespace

TEST_CASE("cuBLAS linear f32 matches the CPU, forward and backward", "[cuda][linear]") {
  DIFFUSE_CUDA_TEST_GUARD();
  REQUIRE_FALSE(kernels::cuda::allow_tf32());
  for (bool lt : {true, false}) {
    check_linear(7, 5, 3, DType::f32, lt, false, 2e-4);
    check_linear(37, 64, 96, DType::f32, lt, false, 2e-4);
    check_linear(7, 5, 3, DType::f32, lt, true, 2e-4);
  }
}

TEST_CASE("cuBLAS linear bf16 (f32 accumulation) matches the CPU to bf16 rounding", "[cuda][linear]") {
  DIFFUSE_CUDA_TEST_GUARD();
  for (bool lt : {true, false}) {
    check_linear(7, 5, 3, DType::bf16, lt, false, 1e-2);
    check_linear(37, 64, 96, DType::bf16, lt, false, 1e-2);
    check_linear(9, 5, 3, DType::bf16, lt, true, 1e-2);
  }
}

TEST_CASE("cuBLAS linear with TF32 allowed stays within TF32 rounding", "[cuda][linear]") {
  DIFFUSE_CUDA_TEST_GUARD();
  kernels::cuda::set_allow_tf32(true);
  try {
    check_linear(37, 64, 96, DType::f32, true, false, 1e-2);
  } catch (...) {
    kernels::cuda::set_allow_tf32(false);
    throw;
  }
  kernels::cuda::set_allow_tf32(false);
}

TEST_CASE("the row-major cuBLAS GEMM helper handles every transpose combination", "[cuda][linear]") {
  DIFFUSE_CUDA_TEST_GUARD();
  const int64_t m = 5, n = 4, kk = 3;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      INFO("trans_a " << ta << " trans_b " << tb);
      // a is stored [m, k] or, transposed, [k, m]; b is [k, n] or [n, k].
      Tensor a = Tensor::randn(ta ? Shape{kk, m} : Shape{m, kk}, 41), b = Tensor::randn(tb ? Shape{n, kk} : Shape{kk, n}, 42);
      Tensor c0 = Tensor::randn({m, n}, 43);
      auto av = a.to_vector(), bv = b.to_vector(), cv = c0.to_vector();
      std::vector<double> want(static_cast<size_t>(m * n));
      for (size_t i = 0; i < size_t(m); ++i)
        for (size_t j = 0; j < size_t(n); ++j) {
          double acc = 0;
          for (size_t p = 0; p < size_t(kk); ++p) acc += av[ta ? p * m + i : i * kk + p] * bv[tb ? j * kk + p : p * n + j];
          want[i * n + j] = 2.0 * acc + 0.5 * cv[i * n + j];
        }
      Tensor ad = a.to(Device::cuda), bd = b.to(Device::cuda), cd = c0.to(Device::cuda);
      kernels::cuda::gemm(kernels::DenseType::f32, ta, tb, m, n, kk, 2.0f, ad.raw(), ta ? m : kk, bd.raw(), tb ? kk : n,
                          0.5f, cd.raw(), n, cuda::device_memory(), current_stream());
      CHECK(test::max_rel_error(cd, Tensor::from(want, {m, n}, DType::f64)) < 1e-5);
    }
}

TEST_CASE("ops::linear on CUDA tensors runs forward and its backward node on the device", "[cuda][linear]") {
  DIFFUSE_CUDA_TEST_GUARD();
  const k::LinearDesc d{2 * 3, 8, 5};
  Tensor x = Tensor::randn({2, 3, 8}, 51), w = Tensor::randn({5, 8}, 52), b = Tensor::randn({5}, 53);
  Tensor dy = Tensor::randn({2, 3, 5}, 54);
  const Grads ref = cpu_reference(d, x.view({6, 8}), w, b, dy.view({6, 5}));

  Tensor xd = x.to(Device::cuda).set_requires_grad(true), wd = w.to(Device::cuda).set_requires_grad(true);
  Tensor bd = b.to(Device::cuda).set_requires_grad(true);
  Tensor y = ops::linear(xd, wd, bd);
  REQUIRE(y.device() == Device::cuda);
  CHECK(y.shape() == Shape{2, 3, 5});
  CHECK(test::max_rel_error(y.view({6, 5}), ref.y) < 2e-4);
  run_backward(y, dy.to(Device::cuda));
  CHECK(test::max_rel_error(xd.grad().view({6, 8}), ref.dx) < 2e-4);
  CHECK(test::max_rel_error(wd.grad(), ref.dw) < 2e-4);
  CHECK(test::max_rel_error(bd.grad(), ref.db) < 2e-4);
}

TEST_CASE("a conv + linear training step makes no new cudaMalloc the second time", "[cuda][allocator]") {
  DIFFUSE_CUDA_TEST_GUARD();
  auto step = [] {
    Tensor x = Tensor::randn({2, 8, 8, 4}, 61).to(Device::cuda).set_requires_grad(true);
    Tensor w = Tensor::randn({6, 3, 3, 4}, 62).to(Device::cuda).set_requires_grad(true);
    Tensor b = Tensor::randn({6}, 63).to(Device::cuda).set_requires_grad(true);
    Tensor lw = Tensor::randn({3, 6}, 64).to(Device::cuda).set_requires_grad(true);
    Tensor lb = Tensor::randn({3}, 65).to(Device::cuda).set_requires_grad(true);
    Tensor h = ops::conv2d(x, w, b, {2, 0, 1, 0, 1});  // [2, 4, 4, 6]
    Tensor y = ops::linear(h, lw, lb);                  // [2, 4, 4, 3]
    run_backward(y, Tensor::ones(y.shape(), DType::f32, Device::cuda));
    REQUIRE(w.grad().defined());
    REQUIRE(x.grad().defined());
  };
  step();
  const uint64_t mallocs = cuda::allocator_stats().cuda_mallocs;
  step();
  CHECK(cuda::allocator_stats().cuda_mallocs == mallocs);
}
