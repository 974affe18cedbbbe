// Differentiable ops on Tensors: check arguments (one clear diffuse::Error naming the op and the
// shapes), dispatch to the kernel family for the tensor's device, and record a backward node when
// any input requires grad. Activations are NHWC; conv weights OHWI; linear weights [out, in].
// CPU kernels run f32 and f64 (f64 for finite-difference checks).
#pragma once
#include <cstdint>

#include "kernels/denoise_step.h"
#include "kernels/noise.h"
#include "nn/tensor.h"

namespace diffuse::ops {

// ---- element-wise (ops_elementwise.cpp) --------------------------------------------------------
// Binary ops broadcast b over a: b's shape, right-aligned to a's, has each dim equal to a's or 1
// (e.g. [C], [N, 1, 1, C], [1]). The result has a's shape.
Tensor add(const Tensor& a, const Tensor& b);
// a += b in place, a and b of one shape, dtype and device; never recorded (on CUDA through a
// temporary). The tape's gradient sums (nn/autograd.cpp) use it on the CPU when nothing else
// shares a's storage.
void add_in_place(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& a, double s);
Tensor silu(const Tensor& x);
Tensor reshape(const Tensor& x, const Shape& shape);  // differentiable view (-1 allowed once)
Tensor sum(const Tensor& x);   // scalar [] of all elements
Tensor mean(const Tensor& x);  // scalar []
// x's values in `dtype` storage: f32 <-> bf16 on CUDA (round to nearest even; the other way is
// exact); f32, f64 and bf16 on the CPU. The grad is cast back to x's dtype. x itself when the
// dtype is already x's. bf16 autocast (nn/layers.h) puts it at the edges of the bf16 layers.
Tensor cast(const Tensor& x, DType dtype);
// How many conversions ops::cast has run on this thread (not counting the no-op same-dtype
// calls), forward and backward: how tests count what bf16 autocast pays in casts.
uint64_t casts_run();

// ---- convolution (ops_conv.cpp) ----------------------------------------------------------------
struct Conv2dOptions {
  int stride = 1;
  int pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  static Conv2dOptions same(int k, int stride = 1) {  // symmetric (k-1)/2 padding
    int p = (k - 1) / 2;
    return {stride, p, p, p, p};
  }
};
// x [N, H, W, Cin], w [Cout, kh, kw, Cin], bias [Cout] or undefined -> [N, Ho, Wo, Cout].
// residual [N, Ho, Wo, Cout] or undefined: y = conv + bias + residual in one output pass (what
// add(residual, conv2d(...)) computes; ResnetBlock2D's skip). Its grad is dy itself.
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dOptions& opt,
              const Tensor& residual = Tensor());

// ---- dense (ops_linear.cpp) --------------------------------------------------------------------
// x [..., in], w [out, in], bias [out] or undefined -> [..., out]. residual [..., out] or
// undefined: added in the same output pass, as conv2d's (AttentionBlock's skip); grad dy itself.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& residual = Tensor());

// ---- normalisation (ops_group_norm.cpp) --------------------------------------------------------
struct GroupNormOptions {
  int groups = 32;
  double eps = 1e-5;
  bool silu = false;  // apply SiLU to the normalised, affine output
  // CUDA only: a cap on the shared memory of the one-read forward (kernels/group_norm.h's
  // smem_limit_bytes; 0: the device's limit). Tests lower it to take the chunked two-pass path,
  // which real activation sizes choose, on small shapes.
  int64_t cuda_smem_limit_bytes = 0;
};
// x [N, ..., C] (NHWC or [N, L, C]); gamma, beta [C]; add_nc [N, C] or undefined: added to x per
// (n, c) before the statistics (the ResnetBlock time-embedding projection).
Tensor group_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, const GroupNormOptions& opt,
                  const Tensor& add_nc = Tensor());

// ---- attention (ops_attention.cpp) -------------------------------------------------------------
// q, k, v [N, L, heads * d] (i.e. [N, L, heads, d]) -> softmax(q kᵀ / √d) v, same shape.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads);
// The same on q, k and v packed side by side in each row: qkv [N, L, 3 · heads * d] (q at columns
// [0, W), k at [W, 2W), v at [2W, 3W), W = heads * d) -> [N, L, W]; its grad is one qkv-shaped
// tensor. The attention block's fused projection (one linear with the three weights stacked)
// writes qkv, so neither direction splits or sums q, k and v.
Tensor attention_packed(const Tensor& qkv, int heads);

