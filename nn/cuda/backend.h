// The CUDA backend of nn/dispatch.h (compiled in the CUDA and EMULATED builds only): each entry
// takes the kernels/cuda launcher of its family on current_stream(), with device scratch from the
// caching allocator. The entries are split over nn/cuda/backend.cpp (element-wise, embedding,
// loss, shape, diffusion, group norm) and nn/cuda/backend_dense.cpp (attention, conv2d, linear,
// optimizer updates).
#pragma once
#include "nn/dispatch.h"

namespace diffuse::dispatch {

// Calls fn(S{}) with S = float, or uint16_t (the launchers' bf16 bits) for bf16 storage: the one
// dtype switch of every CUDA entry that takes f32 or bf16 activations.
template <typename Fn>
void with_storage_type(const Tensor& t, Fn&& fn) {
  if (t.dtype() == DType::bf16)
    fn(uint16_t{});
  else
    fn(float{});
}

class CudaBackend final : public Backend {
 public:
  void binary(kernels::BinaryOp op, const kernels::BroadcastDesc& d, const Tensor& a, const Tensor& b,
              const Tensor& out) const override;
  void reduce_to_broadcast(const kernels::BroadcastDesc& d, const Tensor& g, const Tensor& w,
                           const Tensor& out) const override;
  void scale(double s, const Tensor& x, const Tensor& out) const override;
  void silu_forward(const Tensor& x, const Tensor& y) const override;
  void silu_backward(const Tensor& x, const Tensor& dy, const Tensor& dx) const override;
  void sum(const Tensor& x, const Tensor& out) const override;
  void fill(const Tensor& value, const Tensor& out) const override;
  void cast(const Tensor& x, const Tensor& out) const override;  // in backend_dense.cpp

  void embedding_forward(const kernels::EmbeddingDesc& d, const Tensor& table, const Tensor& index,
                         const Tensor& out) const override;
  void embedding_backward(const kernels::EmbeddingDesc& d, const Tensor& index, const Tensor& dy,
                          const Tensor& dtable) const override;
  void timestep_embedding(const kernels::TimestepEmbeddingDesc& d, const Tensor& t,
                          const Tensor& out) const override;

  void dropout_apply(const kernels::DropoutDesc& d, const Tensor& x, const Tensor& y) const override;
  void mse_loss(const kernels::MseDesc& d, double inv_numel, const Tensor& pred, const Tensor& target,
                const Tensor& weight, const Tensor& loss) const override;
  void mse_backward(const kernels::MseDesc& d, double coef, const Tensor& dloss, const Tensor& pred,
                    const Tensor& target, const Tensor& weight, const Tensor& dpred) const override;

  void concat_last(const kernels::ConcatDesc& d, const Tensor& a, const Tensor& b, const Tensor& out) const override;
  void split_last(const kernels::ConcatDesc& d, const Tensor& g, const Tensor& ga, const Tensor& gb) const override;
  void upsample_nearest2x(const kernels::Upsample2xDesc& d, const Tensor& x, const Tensor& y) const override;
  void upsample_nearest2x_backward(const kernels::Upsample2xDesc& d, const Tensor& dy,
                                   const Tensor& dx) const override;

  void q_sample(const kernels::QSampleDesc& d, const Tensor& x0, const Tensor& sqrt_ab, const Tensor& sqrt_1mab,
                const Tensor& x_t, const Tensor& target) const override;
  void denoise_step(const kernels::DenoiseStepDesc& d, const Tensor& model_output, const Tensor& x,
                    const Tensor& x0, const Tensor& per_step) const override;

  void group_norm_forward(const kernels::GroupNormDesc& d, const Tensor& x, const Tensor& add_nc,
                          const Tensor& gamma, const Tensor& beta, const Tensor& y, const Tensor& mean,
                          const Tensor& rstd) const override;
  void group_norm_backward(const kernels::GroupNormDesc& d, const Tensor& x, const Tensor& add_nc,
                           const Tensor& gamma, const Tensor& beta, const Tensor& mean, const Tensor& rstd,
                           const Tensor& dy, const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta,
                           const Tensor& dadd_nc) const override;

  bool attention_keeps_lse() const override { return true; }
  void attention_forward(const kernels::AttentionDesc& d, const Tensor& q, const Tensor& k, const Tensor& v,
                         const Tensor& out, const Tensor& lse) const override;
  void attention_backward(const kernels::AttentionDesc& d, const Tensor& q, const Tensor& k, const Tensor& v,
                          const Tensor& out, const Tensor& lse, const Tensor& dout, const Tensor& dq,
                          const Tensor& dk, const Tensor& dv) const override;

  void conv2d_forward(const kernels::Conv2dDesc& d, const Tensor& x, const Tensor& w, const Tensor& bias,
                      const Tensor& residual, const Tensor& y) const override;
  void conv2d_backward(const kernels::Conv2dDesc& d, const Tensor& x, const Tensor& w, const Tensor& dy,
                       const Tensor& dx, const Tensor& dw, const Tensor& dbias) const override;
  void linear_forward(const kernels::LinearDesc& d, const Tensor& x, const Tensor& w, const Tensor& bias,
                      const Tensor& residual, const Tensor& y) const override;
  void linear_backward(const kernels::LinearDesc& d, const Tensor& x, const Tensor& w, const Tensor& dy,
                       const Tensor& dx, const Tensor& dw, const Tensor& dbias) const override;

  void adamw_ema_step(const kernels::AdamWHyper& h, const std::vector<kernels::OptimEntry<float>>& e) const override;
  void adamw_ema_step(const kernels::AdamWHyper& h, const std::vector<kernels::OptimEntry<double>>& e) const override;
  double sum_of_squares(const std::vector<kernels::Span<const float>>& spans) const override;
  double sum_of_squares(const std::vector<kernels::Span<const double>>& spans) const override;
  void scale_all(const std::vector<kernels::Span<float>>& spans, double factor) const override;
  void scale_all(const std::vector<kernels::Span<double>>& spans, double factor) const override;
  void sum_of_squares_into(const std::vector<kernels::Span<const float>>& spans, const Tensor& out) const override;
  void train_status(const kernels::DeviceStepGate& g, const Tensor& step, const Tensor& ring,
                    const Tensor& state) const override;
  void train_draws(const kernels::TrainDrawDesc& d, const Tensor& step, const Tensor& tables, const Tensor& labels,
                   const Tensor& timesteps, const Tensor& coefs, const Tensor& labels_out) const override;
};

}  // namespace diffuse::dispatch
