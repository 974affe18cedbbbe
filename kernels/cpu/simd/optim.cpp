// See kernels/cpu/simd/optim.h; compiled once per path (kernels/cpu/simd/isa_begin.h).
#include <cmath>
#include <cstdint>

#include "kernels/cpu/simd/isa_begin.h"
#include "kernels/cpu/simd/vec.h"
#include "kernels/cpu/simd/elementwise_lanes.h"
#include "kernels/cpu/simd/optim.h"

namespace diffuse::kernels::cpu::simd::DIFFUSE_ISA_NS {

namespace {

// Correctly rounded square root per lane (vec.h has none: only the optimizer needs one).
inline Vec sqrt_lanes(Vec a) {
#if DIFFUSE_ISA == 2
  return {_mm512_sqrt_ps(a.v)};
#elif DIFFUSE_ISA == 1
  return {_mm256_sqrt_ps(a.v)};
#elif defined(__x86_64__)
  return {_mm_sqrt_ps(a.v)};
#else
  return {std::sqrt(a.v)};
#endif
}

}  // namespace

void adamw_ema_chunk(const AdamWChunk& c) {
  const Vec decay_factor = set1(c.decay_factor), b1 = set1(c.beta1), omb1 = set1(c.one_minus_beta1);
  const Vec b2 = set1(c.beta2), omb2 = set1(c.one_minus_beta2), eps = set1(c.eps);
  const Vec neg_step = set1(c.neg_step_size), bc2 = set1(c.bias_correction2_sqrt);
  const Vec one_minus_decay = set1(c.one_minus_ema_decay), grad_scale = set1(c.grad_scale);
  over_lanes(c.n, [&](int64_t i, int n) {
    Vec p = load_part(c.param + i, n);
    if (c.grad) {
      const Vec g = load_part(c.grad + i, n) * grad_scale;
      p = p * decay_factor;
      const Vec m = product_rounded(b1, load_part(c.exp_avg + i, n)) + product_rounded(omb1, g);
      const Vec v = product_rounded(b2, load_part(c.exp_avg_sq + i, n)) + product_rounded(omb2, g * g);
      store_part(c.exp_avg + i, m, n);
      store_part(c.exp_avg_sq + i, v, n);
      const Vec denom = sqrt_lanes(v) / bc2 + eps;
      p = p + product_rounded(neg_step, m / denom);
      store_part(c.param + i, p, n);
    }
    if (c.ema) {
      const Vec e = load_part(c.ema + i, n);
      store_part(c.ema + i, e - product_rounded(one_minus_decay, e - p), n);
    }
  });
}

}  // namespace diffuse::kernels::cpu::simd::DIFFUSE_ISA_NS
