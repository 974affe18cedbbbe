// CPU conv2d (see kernels/conv2d.h): im2col + one OpenBLAS GEMM per chunk of whole images, the
// chunk sized so the column buffer stays near kColumnBytes whatever the batch. Backward turns
// dy into column gradients with a GEMM and gathers them back into dx (col2im as a gather per
// input pixel: no scatter conflicts, so it is parallel and deterministic).
#include "kernels/conv2d.h"

#include <algorithm>
#include <cstring>

#include "kernels/gemm.h"
#include "kernels/linear.h"

namespace diffuse::kernels::cpu {

namespace {

// Column buffer budget per chunk (at least one whole image). Small enough to stay mostly in cache
// between im2col and the GEMM: measured ~2x faster forward than 32 MB chunks at 32x32x32, batch 32.
constexpr size_t kColumnBytes = size_t(8) << 20;

template <typename T>
int64_t images_per_chunk(const Conv2dDesc& d) {
  int64_t per_image = d.out_h() * d.out_w() * d.k() * int64_t(sizeof(T));
  return std::clamp<int64_t>(int64_t(kColumnBytes) / std::max<int64_t>(per_image, 1), 1, std::max<int64_t>(d.n, 1));
}

// cols[(n, oh, ow), (ki, kj, ci)] for images [n0, n0 + count); zeros where the window is in padding.
template <typename T>
void im2col(const Conv2dDesc& d, const T* x, int64_t n0, int64_t count, T* cols) {
  const int64_t ho = d.out_h(), wo = d.out_w(), k = d.k();
  const size_t run = size_t(d.cin) * sizeof(T);
#pragma omp parallel for schedule(static) if (count * ho * wo * k > 32768)
  for (int64_t r = 0; r < count * ho; ++r) {
    const int64_t n = n0 + r / ho, oh = r % ho;
    const T* img = x + n * d.h * d.w * d.cin;
    for (int64_t ow = 0; ow < wo; ++ow) {
      T* row = cols + (r * wo + ow) * k;
      for (int64_t ki = 0; ki < d.kh; ++ki) {
        const int64_t ih = oh * d.stride - d.pad_top + ki;
        for (int64_t kj = 0; kj < d.kw; ++kj) {
          const int64_t iw = ow * d.stride - d.pad_left + kj;
          T* dst = row + (ki * d.kw + kj) * d.cin;
          if (ih < 0 || ih >= d.h || iw < 0 || iw >= d.w) {
            std::memset(dst, 0, run);
          } else {
            std::memcpy(dst, img + (ih * d.w + iw) * d.cin, run);
          }
        }
      }
    }
  }
}

// dx[n, ih, iw, :] = sum of dcols[(n, oh, ow), (ki, kj, :)] over the windows that cover (ih, iw).
template <typename T>
void col2im(const Conv2dDesc& d, const T* dcols, int64_t n0, int64_t count, T* dx) {
  const int64_t ho = d.out_h(), wo = d.out_w(), k = d.k(), s = d.stride;
#pragma omp parallel for schedule(static) if (count * d.h * d.w * d.cin > 32768)
  for (int64_t r = 0; r < count * d.h; ++r) {
    const int64_t nl = r / d.h, ih = r % d.h;
    T* out_row = dx + ((n0 + nl) * d.h + ih) * d.w * d.cin;
    std::fill(out_row, out_row + d.w * d.cin, T(0));
    for (int64_t ki = 0; ki < d.kh; ++ki) {
      const int64_t oh_s = ih + d.pad_top - ki;  // = oh * stride
      if (oh_s < 0 || oh_s % s != 0 || oh_s / s >= ho) continue;
      const int64_t oh = oh_s / s;
      for (int64_t iw = 0; iw < d.w; ++iw) {
        T* out = out_row + iw * d.cin;
        for (int64_t kj = 0; kj < d.kw; ++kj) {
          const int64_t ow_s = iw + d.pad_left - kj;
          if (ow_s < 0 || ow_s % s != 0 || ow_s / s >= wo) continue;
          const T* src = dcols + ((nl * ho + oh) * wo + ow_s / s) * k + (ki * d.kw + kj) * d.cin;
          for (int64_t c = 0; c < d.cin; ++c) out[c] += src[c];
        }
      }
    }
  }
}

LinearDesc as_linear(const Conv2dDesc& d) { return {d.n * d.h * d.w, d.cin, d.cout}; }

}  // namespace

template <typename T>
void conv2d_forward(const Conv2dDesc& d, const T* x, const T* w, const T* bias, T* y) {
  if (d.pointwise()) {
    linear_forward(as_linear(d), x, w, bias, y);
    return;
  }
  const int64_t p_img = d.out_h() * d.out_w(), k = d.k();
  const int64_t chunk = images_per_chunk<T>(d);
  T* cols = thread_scratch_of<T>(0, size_t(std::min(chunk, d.n) * p_img * k));
  for (int64_t n0 = 0; n0 < d.n; n0 += chunk) {
    const int64_t count = std::min(chunk, d.n - n0);
    const int64_t rows = count * p_img;
    T* yc = y + n0 * p_img * d.cout;
    im2col(d, x, n0, count, cols);
    linear_forward(LinearDesc{rows, k, d.cout}, cols, w, bias, yc);
  }
}

template <typename T>
void conv2d_backward(const Conv2dDesc& d, const T* x, const T* w, const T* dy, T* dx, T* dw, T* dbias) {
  if (d.pointwise()) {
    linear_backward(as_linear(d), x, w, dy, dx, dw, dbias);
    return;
  }
  const int64_t p_img = d.out_h() * d.out_w(), k = d.k();
  if (dbias) column_sum(d.n * p_img, d.cout, dy, dbias);
  if (!dx && !dw) return;
  if (dw && d.n == 0) std::fill(dw, dw + d.cout * k, T(0));
  const int64_t chunk = images_per_chunk<T>(d);
  T* cols = thread_scratch_of<T>(0, size_t(std::min(chunk, d.n) * p_img * k));
  for (int64_t n0 = 0; n0 < d.n; n0 += chunk) {
    const int64_t count = std::min(chunk, d.n - n0);
    const int64_t rows = count * p_img;
    const T* dyc = dy + n0 * p_img * d.cout;
    if (dw) {  // dw[Cout, K] (+)= dyᵀ · cols
      im2col(d, x, n0, count, cols);
      gemm<T>(true, false, d.cout, k, rows, T(1), dyc, d.cout, cols, k, n0 == 0 ? T(0) : T(1), dw, k);
    }
    if (dx) {  // dcols[rows, K] = dy · w, then gathered into dx (reuses the column buffer)
      gemm<T>(false, false, rows, k, d.cout, T(1), dyc, d.cout, w, k, T(0), cols, k);
      col2im(d, cols, n0, count, dx);
    }
  }
}

#define DIFFUSE_INSTANTIATE(T)                                                                  \
  template void conv2d_forward<T>(const Conv2dDesc&, const T*, const T*, const T*, T*);        \
  template void conv2d_backward<T>(const Conv2dDesc&, const T*, const T*, const T*, T*, T*, T*);
DIFFUSE_INSTANTIATE(float)
DIFFUSE_INSTANTIATE(double)
#undef DIFFUSE_INSTANTIATE

}  // namespace diffuse::kernels::cpu
