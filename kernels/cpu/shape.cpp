// CPU shape kernels (see kernels/shape.h): plain copies, OpenMP over rows once they are large.
#include "kernels/shape.h"

#include <cstring>

namespace diffuse::kernels::cpu {

template <typename T>
void concat_last(const ConcatDesc& d, const T* a, const T* b, T* out) {
  const int64_t c = d.ca + d.cb;
#pragma omp parallel for schedule(static) if (d.rows * c > 32768)
  for (int64_t r = 0; r < d.rows; ++r) {
    if (d.ca) std::memcpy(out + r * c, a + r * d.ca, sizeof(T) * d.ca);
    if (d.cb) std::memcpy(out + r * c + d.ca, b + r * d.cb, sizeof(T) * d.cb);
  }
}

template <typename T>
void split_last(const ConcatDesc& d, const T* g, T* ga, T* gb) {
  const int64_t c = d.ca + d.cb;
#pragma omp parallel for schedule(static) if (d.rows * c > 32768)
  for (int64_t r = 0; r < d.rows; ++r) {
    if (ga && d.ca) std::memcpy(ga + r * d.ca, g + r * c, sizeof(T) * d.ca);
    if (gb && d.cb) std::memcpy(gb + r * d.cb, g + r * c + d.ca, sizeof(T) * d.cb);
  }
}

template <typename T>
void upsample_nearest2x(const Upsample2xDesc& d, const T* x, T* y) {
  const int64_t wo = 2 * d.w, c = d.c;
  // One output row per iteration: rows 2i and 2i+1 both copy input row i.
#pragma omp parallel for schedule(static) if (d.n * d.h * d.w * c > 8192)
  for (int64_t row = 0; row < d.n * 2 * d.h; ++row) {
    int64_t n = row / (2 * d.h), i = (row % (2 * d.h)) / 2;
    const T* src = x + (n * d.h + i) * d.w * c;
    T* dst = y + row * wo * c;
    for (int64_t j = 0; j < d.w; ++j) {
      std::memcpy(dst + (2 * j) * c, src + j * c, sizeof(T) * c);
      std::memcpy(dst + (2 * j + 1) * c, src + j * c, sizeof(T) * c);
    }
  }
}

template <typename T>
void upsample_nearest2x_backward(const Upsample2xDesc& d, const T* gy, T* gx) {
  const int64_t wo = 2 * d.w, c = d.c;
#pragma omp parallel for schedule(static) if (d.n * d.h * d.w * c > 8192)
  for (int64_t row = 0; row < d.n * d.h; ++row) {
    int64_t n = row / d.h, i = row % d.h;
    const T* top = gy + (n * 2 * d.h + 2 * i) * wo * c;
    const T* bottom = top + wo * c;
    T* dst = gx + row * d.w * c;
    for (int64_t j = 0; j < d.w; ++j) {
      const T* t0 = top + 2 * j * c;
      const T* b0 = bottom + 2 * j * c;
      for (int64_t k = 0; k < c; ++k) dst[j * c + k] = (t0[k] + t0[c + k]) + (b0[k] + b0[c + k]);
    }
  }
}

#define DIFFUSE_INSTANTIATE(T)                                                        \
  template void concat_last<T>(const ConcatDesc&, const T*, const T*, T*);            \
  template void split_last<T>(const ConcatDesc&, const T*, T*, T*);                   \
  template void upsample_nearest2x<T>(const Upsample2xDesc&, const T*, T*);           \
  template void upsample_nearest2x_backward<T>(const Upsample2xDesc&, const T*, T*);
DIFFUSE_INSTANTIATE(float)
DIFFUSE_INSTANTIATE(double)
#undef DIFFUSE_INSTANTIATE

}  // namespace diffuse::kernels::cpu
