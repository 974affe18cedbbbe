// CPU q_sample (see kernels/noise.h): the reference the CUDA kernel is checked against. Works in
// Philox quads (one counter block = four normals = four consecutive flat elements), OpenMP over
// quads; the sample index of each element comes from a division, not from the kernel's stepping.
#include "kernels/noise.h"
#include "kernels/philox.h"

namespace diffuse::kernels::cpu {

void q_sample(const QSampleDesc& d, const float* x0, const float* sqrt_ab, const float* sqrt_1mab, float* x_t,
              float* target) {
  check_q_sample(d, x0, sqrt_ab, sqrt_1mab, x_t, target);
  const int64_t total = d.batch * d.per_sample;
  const int64_t quads = (total + 3) / 4;
#pragma omp parallel for schedule(static) if (total > 65536)
  for (int64_t q = 0; q < quads; ++q) {
    float eps[4];
    philox::normals4(d.seed, philox::kNoise, d.offset + static_cast<uint64_t>(q), eps);
    for (int j = 0; j < 4; ++j) {
      int64_t k = 4 * q + j;
      if (k >= total) break;
      int64_t b = k / d.per_sample;
      q_sample_element(x0[k], eps[j], sqrt_ab[b], sqrt_1mab[b], d.target, x_t[k], target[k]);
    }
  }
}

}  // namespace diffuse::kernels::cpu
