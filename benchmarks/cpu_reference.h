// The CPU references of the kernel benchmark: each fused kernel's work done the unfused way a
// framework composes it from separate ops — one pass over memory per op, intermediates written
// out and read back (e.g. add + group_norm + SiLU; all q·kᵀ scores materialised, then softmax,
// then p·v). Buffers are the caller's, so only the passes themselves are timed.
#pragma once
#include <cstdint>

#include "kernels/attention.h"
#include "kernels/denoise_step.h"
#include "kernels/group_norm.h"
#include "kernels/noise.h"

namespace diffuse::bench::cpu_ref {

// Pass 1 draws ε (Philox, the same numbers as the kernel) into eps; pass 2 blends x_t; pass 3
// copies the target.
void q_sample(const kernels::QSampleDesc& d, const float* x0, const float* sqrt_ab, const float* sqrt_1mab,
              float* eps, float* x_t, float* target);

// h = x + add_nc; y_lin = group_norm(h) (no fusion); y = silu(y_lin). d.silu is ignored.
void group_norm_forward(const kernels::GroupNormDesc& d, const float* x, const float* add_nc, const float* gamma,
                        const float* beta, float* h, float* y_lin, float* y, double* mean, double* rstd);
// From the forward's saved h and y_lin: g_lin = silu'(y_lin)·dy; dh, dgamma, dbeta by the plain
// group_norm backward; dadd_nc = dh summed over positions.
void group_norm_backward(const kernels::GroupNormDesc& d, const float* h, const float* y_lin, const float* gamma,
                         const float* beta, const double* mean, const double* rstd, const float* dy, float* g_lin,
                         float* dh, float* dgamma, float* dbeta, float* dadd_nc);

// p [n·heads, L, L] receives every probability matrix (kept for the backward, as autograd would).
void attention_forward(const kernels::AttentionDesc& d, const float* q, const float* k, const float* v, float* p,
                       float* out);
// From the saved p: dv = pᵀ·dout, dp = dout·vᵀ, the softmax backward into dp, then dq and dk.
void attention_backward(const kernels::AttentionDesc& d, const float* q, const float* k, const float* v,
                        const float* out, const float* dout, const float* p, float* dp, float* dq, float* dk,
                        float* dv);

// The same update as denoise_step (ddpm or ddim, unguided), one element-wise pass per op:
// x0 prediction, clip, ε̂ (ddim) or the noise draw (ddpm), then the update. scratch: numel.
void denoise_step(const kernels::DenoiseStepDesc& d, const float* x, const float* m, float* scratch, float* x_prev,
                  float* x0);

}  // namespace diffuse::bench::cpu_ref
