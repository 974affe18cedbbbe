// CPU denoise_step (see kernels/denoise_step.h): the shared per-element math, looped one Philox
// block (4 elements) at a time so each block's four normals are drawn once. In place is safe:
// element i reads only index i of every input before writing index i of the outputs.
#include "kernels/denoise_step.h"

#include <string>

namespace diffuse::kernels {

void validate(const DenoiseStepDesc& d) {
  require(d.numel >= 0, "denoise_step: negative element count " + std::to_string(d.numel));
  require(d.update >= static_cast<int32_t>(DenoiseUpdate::ddpm) &&
              d.update <= static_cast<int32_t>(DenoiseUpdate::dpm_second),
          "denoise_step: unknown update kind " + std::to_string(d.update));
  require(!d.clip || d.clip_range > 0, "denoise_step: clip_range must be > 0, got " + std::to_string(d.clip_range));
  require(d.noise_std >= 0, "denoise_step: noise_std must be >= 0, got " + std::to_string(d.noise_std));
}

namespace cpu {

template <typename T>
void denoise_step(const DenoiseStepDesc& d, const T* x, const T* model_out, const T* x0_prev, T* x_prev,
                  T* x0_out) {
  validate(d);
  require(d.update != static_cast<int32_t>(DenoiseUpdate::dpm_second) || x0_prev != nullptr,
          "denoise_step: a second-order DPM-Solver++ step needs the previous x0");
  const int64_t n = d.numel;
  const int64_t blocks = static_cast<int64_t>(philox::blocks_for(static_cast<uint64_t>(n)));
  const bool draw = d.noise_std != 0;
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t b = 0; b < blocks; ++b) {
    float z[4] = {0, 0, 0, 0};
    if (draw) philox::normals4(d.seed, d.stream, d.noise_offset + static_cast<uint64_t>(b), z);
    const int64_t end = b * 4 + 4 < n ? b * 4 + 4 : n;
    for (int64_t i = b * 4; i < end; ++i) {
      T m = d.guided ? guided_output<T>(d, model_out[i], model_out[n + i]) : model_out[i];
      T prev = x0_prev ? x0_prev[i] : T(0);
      denoise_element<T>(d, x[i], m, prev, z[i - b * 4], &x_prev[i], &x0_out[i]);
    }
  }
}

template void denoise_step<float>(const DenoiseStepDesc&, const float*, const float*, const float*, float*, float*);
template void denoise_step<double>(const DenoiseStepDesc&, const double*, const double*, const double*, double*,
                                   double*);

}  // namespace cpu
}  // namespace diffuse::kernels
