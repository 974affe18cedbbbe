// See cpu_reference.h. Every pass is its own OpenMP loop over the whole tensor, like one op of a
// framework; GEMMs go through the same OpenBLAS wrapper as the kernels, so the difference from
// the fused kernels is the extra passes over memory, not a different GEMM.
#include "benchmarks/cpu_reference.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "kernels/philox.h"

namespace diffuse::bench::cpu_ref {

namespace k = diffuse::kernels;

// The kernels' own threshold for going parallel (kernels/cpu/*.cpp), so a small reference is not
// charged for waking threads the fused kernel would not wake either.
constexpr int64_t kParallel = 65536;

void q_sample(const k::QSampleDesc& d, const float* x0, const float* sqrt_ab, const float* sqrt_1mab, float* eps,
              float* x_t, float* target) {
  const int64_t n = d.batch * d.per_sample, quads = (n + 3) / 4;
#pragma omp parallel for schedule(static) if (n > kParallel)
  for (int64_t q = 0; q < quads; ++q) {
    float z[4];
    philox::normals4(d.seed, philox::kNoise, d.offset + static_cast<uint64_t>(q), z);
    for (int64_t i = 4 * q; i < std::min(n, 4 * q + 4); ++i) eps[i] = z[i - 4 * q];
  }
#pragma omp parallel for schedule(static) if (n > kParallel)
  for (int64_t i = 0; i < n; ++i) {
    const int64_t b = i / d.per_sample;
    x_t[i] = sqrt_ab[b] * x0[i] + sqrt_1mab[b] * eps[i];
  }
#pragma omp parallel for schedule(static) if (n > kParallel)
  for (int64_t i = 0; i < n; ++i) target[i] = eps[i];
}

void group_norm_forward(const k::GroupNormDesc& d, const float* x, const float* add_nc, const float* gamma,
                        const float* beta, float* h, float* y_lin, float* y, double* mean, double* rstd) {
  const int64_t e = d.n * d.spatial * d.channels;
  k::BroadcastDesc b = k::make_broadcast({d.n, d.spatial, d.channels}, {d.n, 1, d.channels}, "group_norm reference");
  k::cpu::binary<float>(k::BinaryOp::add, b, x, add_nc, h);
  k::GroupNormDesc plain = d;
  plain.silu = false;
  k::cpu::group_norm_forward<float>(plain, h, nullptr, gamma, beta, y_lin, mean, rstd);
  k::cpu::silu_forward<float>(e, y_lin, y);
}

void group_norm_backward(const k::GroupNormDesc& d, const float* h, const float* y_lin, const float* gamma,
                         const float* beta, const double* mean, const double* rstd, const float* dy, float* g_lin,
                         float* dh, float* dgamma, float* dbeta, float* dadd_nc) {
  const int64_t e = d.n * d.spatial * d.channels;
  k::cpu::silu_backward<float>(e, y_lin, dy, g_lin);
  k::GroupNormDesc plain = d;
  plain.silu = false;
  k::cpu::group_norm_backward<float>(plain, h, nullptr, gamma, beta, mean, rstd, g_lin, dh, dgamma, dbeta, nullptr);
  k::BroadcastDesc b = k::make_broadcast({d.n, d.spatial, d.channels}, {d.n, 1, d.channels}, "group_norm reference");
  k::cpu::reduce_to_broadcast<float>(b, dh, nullptr, dadd_nc);
}

void attention_forward(const k::AttentionDesc& d, const float* q, const float* k_, const float* v, float* p,
                       float* out) {
  const int64_t L = d.len, dh = d.head_dim, W = d.width(), pairs = d.n * d.heads;
  const int64_t n = pairs * L * L, work = n * dh;
  const float scale = static_cast<float>(1.0 / std::sqrt(double(dh)));
  auto off = [&](int64_t t) { return (t / d.heads) * L * W + (t % d.heads) * dh; };
  // Op 1: a batched GEMM writes every score matrix.
#pragma omp parallel for schedule(dynamic, 1) if (work > kParallel)
  for (int64_t t = 0; t < pairs; ++t)
    k::cpu::gemm<float>(false, true, L, L, dh, scale, q + off(t), W, k_ + off(t), W, 0.f, p + t * L * L, L);
  // Op 2: softmax over the last dim of the whole [pairs, L, L] tensor.
#pragma omp parallel for schedule(static) if (n > kParallel)
  for (int64_t r = 0; r < pairs * L; ++r) {
    float* row = p + r * L;
    const float mx = *std::max_element(row, row + L);
    double total = 0;
    for (int64_t j = 0; j < L; ++j) total += row[j] = std::exp(row[j] - mx);
    const float inv = static_cast<float>(1.0 / total);
    for (int64_t j = 0; j < L; ++j) row[j] *= inv;
  }
  // Op 3: a batched GEMM reads them back.
#pragma omp parallel for schedule(dynamic, 1) if (work > kParallel)
  for (int64_t t = 0; t < pairs; ++t)
    k::cpu::gemm<float>(false, false, L, dh, L, 1.f, p + t * L * L, L, v + off(t), W, 0.f, out + off(t), W);
}

void attention_backward(const k::AttentionDesc& d, const float* q, const float* k_, const float* v, const float* out,
                        const float* dout, const float* p, float* dp, float* dq, float* dk, float* dv) {
  const int64_t L = d.len, dh = d.head_dim, W = d.width(), pairs = d.n * d.heads;
  const int64_t n = pairs * L * L, work = n * dh;
  const float scale = static_cast<float>(1.0 / std::sqrt(double(dh)));
  auto off = [&](int64_t t) { return (t / d.heads) * L * W + (t % d.heads) * dh; };
#pragma omp parallel for schedule(dynamic, 1) if (work > kParallel)
  for (int64_t t = 0; t < pairs; ++t)  // dv = pᵀ·dout
    k::cpu::gemm<float>(true, false, L, dh, L, 1.f, p + t * L * L, L, dout + off(t), W, 0.f, dv + off(t), W);
#pragma omp parallel for schedule(dynamic, 1) if (work > kParallel)
  for (int64_t t = 0; t < pairs; ++t)  // dp = dout·vᵀ
    k::cpu::gemm<float>(false, true, L, L, dh, 1.f, dout + off(t), W, v + off(t), W, 0.f, dp + t * L * L, L);
  // Softmax backward as its own op: ds = p ∘ (dp − rowsum(dout ∘ out)), in place in dp.
#pragma omp parallel for schedule(static) if (n > kParallel)
  for (int64_t r = 0; r < pairs * L; ++r) {
    const int64_t t = r / L, i = r % L;
    const float* o = out + off(t) + i * W;
    const float* g = dout + off(t) + i * W;
    double dot = 0;
    for (int64_t c = 0; c < dh; ++c) dot += double(o[c]) * double(g[c]);
    const float rd = static_cast<float>(dot);
    float* row = dp + r * L;
    const float* prow = p + r * L;
    for (int64_t j = 0; j < L; ++j) row[j] = prow[j] * (row[j] - rd);
  }
#pragma omp parallel for schedule(dynamic, 1) if (work > kParallel)
  for (int64_t t = 0; t < pairs; ++t) {  // dq = ds·k/√d, dk = dsᵀ·q/√d
    k::cpu::gemm<float>(false, false, L, dh, L, scale, dp + t * L * L, L, k_ + off(t), W, 0.f, dq + off(t), W);
    k::cpu::gemm<float>(true, false, L, dh, L, scale, dp + t * L * L, L, q + off(t), W, 0.f, dk + off(t), W);
  }
}

void denoise_step(const k::DenoiseStepDesc& d, const float* x, const float* m, float* scratch, float* x_prev,
                  float* x0) {
  const int64_t n = d.numel;
  const float ax = float(d.x0_from_x), am = float(d.x0_from_m), r = float(d.clip_range);
#pragma omp parallel for schedule(static) if (n > kParallel)
  for (int64_t i = 0; i < n; ++i) x0[i] = ax * x[i] + am * m[i];
  if (d.clip) {
#pragma omp parallel for schedule(static) if (n > kParallel)
    for (int64_t i = 0; i < n; ++i) x0[i] = std::clamp(x0[i], -r, r);
  }
  const float cx = float(d.c_x), cx0 = float(d.c_x0);
  if (d.update == static_cast<int32_t>(k::DenoiseUpdate::ddim)) {
    const float ex = float(d.eps_from_x), em = float(d.eps_from_m), ce = float(d.c_eps);
#pragma omp parallel for schedule(static) if (n > kParallel)
    for (int64_t i = 0; i < n; ++i) scratch[i] = ex * x[i] + em * m[i];
#pragma omp parallel for schedule(static) if (n > kParallel)
    for (int64_t i = 0; i < n; ++i) x_prev[i] = cx * x[i] + cx0 * x0[i] + ce * scratch[i];
    return;
  }
#pragma omp parallel for schedule(static) if (n > kParallel)
  for (int64_t i = 0; i < n; ++i) x_prev[i] = cx * x[i] + cx0 * x0[i];
  if (d.noise_std == 0) return;
  const int64_t quads = (n + 3) / 4;
#pragma omp parallel for schedule(static) if (n > kParallel)
  for (int64_t b = 0; b < quads; ++b) {
    float z[4];
    philox::normals4(d.seed, d.stream, d.noise_offset + static_cast<uint64_t>(b), z);
    for (int64_t i = 4 * b; i < std::min(n, 4 * b + 4); ++i) scratch[i] = z[i - 4 * b];
  }
  const float sd = float(d.noise_std);
#pragma omp parallel for schedule(static) if (n > kParallel)
  for (int64_t i = 0; i < n; ++i) x_prev[i] += sd * scratch[i];
}

}  // namespace diffuse::bench::cpu_ref
