// The one device seam (docs/design.md §5). An op checks its arguments, builds its kernel family's
// descriptor, allocates its outputs and records its backward node once, device-neutrally; the
// kernel call itself goes through backend_for(op, tensor), which returns the Backend of the
// tensor's device. Two backends implement this interface: the CPU backend (nn/backend_cpu.cpp,
// every build: the kernels/cpu twins, f32 and f64) and the CUDA backend (nn/cuda/backend.cpp and
// its neighbours: the kernels/cuda launchers on current_stream(), scratch from the caching
// allocator). CMake chooses the CUDA side's sources: nn/cuda/*.cpp in the CUDA and EMULATED
// builds, nn/no_cuda/*.cpp in a CPU-only build, where cuda_backend() is null and every CUDA
// tensor reaching an op is the one-line "this build has no CUDA backend" error naming the op.
// Nothing outside this seam names a device namespace or tests DIFFUSE_WITH_CUDA.
//
// backend_for is also the op profiler's hook (nn/op_profile.h): each call is one seam entry of
// `op` (a string literal: the profiler keeps the pointer until the step ends).
//
// Entries take Tensors whose shapes, dtypes and devices the op has already checked against the
// descriptor; an output or gradient Tensor that is undefined is not wanted and not computed.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "kernels/attention.h"
#include "kernels/conv2d.h"
#include "kernels/denoise_step.h"
#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/group_norm.h"
#include "kernels/linear.h"
#include "kernels/loss.h"
#include "kernels/noise.h"
#include "kernels/optim.h"
#include "kernels/shape.h"
#include "nn/allocator.h"
#include "nn/tensor.h"

namespace diffuse::dispatch {

class Backend {
 public:
  virtual ~Backend() = default;

  // ---- element-wise (kernels/elementwise.h) ----
  virtual void binary(kernels::BinaryOp op, const kernels::BroadcastDesc& d, const Tensor& a, const Tensor& b,
                      const Tensor& out) const = 0;
  // Sums g down to out's (broadcast) shape, times w element-wise when w is defined.
  virtual void reduce_to_broadcast(const kernels::BroadcastDesc& d, const Tensor& g, const Tensor& w,
                                   const Tensor& out) const = 0;
  virtual void scale(double s, const Tensor& x, const Tensor& out) const = 0;
  virtual void silu_forward(const Tensor& x, const Tensor& y) const = 0;
  virtual void silu_backward(const Tensor& x, const Tensor& dy, const Tensor& dx) const = 0;
  virtual void sum(const Tensor& x, const Tensor& out) const = 0;
  // Every element of out = the scalar tensor value, read where it lies (device memory on CUDA).
  virtual void fill(const Tensor& value, const Tensor& out) const = 0;
  // out = x converted to out's dtype (ops::cast): f32 <-> bf16 on CUDA; f32, f64, bf16 on the CPU.
  virtual void cast(const Tensor& x, const Tensor& out) const = 0;

  // ---- embedding (kernels/embedding.h); index is i32 or i64 and already range-checked ----
  virtual void embedding_forward(const kernels::EmbeddingDesc& d, const Tensor& table, const Tensor& index,
                                 const Tensor& out) const = 0;
  virtual void embedding_backward(const kernels::EmbeddingDesc& d, const Tensor& index, const Tensor& dy,
                                  const Tensor& dtable) const = 0;
  // Timesteps t [n] (or [1] with d.broadcast_t): f32, i32 or i64, also f64 on the CPU; out is f32
  // [n, dim] (f64 for f64 t).
  virtual void timestep_embedding(const kernels::TimestepEmbeddingDesc& d, const Tensor& t,
                                  const Tensor& out) const = 0;

  // ---- dropout and loss (kernels/loss.h) ----
  virtual void dropout_apply(const kernels::DropoutDesc& d, const Tensor& x, const Tensor& y) const = 0;
  // loss = inv_numel · Σ weight[n] (pred - target)²; weight may be undefined (all ones).
  virtual void mse_loss(const kernels::MseDesc& d, double inv_numel, const Tensor& pred, const Tensor& target,
                        const Tensor& weight, const Tensor& loss) const = 0;
  // dpred = coef · dloss · weight[n] (pred - target), with the scalar dloss read where it lies.
  virtual void mse_backward(const kernels::MseDesc& d, double coef, const Tensor& dloss, const Tensor& pred,
                            const Tensor& target, const Tensor& weight, const Tensor& dpred) const = 0;

