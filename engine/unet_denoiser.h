// The denoise callback that puts a UNet into the sampling loop (Sampler::sample, engine/sampler.h):
// the model's output for x_t at timestep t, with classifier-free guidance as one batched forward —
// the unconditional and conditional halves as 2B rows, null labels first, as the denoise_step op
// expects. generate() (the CLI and the library) and `diffuse bench sample` both sample through it.
#pragma once
#include "engine/sampler.h"
#include "nn/unet2d.h"

namespace diffuse {

// labels: i64 on the host for a class-conditional model — [B], or [2B] when guided (the null class
// in the first B rows) — and undefined for an unconditional one. The model must outlive the
// callback; its training flag is left as it is (sample in eval mode).
Sampler::ModelFn unet_denoiser(UNet2D& model, const Tensor& labels, bool guided);
// The same, reading the timestep from a tensor on the model's device (Sampler::TensorModelFn): the
// form a CUDA graph of the sampler step replays. labels must already be on the model's device.
Sampler::TensorModelFn unet_tensor_denoiser(UNet2D& model, const Tensor& labels, bool guided);

}  // namespace diffuse
