// The CUDA backend's element-wise, embedding, loss, shape, diffusion and group-norm entries (see
// nn/cuda/backend.h): f32 device pointers (backend_for checked the dtype) on current_stream().
// The entries bf16 autocast runs between layers (binary, scale, SiLU, dropout, concat/split,
// upsample and group norm's activations) also take bf16 storage, switched on once per call.
// Also cuda_backend(), which makes this build's CUDA tensors reach these entries.
#include "nn/cuda/backend.h"

#include "nn/device_context.h"

namespace diffuse::dispatch {

namespace k = diffuse::kernels;
namespace dev = diffuse::kernels::cuda;

namespace {

// Device scratch of at least `bytes` for a launcher's workspace (undefined for 0). Freed when the
// tensor goes; every kernel runs on current_stream(), so a later reuse of the block is ordered
// after the launch.
Tensor device_scratch_bytes(size_t bytes) {
  return bytes ? Tensor::empty({static_cast<int64_t>((bytes + 7) / 8)}, DType::f64, Device::cuda) : Tensor();
}

template <typename T>
T* scratch_ptr(const Tensor& t) {
  return t.defined() ? static_cast<T*>(t.raw()) : nullptr;
}

const float* f32(const Tensor& t) { return data_or_null<float>(t); }
float* f32_out(const Tensor& t) { return data_or_null<float>(t); }

}  // namespace

const Backend* cuda_backend() {
  static const CudaBackend backend;
  return &backend;
}

// ---- element-wise ----

void CudaBackend::binary(k::BinaryOp op, const k::BroadcastDesc& d, const Tensor& a, const Tensor& b,
                         const Tensor& out) const {
  with_storage_type(a, [&](auto s) {
    using S = decltype(s);
    dev::binary(op, d, data_or_null<S>(a), data_or_null<S>(b), data_or_null<S>(out), current_stream());
  });
}

void CudaBackend::reduce_to_broadcast(const k::BroadcastDesc& d, const Tensor& g, const Tensor& w,
                                      const Tensor& out) const {
  const Tensor ws = device_scratch_bytes(static_cast<size_t>(dev::reduce_to_broadcast_workspace(d)) * sizeof(float));
  dev::reduce_to_broadcast(d, f32(g), f32(w), f32_out(out), scratch_ptr<float>(ws), current_stream());
}

void CudaBackend::scale(double s, const Tensor& x, const Tensor& out) const {
  with_storage_type(x, [&](auto t) {
    using S = decltype(t);
    dev::scale(x.numel(), static_cast<float>(s), data_or_null<S>(x), data_or_null<S>(out), current_stream());
  });
}

void CudaBackend::silu_forward(const Tensor& x, const Tensor& y) const {
  with_storage_type(x, [&](auto s) {
    using S = decltype(s);
    dev::silu_forward(x.numel(), data_or_null<S>(x), data_or_null<S>(y), current_stream());
  });
}

void CudaBackend::silu_backward(const Tensor& x, const Tensor& dy, const Tensor& dx) const {
  with_storage_type(x, [&](auto s) {
    using S = decltype(s);
    dev::silu_backward(x.numel(), data_or_null<S>(x), data_or_null<S>(dy), data_or_null<S>(dx), current_stream());
  });
}

void CudaBackend::sum(const Tensor& x, const Tensor& out) const {
  const Tensor ws = device_scratch_bytes(static_cast<size_t>(dev::sum_workspace(x.numel())) * sizeof(float));
  dev::sum(x.numel(), f32(x), f32_out(out), scratch_ptr<float>(ws), current_stream());
}

void CudaBackend::fill(const Tensor& value, const Tensor& out) const {
  dev::fill(out.numel(), f32(value), f32_out(out), current_stream());
}

// ---- embedding ----

void CudaBackend::embedding_forward(const k::EmbeddingDesc& d, const Tensor& table, const Tensor& index,
                                    const Tensor& out) const {
  with_index_type("embedding", index, [&](auto i) {
    using I = decltype(i);
    dev::embedding_forward(d, f32(table), index.data<I>(), f32_out(out), current_stream());
  });
}

void CudaBackend::embedding_backward(const k::EmbeddingDesc& d, const Tensor& index, const Tensor& dy,
                                     const Tensor& dtable) const {
  with_index_type("embedding backward", index, [&](auto i) {
    using I = decltype(i);
    dev::embedding_backward(d, index.data<I>(), f32(dy), f32_out(dtable), current_stream());
  });
}

void CudaBackend::timestep_embedding(const k::TimestepEmbeddingDesc& d, const Tensor& t, const Tensor& out) const {
  switch (t.dtype()) {
    case DType::f32: dev::timestep_embedding(d, t.data<float>(), f32_out(out), current_stream()); break;
    case DType::i32: dev::timestep_embedding(d, t.data<int32_t>(), f32_out(out), current_stream()); break;
    case DType::i64: dev::timestep_embedding(d, t.data<int64_t>(), f32_out(out), current_stream()); break;
    default: throw Error("timestep_embedding: the CUDA path takes f32, i32 or i64 timesteps, got " + t.describe());
  }
}

// ---- dropout and loss ----

void CudaBackend::dropout_apply(const k::DropoutDesc& d, const Tensor& x, const Tensor& y) const {
  with_storage_type(x, [&](auto s) {
    using S = decltype(s);
    dev::dropout_apply(d, data_or_null<S>(x), data_or_null<S>(y), current_stream());
  });
}

void CudaBackend::mse_loss(const k::MseDesc& d, double inv_numel, const Tensor& pred, const Tensor& target,
                           const Tensor& weight, const Tensor& loss) const {
  const Tensor ws = device_scratch_bytes(static_cast<size_t>(dev::mse_loss_workspace(d)) * sizeof(double));
  dev::mse_loss(d, inv_numel, f32(pred), f32(target), f32(weight), f32_out(loss), scratch_ptr<double>(ws),
                current_stream());
}

void CudaBackend::mse_backward(const k::MseDesc& d, double coef, const Tensor& dloss, const Tensor& pred,
                               const Tensor& target, const Tensor& weight, const Tensor& dpred) const {
  dev::mse_backward(d, coef, f32(dloss), f32(pred), f32(target), f32(weight), f32_out(dpred), current_stream());
}

// ---- shape ----

void CudaBackend::concat_last(const k::ConcatDesc& d, const Tensor& a, const Tensor& b, const Tensor& out) const {
  with_storage_type(a, [&](auto s) {
    using S = decltype(s);
    dev::concat_last(d, data_or_null<S>(a), data_or_null<S>(b), data_or_null<S>(out), current_stream());
  });
}

void CudaBackend::split_last(const k::ConcatDesc& d, const Tensor& g, const Tensor& ga, const Tensor& gb) const {
  with_storage_type(g, [&](auto s) {
    using S = decltype(s);
    dev::split_last(d, data_or_null<S>(g), data_or_null<S>(ga), data_or_null<S>(gb), current_stream());
  });
}

void CudaBackend::upsample_nearest2x(const k::Upsample2xDesc& d, const Tensor& x, const Tensor& y) const {
  with_storage_type(x, [&](auto s) {
    using S = decltype(s);
    dev::upsample_nearest2x(d, data_or_null<S>(x), data_or_null<S>(y), current_stream());
  });
}

void CudaBackend::upsample_nearest2x_backward(const k::Upsample2xDesc& d, const Tensor& dy, const Tensor& dx) const {
  with_storage_type(dy, [&](auto s) {
    using S = decltype(s);
    dev::upsample_nearest2x_backward(d, data_or_null<S>(dy), data_or_null<S>(dx), current_stream());
  });
}

// ---- the diffusion process ----

void CudaBackend::q_sample(const k::QSampleDesc& d, const Tensor& x0, const Tensor& sqrt_ab, const Tensor& sqrt_1mab,
                           const Tensor& x_t, const Tensor& target) const {
  dev::q_sample(d, f32(x0), f32(sqrt_ab), f32(sqrt_1mab), f32_out(x_t), f32_out(target), current_stream());
}

void CudaBackend::train_draws(const k::TrainDrawDesc& d, const Tensor& step, const Tensor& tables, const Tensor& labels,
                              const Tensor& timesteps, const Tensor& coefs, const Tensor& labels_out) const {
  dev::train_draws(d, draw_buffers(step, tables, labels, timesteps, coefs, labels_out), current_stream());
}

void CudaBackend::denoise_step(const k::DenoiseStepDesc& d, const Tensor& model_output, const Tensor& x,
                               const Tensor& x0, const Tensor& per_step) const {
  if (per_step.defined())
    dev::denoise_step_per_step(d, static_cast<const k::DenoiseStepDesc*>(per_step.raw()), f32(x), f32(model_output),
                               f32(x0), f32_out(x), f32_out(x0), current_stream());
  else
    dev::denoise_step(d, f32(x), f32(model_output), f32(x0), f32_out(x), f32_out(x0), current_stream());
}

// ---- group norm ----

void CudaBackend::group_norm_forward(const k::GroupNormDesc& d, const Tensor& x, const Tensor& add_nc,
                                     const Tensor& gamma, const Tensor& beta, const Tensor& y, const Tensor& mean,
                                     const Tensor& rstd) const {
  const Tensor ws = device_scratch_bytes(dev::group_norm_forward_workspace_bytes(d));
  with_storage_type(x, [&](auto s) {
    using S = decltype(s);
    dev::group_norm_forward(d, data_or_null<S>(x), f32(add_nc), f32(gamma), f32(beta), data_or_null<S>(y),
                            mean.data<double>(), rstd.data<double>(), scratch_ptr<void>(ws), current_stream());
  });
}

void CudaBackend::group_norm_backward(const k::GroupNormDesc& d, const Tensor& x, const Tensor& add_nc,
                                      const Tensor& gamma, const Tensor& beta, const Tensor& mean,
                                      const Tensor& rstd, const Tensor& dy, const Tensor& dx, const Tensor& dgamma,
                                      const Tensor& dbeta, const Tensor& dadd_nc) const {
  const Tensor ws = device_scratch_bytes(dev::group_norm_backward_workspace_bytes(d));
  with_storage_type(x, [&](auto s) {
    using S = decltype(s);
    dev::group_norm_backward(d, data_or_null<S>(x), f32(add_nc), f32(gamma), f32(beta), mean.data<double>(),
                             rstd.data<double>(), data_or_null<S>(dy), data_or_null<S>(dx), f32_out(dgamma),
                             f32_out(dbeta), f32_out(dadd_nc), scratch_ptr<void>(ws), current_stream());
  });
}

}  // namespace diffuse::dispatch
