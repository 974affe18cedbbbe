// See unet_denoiser.h. One timestep value is broadcast over the batch by the UNet's time
// embedding, so the timestep goes in as a one-element tensor (the tensor form's t already is one).
#include "engine/unet_denoiser.h"

namespace diffuse {

namespace {

// Rows [0, B) and [B, 2B) of the result are both x: the CFG batch.
Tensor repeat_batch_twice(const Tensor& x) {
  Shape s = x.shape();
  const int64_t b = s[0];
  s[0] = 2 * b;
  Tensor out = Tensor::empty(s, x.dtype(), x.device());
  Tensor lo = out.slice0(0, b), hi = out.slice0(b, 2 * b);
  lo.copy_from(x);
  hi.copy_from(x);
  return out;
}

}  // namespace

Sampler::ModelFn unet_denoiser(UNet2D& model, const Tensor& labels, bool guided) {
  return [&model, labels, guided](const Tensor& x_t, int64_t t) {
    Tensor t_tensor = Tensor::full({1}, static_cast<double>(t), DType::i64);
    return model.forward(guided ? repeat_batch_twice(x_t) : x_t, t_tensor, labels);
  };
}

Sampler::TensorModelFn unet_tensor_denoiser(UNet2D& model, const Tensor& labels, bool guided) {
  return [&model, labels, guided](const Tensor& x_t, const Tensor& t) {
    return model.forward(guided ? repeat_batch_twice(x_t) : x_t, t, labels);
  };
}

}  // namespace diffuse