// ---- shape ops (ops_shape.cpp) -----------------------------------------------------------------
Tensor concat_channels(const Tensor& a, const Tensor& b);  // along the last dim
Tensor upsample_nearest2x(const Tensor& x);                // NHWC [N, H, W, C] -> [N, 2H, 2W, C]

// ---- embeddings (ops_embedding.cpp) ------------------------------------------------------------
// table [V, D], index i32/i64 [N] -> [N, D]; out-of-range indices are an error.
Tensor embedding(const Tensor& table, const Tensor& index);
// Sinusoidal timestep embedding (docs/design.md §7), not differentiable: t [N] (f32 or integer) ->
// [N, dim] f32 (or f64 when t is f64), on t's device. With rows > 0 and a one-element t, that one
// timestep is embedded for every one of `rows` rows ([rows, dim]; t stays where it is).
Tensor timestep_embedding(const Tensor& t, int dim, bool flip_sin_to_cos, double freq_shift, int64_t rows = 0);

// ---- regularisation and loss (ops_loss.cpp) ----------------------------------------------------
// Inverted dropout with a Philox mask from (seed, kDropout stream, block offset). p == 0 returns x.
// With `base` (i64 [1] on x's device) the mask starts at block offset + base[0], read when the
// kernels run (forward and backward), so a replayed CUDA graph draws the mask of the position
// written into base before the replay.
Tensor dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, const Tensor& base = Tensor());
// mean over all elements of w[n] * (pred - target)^2; weight [N] or undefined (all ones).
// Gradient flows to pred only.
Tensor mse_loss(const Tensor& pred, const Tensor& target, const Tensor& weight = Tensor());

// ---- the diffusion process (ops_diffusion.cpp); not differentiable ------------------------------
// Forward noising of a training batch: x0 f32 [B, ...]; sqrt_ab and sqrt_1mab f32 [B] (√ᾱ and
// √(1−ᾱ) of each sample's timestep) on x0's device. Returns x_t and the training target.
struct QSampleOutput {
  Tensor x_t;
  Tensor target;
};
// step (optional): an i64 [1] on x0's device; the draw then starts at block desc.offset +
// step · desc.step_blocks, read when the kernel runs (a replayed CUDA graph's noise position).
QSampleOutput q_sample(const kernels::QSampleDesc& desc, const Tensor& x0, const Tensor& sqrt_ab,
                       const Tensor& sqrt_1mab, const Tensor& step = Tensor());
// A training step's per-row draws (kernels/noise.h) from the 1-based step number in `step` (i64
// [1]) and the schedule's tables (f32 [3, T]: √ᾱ, √(1−ᾱ), min-SNR weight), all on one device:
// timesteps i64 [B], coefs f32 [3, B] (the tables at them) and, when labels (i64 [B]) are given,
// the labels with the dropped rows set to desc.null_class.
struct TrainDraws {
  Tensor timesteps, coefs, labels;
};
TrainDraws train_draws(const kernels::TrainDrawDesc& desc, const Tensor& step, const Tensor& tables,
                       const Tensor& labels = Tensor());
// One sampler update in place: x (x_t) becomes x_prev and x0 this step's x0 prediction (it holds
// the previous step's on entry). model_output has desc.numel elements, twice that when guided.
// per_step (optional): an i64 tensor on x's device holding a DenoiseStepDesc's bytes, read when
// the kernel runs in place of desc's scalars (desc keeps numel and guided) — so a replayed CUDA
// graph takes each step's coefficients from memory written before the replay. The caller
// validates what it writes there (kernels::validate).
void denoise_step(const kernels::DenoiseStepDesc& desc, const Tensor& model_output, const Tensor& x,
                  const Tensor& x0, const Tensor& per_step = Tensor());
// Elements of the i64 tensor that holds one DenoiseStepDesc for denoise_step's per_step.
int64_t denoise_step_desc_words();

}  // namespace diffuse::ops
