// CPU shape kernels (see kernels/shape.h): plain copies over rows, in one parallel region once
// they are large (kernels/cpu/parallel.h). f32 copies with the inline vector loops of
// kernels/cpu/simd/shape.h; f64 (gradient checks) with memcpy and a scalar loop.
#include "kernels/shape.h"

#include <cstring>
#include <type_traits>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd/shape.h"

namespace diffuse::kernels::cpu {

template <typename T>
void concat_last(const ConcatDesc& d, const T* a, const T* b, T* out) {
  const int64_t c = d.ca + d.cb;
  parallel_for(d.rows, double(c), [&](int64_t begin, int64_t end) {
    if constexpr (std::is_same_v<T, float>) {
      simd::concat_rows(a + begin * d.ca, b + begin * d.cb, out + begin * c, d.ca, d.cb, end - begin);
    } else {
      for (int64_t r = begin; r < end; ++r) {
        if (d.ca) std::memcpy(out + r * c, a + r * d.ca, sizeof(T) * d.ca);
        if (d.cb) std::memcpy(out + r * c + d.ca, b + r * d.cb, sizeof(T) * d.cb);
      }
    }
  });
}

template <typename T>
void split_last(const ConcatDesc& d, const T* g, T* ga, T* gb) {
  const int64_t c = d.ca + d.cb;
  parallel_for(d.rows, double(c), [&](int64_t begin, int64_t end) {
    if constexpr (std::is_same_v<T, float>) {
      simd::split_rows(g + begin * c, ga ? ga + begin * d.ca : nullptr, gb ? gb + begin * d.cb : nullptr, d.ca, d.cb,
                       end - begin);
    } else {
      for (int64_t r = begin; r < end; ++r) {
        if (ga && d.ca) std::memcpy(ga + r * d.ca, g + r * c, sizeof(T) * d.ca);
        if (gb && d.cb) std::memcpy(gb + r * d.cb, g + r * c + d.ca, sizeof(T) * d.cb);
      }
    }
  });
}

// Both directions walk input rows (n, i): output rows 2i and 2i + 1 belong to input row i.
template <typename T>
void upsample_nearest2x(const Upsample2xDesc& d, const T* x, T* y) {
  const int64_t wo = 2 * d.w, c = d.c;
  parallel_for(d.n * d.h, double(4 * d.w * c), [&](int64_t begin, int64_t end) {
    if constexpr (std::is_same_v<T, float>) {
      simd::upsample2x_rows(x + begin * d.w * c, y + begin * 2 * wo * c, d.w, c, end - begin);
    } else {
      for (int64_t row = begin; row < end; ++row) {
        const T* src = x + row * d.w * c;
        for (int64_t half = 0; half < 2; ++half) {
          T* dst = y + (2 * row + half) * wo * c;
          for (int64_t j = 0; j < d.w; ++j) {
            std::memcpy(dst + (2 * j) * c, src + j * c, sizeof(T) * c);
            std::memcpy(dst + (2 * j + 1) * c, src + j * c, sizeof(T) * c);
          }
        }
      }
    }
  });
}

template <typename T>
void upsample_nearest2x_backward(const Upsample2xDesc& d, const T* gy, T* gx) {
  const int64_t wo = 2 * d.w, c = d.c;
  parallel_for(d.n * d.h, double(4 * d.w * c), [&](int64_t begin, int64_t end) {
    if constexpr (std::is_same_v<T, float>) {
      simd::upsample2x_backward_rows(gy + begin * 2 * wo * c, gx + begin * d.w * c, d.w, c, end - begin);
    } else {
      for (int64_t row = begin; row < end; ++row) {
        const T* top = gy + 2 * row * wo * c;
        const T* bottom = top + wo * c;
        T* dst = gx + row * d.w * c;
        for (int64_t j = 0; j < d.w; ++j) {
          const T* t0 = top + 2 * j * c;
          const T* b0 = bottom + 2 * j * c;
          for (int64_t k = 0; k < c; ++k) dst[j * c + k] = (t0[k] + t0[c + k]) + (b0[k] + b0[c + k]);
        }
      }
    }
  });
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
