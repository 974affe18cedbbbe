// Helpers shared by the `cuda` tests (the skip guard is support/cuda_guard.h's
// DIFFUSE_CUDA_TEST_GUARD; raw device memory is support/device_memory.h's): f32 device buffers, NaN-filled device tensors, error measures, and the
// library-backed kernel launchers (kernels/conv2d.h, kernels/linear.h, kernels/gemm.h) called on
// CUDA tensors with nn's caching allocator and stream, as nn's CUDA backend calls them.
#pragma once
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/conv2d.h"
#include "kernels/linear.h"
#include "nn/cuda/caching_allocator.h"
#include "nn/device_context.h"
#include "nn/tensor.h"
#include "support/cuda_guard.h"
#include "support/device_memory.h"

namespace diffuse::test {

// f32 device buffers for kernel-level tests (no tensors, no caching allocator): `count` floats
// (at least one) from support/device_memory.h's DeviceBuffer; `.as<float>()` is the pointer.
inline DeviceBuffer device_floats(size_t count) { return DeviceBuffer((count ? count : 1) * sizeof(float)); }

// max |got - want| / max(1, |want|); NaN in `got` counts as infinitely wrong.
template <typename T>
inline double max_rel(const std::vector<T>& got, const std::vector<T>& want) {
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    double e = std::fabs(static_cast<double>(got[i]) - want[i]) / std::max(1.0, std::fabs(static_cast<double>(want[i])));
    if (!(e <= worst)) worst = std::isnan(e) ? INFINITY : e;
  }
  return worst;
}

inline bool have_device() {
  if (cuda_device_count() > 0) return true;
  WARN("no CUDA device: test not run");
  return false;
}


// A device tensor filled with NaN, so an element the code under test never writes fails the
// comparison.
inline Tensor nan_cuda(const Shape& shape, DType dtype) { return Tensor::full(shape, NAN, dtype, Device::cuda); }

// max |a - b| over max(1, max |b|): the error relative to the tensor's scale, for bf16 results
// whose rounding error follows the largest intermediate rather than each element. NaN -> inf.
inline double max_scaled_error(const Tensor& a, const Tensor& b) {
  auto va = a.to_vector(), vb = b.to_vector();
  REQUIRE(va.size() == vb.size());
  double peak = 1.0, worst = 0.0;
  for (double v : vb) peak = std::max(peak, std::fabs(v));
  for (size_t i = 0; i < va.size(); ++i) {
    double d = std::fabs(va[i] - vb[i]);
    if (std::isnan(d)) return INFINITY;
    worst = std::max(worst, d);
  }
  return worst / peak;
}

// ---- the library-backed launchers on CUDA tensors (undefined outputs: not wanted) ----
inline kernels::DenseType dense_type_of(const Tensor& t) {
  return t.dtype() == DType::bf16 ? kernels::DenseType::bf16 : kernels::DenseType::f32;
}
inline void* raw_or_null(const Tensor& t) { return t.defined() ? t.raw() : nullptr; }

inline void conv2d_forward(const kernels::Conv2dDesc& d, const Tensor& x, const Tensor& w, const Tensor& bias,
                           const Tensor& y) {
  kernels::cuda::conv2d_forward(d, dense_type_of(x), x.raw(), w.raw(), raw_or_null(bias), y.raw(),
                                cuda::device_memory(), current_stream());
}
inline void conv2d_backward(const kernels::Conv2dDesc& d, const Tensor& x, const Tensor& w, const Tensor& dy,
                            const Tensor& dx, const Tensor& dw, const Tensor& dbias) {
  kernels::cuda::conv2d_backward(d, dense_type_of(x), x.raw(), w.raw(), dy.raw(), raw_or_null(dx), raw_or_null(dw),
                                 raw_or_null(dbias), cuda::device_memory(), current_stream());
}
inline void linear_forward(const kernels::LinearDesc& d, const Tensor& x, const Tensor& w, const Tensor& bias,
                           const Tensor& y) {
  kernels::cuda::linear_forward(d, dense_type_of(x), x.raw(), w.raw(), raw_or_null(bias), y.raw(),
                                cuda::device_memory(), current_stream());
}
inline void linear_backward(const kernels::LinearDesc& d, const Tensor& x, const Tensor& w, const Tensor& dy,
                            const Tensor& dx, const Tensor& dw, const Tensor& dbias) {
  kernels::cuda::linear_backward(d, dense_type_of(x), x.raw(), w.raw(), dy.raw(), raw_or_null(dx), raw_or_null(dw),
                                 raw_or_null(dbias), cuda::device_memory(), current_stream());
}

}  // namespace diffuse::test
