// The CUDA branch of an op (docs/design.md §5): on_cuda(op, t, launch) runs `launch` when t is a CUDA
// tensor, after checking that it is f32 (the dtype of these CUDA kernels), and says whether it
// did; for a CPU tensor it returns false and the op takes its CPU path. In a build without CUDA
// a CUDA tensor is the usual "no CUDA path" error and `launch` is never called, so its body may
// name kernels::cuda:: launchers that such a build does not contain (an uncalled lambda's body
// is never emitted). Device scratch comes from device_scratch(), the caching allocator.
#pragma once
#include <cstdint>
#include <utility>

#include "nn/device_context.h"
#include "nn/op_checks.h"
#include "nn/tensor.h"

namespace diffuse::ops::detail {

template <typename Launch>
bool on_cuda(const char* op, const Tensor& t, Launch&& launch) {
  if (t.device() != Device::cuda) return false;
  if (t.dtype() != DType::f32) fail(op, "the CUDA path takes f32 tensors, got " + t.describe());
#if DIFFUSE_WITH_CUDA
  std::forward<Launch>(launch)();
  return true;
#else
  (void)launch;
  no_cuda_path(op);
#endif
}

// A device buffer of n elements for a kernel's workspace. Freed when the tensor goes; every
// kernel runs on current_stream(), so a later reuse of the block is ordered after the launch.
inline Tensor device_scratch(int64_t n, DType dtype = DType::f32) { return Tensor::empty({n}, dtype, Device::cuda); }

template <typename T>
T* scratch_ptr(const Tensor& t) {
  return t.numel() ? t.data<T>() : nullptr;
}

}  // namespace diffuse::ops::detail
