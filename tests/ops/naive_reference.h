// Naive f64 references for the op table: plain loops over host tensors, written from each op's
// definition in nn/ops.h (not from its kernels), so a kernel bug on any backend shows up as a
// difference. Inputs are host tensors of any float dtype (read as doubles); results are f64.
#pragma once
#include <utility>

#include "kernels/denoise_step.h"
#include "kernels/noise.h"
#include "nn/ops.h"
#include "nn/tensor.h"

namespace diffuse::test::naive {

enum class Binary { add, sub, mul };
// a op b with b right-aligned against a and broadcast where its dim is 1 (or missing).
Tensor binary(Binary op, const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& x, double s);
Tensor silu(const Tensor& x);
Tensor sum(const Tensor& x);
// Each value rounded to bfloat16 (8 significant bits, ties to even): a cast to bf16 and back.
Tensor round_to_bf16(const Tensor& x);
Tensor mean(const Tensor& x);
// y[n, oh, ow, co] = b[co] + Σ x[n, oh·s − pt + ki, ow·s − pl + kj, ci] · w[co, ki, kj, ci].
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const ops::Conv2dOptions& o);
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b);
// Two-pass statistics over each (n, group) of x + add_nc, then the affine and optional SiLU.
Tensor group_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, const ops::GroupNormOptions& o,
                  const Tensor& add_nc);
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads);
Tensor attention_packed(const Tensor& qkv, int heads);  // q, k, v side by side in each row
Tensor concat_channels(const Tensor& a, const Tensor& b);
Tensor upsample_nearest2x(const Tensor& x);
Tensor embedding(const Tensor& table, const Tensor& index);
// docs/design.md §7: [sin | cos] (or [cos | sin] when flipped) of t·exp(−ln(10000)·i/(half − shift)),
// zero-padded to an odd dim.
Tensor timestep_embedding(const Tensor& t, int dim, bool flip_sin_to_cos, double freq_shift);
// Element i kept (scaled by 1/(1−p)) unless philox::uniform_at(seed, kDropout, offset, i) < p.
Tensor dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset);
Tensor mse_loss(const Tensor& pred, const Tensor& target, const Tensor& weight);
// x_t and the target for ε_k = philox::normal_at(seed, kNoise, offset, k).
std::pair<Tensor, Tensor> q_sample(const kernels::QSampleDesc& d, const Tensor& x0, const Tensor& sqrt_ab,
                                   const Tensor& sqrt_1mab);
// x_prev and x0 of one sampler update, from kernels/denoise_step.h's description of each update.
std::pair<Tensor, Tensor> denoise_step(const kernels::DenoiseStepDesc& d, const Tensor& model_output,
                                       const Tensor& x, const Tensor& x0_prev);

}  // namespace diffuse::test::naive
