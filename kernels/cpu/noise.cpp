// CPU q_sample (see kernels/noise.h): the reference the CUDA kernel is checked against. Works in
// Philox quads (one counter block = four normals = four consecutive flat elements), one
// parallel_for region over quads (kernels/cpu/parallel.h); the sample index of each element comes
// from a division, not from the kernel's stepping. Next to nothing in a training step (about 0.02%
// of a tiny step), so it stays scalar code. train_draws is a loop over the batch's rows.
#include "kernels/noise.h"

#include "kernels/cpu/parallel.h"
#include "kernels/philox.h"

namespace diffuse::kernels::cpu {

void q_sample(const QSampleDesc& d, const float* x0, const float* sqrt_ab, const float* sqrt_1mab, float* x_t,
              float* target) {
  check_q_sample(d, x0, sqrt_ab, sqrt_1mab, x_t, target);
  const int64_t total = d.batch * d.per_sample;
  const int64_t quads = (total + 3) / 4;
  const uint64_t offset = q_sample_offset(d);
  // Cost 4 per quad: a region from 65536 elements up.
  parallel_for(quads, 4, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      float eps[4];
      philox::normals4(d.seed, philox::kNoise, offset + static_cast<uint64_t>(q), eps);
      for (int j = 0; j < 4; ++j) {
        int64_t k = 4 * q + j;
        if (k >= total) break;
        int64_t b = k / d.per_sample;
        q_sample_element(x0[k], eps[j], sqrt_ab[b], sqrt_1mab[b], d.target, x_t[k], target[k]);
      }
    }
  });
}

void train_draws(const TrainDrawDesc& d, const TrainDrawBuffers& b) {
  check_train_draws(d, b);
  const int64_t step = d.batch ? *b.step : 0;
  for (int64_t i = 0; i < d.batch; ++i) train_draw_row(d, b, step, i);
}

}  // namespace diffuse::kernels::cpu