  // ---- shape (kernels/shape.h) ----
  virtual void concat_last(const kernels::ConcatDesc& d, const Tensor& a, const Tensor& b,
                           const Tensor& out) const = 0;
  virtual void split_last(const kernels::ConcatDesc& d, const Tensor& g, const Tensor& ga, const Tensor& gb) const = 0;
  virtual void upsample_nearest2x(const kernels::Upsample2xDesc& d, const Tensor& x, const Tensor& y) const = 0;
  virtual void upsample_nearest2x_backward(const kernels::Upsample2xDesc& d, const Tensor& dy,
                                           const Tensor& dx) const = 0;

  // ---- the diffusion process (kernels/noise.h, kernels/denoise_step.h); f32 for q_sample ----
  virtual void q_sample(const kernels::QSampleDesc& d, const Tensor& x0, const Tensor& sqrt_ab,
                        const Tensor& sqrt_1mab, const Tensor& x_t, const Tensor& target) const = 0;
  // In place: x becomes x_prev and x0 this step's prediction. per_step, when defined, is an i64
  // tensor on x's device holding the bytes of a DenoiseStepDesc whose scalars the kernel reads at
  // run time instead of d's (d still gives numel and guided): what a replayed CUDA graph needs.
  virtual void denoise_step(const kernels::DenoiseStepDesc& d, const Tensor& model_output, const Tensor& x,
                            const Tensor& x0, const Tensor& per_step) const = 0;
  // A training step's per-row draws (kernels/noise.h): step i64 [1], tables f32 [3, T], labels
  // i64 [B] or undefined (then labels_out too), timesteps i64 [B], coefs f32 [3, B].
  virtual void train_draws(const kernels::TrainDrawDesc& d, const Tensor& step, const Tensor& tables,
                           const Tensor& labels, const Tensor& timesteps, const Tensor& coefs,
                           const Tensor& labels_out) const = 0;

  // ---- group norm (kernels/group_norm.h); mean and rstd are f64 [N, groups] ----
  virtual void group_norm_forward(const kernels::GroupNormDesc& d, const Tensor& x, const Tensor& add_nc,
                                  const Tensor& gamma, const Tensor& beta, const Tensor& y, const Tensor& mean,
                                  const Tensor& rstd) const = 0;
  virtual void group_norm_backward(const kernels::GroupNormDesc& d, const Tensor& x, const Tensor& add_nc,
                                   const Tensor& gamma, const Tensor& beta, const Tensor& mean, const Tensor& rstd,
                                   const Tensor& dy, const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta,
                                   const Tensor& dadd_nc) const = 0;

  // ---- attention (kernels/attention.h) ----
  // lse: f32 [N, heads, L] log-sum-exp kept for the backward where the backend uses one (the CUDA
  // flash kernels and GEMM path; undefined when no backward follows); the CPU backend recomputes instead.
  virtual bool attention_keeps_lse() const = 0;
  virtual void attention_forward(const kernels::AttentionDesc& d, const Tensor& q, const Tensor& k, const Tensor& v,
                                 const Tensor& out, const Tensor& lse) const = 0;
  virtual void attention_backward(const kernels::AttentionDesc& d, const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& out, const Tensor& lse, const Tensor& dout, const Tensor& dq,
                                  const Tensor& dk, const Tensor& dv) const = 0;

  // ---- GEMM-shaped layers (kernels/conv2d.h, kernels/linear.h); bias and residual (y's shape,
  // added to y in the same pass) may be undefined ----
  virtual void conv2d_forward(const kernels::Conv2dDesc& d, const Tensor& x, const Tensor& w, const Tensor& bias,
                              const Tensor& residual, const Tensor& y) const = 0;
  virtual void conv2d_backward(const kernels::Conv2dDesc& d, const Tensor& x, const Tensor& w, const Tensor& dy,
                               const Tensor& dx, const Tensor& dw, const Tensor& dbias) const = 0;
  virtual void linear_forward(const kernels::LinearDesc& d, const Tensor& x, const Tensor& w, const Tensor& bias,
                              const Tensor& residual, const Tensor& y) const = 0;
  virtual void linear_backward(const kernels::LinearDesc& d, const Tensor& x, const Tensor& w, const Tensor& dy,
                               const Tensor& dx, const Tensor& dw, const Tensor& dbias) const = 0;

