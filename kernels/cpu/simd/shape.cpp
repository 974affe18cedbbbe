// See kernels/cpu/simd/shape.h; compiled once per path (kernels/cpu/simd/isa_begin.h).
#include <cstdint>

#include "kernels/cpu/simd/isa_begin.h"
#include "kernels/cpu/simd/vec.h"
#include "kernels/cpu/simd/elementwise_lanes.h"
#include "kernels/cpu/simd/shape.h"

namespace diffuse::kernels::cpu::simd::DIFFUSE_ISA_NS {

namespace {

inline void copy_run(const float* src, float* dst, int64_t n) {
  over_lanes(n, [&](int64_t i, int m) { store_part(dst + i, load_part(src + i, m), m); });
}

}  // namespace

void concat_rows(const float* a, const float* b, float* out, int64_t ca, int64_t cb, int64_t rows) {
  const int64_t c = ca + cb;
  for (int64_t r = 0; r < rows; ++r) {
    copy_run(a + r * ca, out + r * c, ca);
    copy_run(b + r * cb, out + r * c + ca, cb);
  }
}

void split_rows(const float* g, float* ga, float* gb, int64_t ca, int64_t cb, int64_t rows) {
  const int64_t c = ca + cb;
  for (int64_t r = 0; r < rows; ++r) {
    if (ga) copy_run(g + r * c, ga + r * ca, ca);
    if (gb) copy_run(g + r * c + ca, gb + r * cb, cb);
  }
}

void upsample2x_rows(const float* x, float* y, int64_t w, int64_t c, int64_t rows) {
  const int64_t out_row = 2 * w * c;
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = x + r * w * c;
    float* top = y + r * 2 * out_row;
    float* bottom = top + out_row;
    for (int64_t j = 0; j < w; ++j)
      over_lanes(c, [&](int64_t k, int m) {
        const Vec v = load_part(src + j * c + k, m);
        store_part(top + 2 * j * c + k, v, m);
        store_part(top + (2 * j + 1) * c + k, v, m);
        store_part(bottom + 2 * j * c + k, v, m);
        store_part(bottom + (2 * j + 1) * c + k, v, m);
      });
  }
}

void upsample2x_backward_rows(const float* gy, float* gx, int64_t w, int64_t c, int64_t rows) {
  const int64_t out_row = 2 * w * c;
  for (int64_t r = 0; r < rows; ++r) {
    const float* top = gy + r * 2 * out_row;
    const float* bottom = top + out_row;
    float* dst = gx + r * w * c;
    for (int64_t j = 0; j < w; ++j) {
      const float* t0 = top + 2 * j * c;
      const float* b0 = bottom + 2 * j * c;
      over_lanes(c, [&](int64_t k, int m) {
        const Vec s = (load_part(t0 + k, m) + load_part(t0 + c + k, m)) + (load_part(b0 + k, m) + load_part(b0 + c + k, m));
        store_part(dst + j * c + k, s, m);
      });
    }
  }
}

}  // namespace diffuse::kernels::cpu::simd::DIFFUSE_ISA_NS