  // ---- multi-tensor optimizer updates (kernels/optim.h), host-built entry lists ----
  virtual void adamw_ema_step(const kernels::AdamWHyper& h, const std::vector<kernels::OptimEntry<float>>& e) const = 0;
  virtual void adamw_ema_step(const kernels::AdamWHyper& h,
                              const std::vector<kernels::OptimEntry<double>>& e) const = 0;
  // Σ x² over every span, returned on the host (a CUDA backend waits for its stream).
  virtual double sum_of_squares(const std::vector<kernels::Span<const float>>& spans) const = 0;
  virtual double sum_of_squares(const std::vector<kernels::Span<const double>>& spans) const = 0;
  virtual void scale_all(const std::vector<kernels::Span<float>>& spans, double factor) const = 0;
  virtual void scale_all(const std::vector<kernels::Span<double>>& spans, double factor) const = 0;
  // Σ x² over every span into out (f64 [1] on the backend's device): no host read.
  virtual void sum_of_squares_into(const std::vector<kernels::Span<const float>>& spans, const Tensor& out) const = 0;
  // After a gated AdamW (kernels/optim.h): the status row of step (i64 [1]) in ring (f64 [rows,
  // kStatusWords]) and the advance of state (f64 [kStateWords], g.state's memory).
  virtual void train_status(const kernels::DeviceStepGate& g, const Tensor& step, const Tensor& ring,
                            const Tensor& state) const = 0;
};

// The dtypes a CUDA backend entry takes: f32 for most families; f32 or bf16 storage for the
// library-backed GEMM-shaped layers and attention. The CPU backend always takes f32 and f64.
enum class DeviceDTypes { f32, f32_bf16 };

// The backend for t's device, after checking t's dtype: f32 or f64 on the CPU, `dtypes` on CUDA
// ("<op>: unsupported dtype ..." / "<op>: the CUDA path takes f32 ..." otherwise). For a CUDA
// tensor in a CPU-only build: "<op>: this build has no CUDA backend".
const Backend& backend_for(const char* op, const Tensor& t, DeviceDTypes dtypes = DeviceDTypes::f32);
const Backend& backend_for(const char* op, Device device);
// The same backend for a question about it, not a kernel call: the op profiler (nn/op_profile.h),
// which backend_for tells of every call, does not count it (backend_for's own lookup).
const Backend& backend_to_ask(const char* op, Device device);

const Backend& cpu_backend();
// The CUDA backend, or null in a build without one (nn/cuda/backend.cpp or nn/no_cuda/backend.cpp).
const Backend* cuda_backend();

// ---- host computations an op runs on the CPU whatever its tensors' device (nn/backend_cpu.cpp) ----
struct BadIndex {
  int64_t position = -1;  // -1: every index is valid
  int64_t value = 0;
};
// The first entry of an i32/i64 host index tensor outside [0, rows).
BadIndex first_index_out_of_range(const char* op, const Tensor& host_index, int64_t rows);

// ---- the device runtime behind nn/runtime.h, nn/allocator.h and nn/device_context.h ----
// The caching device allocator when this build has CUDA and the machine a device, else null.
Allocator* cuda_device_allocator_if_available();
// nn/runtime.h's set_conv_search after its check (heuristic or timed); nothing without CUDA.
void set_cuda_conv_search(bool heuristic);
bool cuda_conv_search_heuristic();
// "key: value" lines describing the CUDA runtime, driver and libraries (none without CUDA).
void append_cuda_build_info(std::vector<std::pair<std::string, std::string>>& info);

// ---- helpers for the backends' own dtype switches ----
// Calls fn(T{}) with T = float or double for t's dtype.
template <typename Fn>
void with_float_type(const char* op, const Tensor& t, Fn&& fn) {
  if (t.dtype() == DType::f32) {
    fn(float{});
  } else if (t.dtype() == DType::f64) {
    fn(double{});
  } else {
    throw Error(std::string(op) + ": unsupported dtype for " + t.describe());
  }
}

// Calls fn(I{}) with I = int32_t or int64_t for an index tensor's dtype.
template <typename Fn>
void with_index_type(const char* op, const Tensor& index, Fn&& fn) {
  if (index.dtype() == DType::i32) {
    fn(int32_t{});
  } else if (index.dtype() == DType::i64) {
    fn(int64_t{});
  } else {
    throw Error(std::string(op) + ": index must be i32 or i64, got " + index.describe());
  }
}

// A typed pointer to t's data, or null for an undefined (not wanted) tensor.
template <typename T>
T* data_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

// train_draws' tensors as the kernels' buffer struct (labels undefined: none).
inline kernels::TrainDrawBuffers draw_buffers(const Tensor& step, const Tensor& tables, const Tensor& labels,
                                              const Tensor& timesteps, const Tensor& coefs, const Tensor& labels_out) {
  kernels::TrainDrawBuffers b;
  b.step = step.data<int64_t>();
  b.tables = tables.data<float>();
  b.labels_in = data_or_null<int64_t>(labels);
  b.timesteps = timesteps.data<int64_t>();
  b.coefs = coefs.data<float>();
  b.labels_out = data_or_null<int64_t>(labels_out);
  return b;
}

}  // namespace diffuse::dispatch
