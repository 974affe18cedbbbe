// CPU conv2d (see kernels/conv2d.h). f32 is an implicit GEMM on the project's packed GEMM
// (kernels/cpu/gemm_blocked.h): the packers read the im2col matrix's blocks straight from the NHWC
// tensors, so no column buffer is written and read back, and the bias is added as the GEMM stores
// its tiles (with a residual, y starts as its copy and the store adds to it). Forward:
// y = im2col(x) · wᵀ. Backward: dw = dyᵀ · im2col(x); dx is the convolution of dy with the
// flipped kernel, dx = im2col'(dy) · w', where im2col'(dy) of input pixel (ih, iw) and
// tap (ki, kj) holds dy at ((ih + pad_top − ki) / stride, ...) when that divides and lies inside,
// zero otherwise (so stride 2 is exact, its rows are only sparser), and w' row (tap, co) is
// w[co, tap, :]. No scatter, no col2im gather, deterministic. A strided convolution's dx is the
// exception: about 1/stride² of that window's taps land on dy, so it would multiply mostly zeros
// (3×3 stride 2: 4× the forward's FLOPs); it runs per image as one GEMM cols = dy · w into a
// column block and a col2im scatter of the block into dx (strided_backward_data). A 3×3 stride-1 pad-1 convolution's
// forward, dx and dw run as Winograd instead (kernels/cpu/winograd.h: F(4×4, 3×3) or F(2×2, 3×3),
// 4× or 2.25× fewer FLOPs; where and which is the rule behind winograd_*_wanted there). f64
// (gradient checks) keeps the plain im2col + dgemm with a col2im gather, chunked so the column
// buffer stays near kColumnBytes.
#include "kernels/conv2d.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/gemm_blocked.h"
#include "kernels/cpu/winograd.h"
#include "kernels/gemm.h"
#include "kernels/linear.h"

namespace diffuse::kernels::cpu {

namespace {

// ---- f32: implicit GEMM ----------------------------------------------------------------------

// The rows of an implicit im2col matrix: row i is pixel (n, y, x) of a grid [N, rows_h, rows_w];
// column (tap = ki·kw + kj, ch) reads src [N, src_h, src_w, channels] at
// ((y·mul + base_h + sign·ki) / div, (x·mul + base_w + sign·kj) / div, ch), zero where that is
// outside src or does not divide.
struct ConvWindow {
  const float* src;
  int64_t src_h, src_w, channels;
  int64_t rows_h, rows_w, kw;
  int64_t mul, div, sign, base_h, base_w;

  // dst[0 .. count) = row i, columns [col, col + count).
  void copy(int64_t i, int64_t col, int64_t count, float* dst) const {
    if (div == 1) {
      copy_row<true>(i, col, count, dst);
    } else {
      copy_row<false>(i, col, count, dst);
    }
  }

 private:
  // With div == 1 (every window but a strided dx's) no tap needs the divisibility test or the
  // divisions; and a few channels per tap (conv_in's one) are copied by a loop, not by a memcpy
  // call per tap. conv_in's dw (1 channel in, 32 out, batch 32 of 32×32) packs its B rows here:
  // 3.44 ms before both, against 0.66 for its forward.
  template <bool kUnitDiv>
  void copy_row(int64_t i, int64_t col, int64_t count, float* dst) const {
    const int64_t x = i % rows_w, yn = i / rows_w, y = yn % rows_h, n = yn / rows_h;
    const float* img = src + n * src_h * src_w * channels;
    int64_t tap = col / channels, ch = col - tap * channels;
    int64_t ki = tap / kw, kj = tap - ki * kw;
    while (count > 0) {
      const int64_t len = std::min(channels - ch, count);
      int64_t sh = y * mul + base_h + sign * ki, sw = x * mul + base_w + sign * kj;
      bool inside = sh >= 0 && sw >= 0;
      if constexpr (!kUnitDiv) {
        inside = inside && sh % div == 0 && sw % div == 0;
        sh /= div;
        sw /= div;
      }
      inside = inside && sh < src_h && sw < src_w;
      if (!inside) {
        std::fill(dst, dst + len, 0.0f);
      } else if (len <= 8) {
        const float* from = img + (sh * src_w + sw) * channels + ch;
        for (int64_t c = 0; c < len; ++c) dst[c] = from[c];
      } else {
        std::memcpy(dst, img + (sh * src_w + sw) * channels + ch, size_t(len) * sizeof(float));
      }
      dst += len;
      count -= len;
      ch = 0;
      if (++kj == kw) {
        kj = 0;
        ++ki;
      }
    }
  }
};

// Forward's window: output pixels over x.
ConvWindow input_window(const Conv2dDesc& d, const float* x) {
  return {x, d.h, d.w, d.cin, d.out_h(), d.out_w(), d.kw, d.stride, 1, 1, -d.pad_top, -d.pad_left};
}

// dx's window: input pixels over dy, taps flipped.
ConvWindow output_grad_window(const Conv2dDesc& d, const float* dy) {
  return {dy, d.out_h(), d.out_w(), d.cout, d.h, d.w, d.kw, 1, d.stride, -1, d.pad_top, d.pad_left};
}

// A = the window's rows, packed block by block (an im2col of mc × kc floats that stays in cache).
struct WindowA {
  ConvWindow win;
  const float* operator()(int64_t i0, int64_t mc, int64_t p0, int64_t kc, float* dst, int64_t& ld) const {
    ld = kc;
    for (int64_t r = 0; r < mc; ++r) win.copy(i0 + r, p0, kc, dst + r * kc);
    return dst;
  }
};

// A = the window's rows read in place: a table of where each row's taps are in src (or zeros),
// nothing copied. Worth it from a few channels per tap up; below that the table is as big as the
// data and the packed WindowA is faster.
struct WindowRowsA {
  static constexpr bool kIndirect = true;
  static constexpr int64_t kMinChannels = 16;
  ConvWindow win;
  int64_t run_length() const { return win.channels; }
  void operator()(int64_t i0, int64_t mc, int64_t p0, int64_t kc, const float** table, const float* zeros) const {
    // Stride-1 windows (every forward, and dx of a stride-1 conv) skip the divisibility test.
    if (win.div == 1) {
      fill<true>(i0, mc, p0, kc, table, zeros);
    } else {
      fill<false>(i0, mc, p0, kc, table, zeros);
    }
  }

 private:
  // Divisions only for the block's first row and tap; the table is rebuilt for every block of
  // every GEMM, and an int64 division per tap cost as much as a tenth of a sampling step.
  template <bool kUnitDiv>
  void fill(int64_t i0, int64_t mc, int64_t p0, int64_t kc, const float** table, const float* zeros) const {
    const int64_t tap0 = p0 / win.channels, taps = kc / win.channels;
    const int64_t ki0 = tap0 / win.kw, kj0 = tap0 - ki0 * win.kw;
    const int64_t image = win.src_h * win.src_w * win.channels;
    int64_t x = i0 % win.rows_w, yn = i0 / win.rows_w, y = yn % win.rows_h, n = yn / win.rows_h;
    for (int64_t r = 0; r < mc; ++r) {
      const float* img = win.src + n * image;
      const int64_t h0 = y * win.mul + win.base_h, w0 = x * win.mul + win.base_w;
      const float** row = table + r * taps;
      int64_t ki = ki0, kj = kj0;
      for (int64_t t = 0; t < taps; ++t) {
        int64_t sh = h0 + win.sign * ki, sw = w0 + win.sign * kj;
        bool inside = sh >= 0 && sw >= 0;
        if constexpr (!kUnitDiv) {
          inside = inside && sh % win.div == 0 && sw % win.div == 0;
          sh /= win.div;
          sw /= win.div;
        }
        inside = inside && sh < win.src_h && sw < win.src_w;
        row[t] = inside ? img + (sh * win.src_w + sw) * win.channels : zeros;
        if (++kj == win.kw) {
          kj = 0;
          ++ki;
        }
      }
      if (++x == win.rows_w) {
        x = 0;
        if (++y == win.rows_h) {
          y = 0;
          ++n;
        }
      }
    }
  }
};

// The GEMM over a window: read in place (WindowRowsA) when the runs are long enough, else packed.
// beta 1 adds the product to what c holds (forward's residual), beta 0 overwrites c.
template <class PackB>
void window_gemm(int64_t m, int64_t n, int64_t k, const ConvWindow& win, const PackB& pack_b, float beta,
                 const float* bias, float* c) {
  if (win.channels >= WindowRowsA::kMinChannels) {
    blocked_gemm(m, n, k, 1.0f, WindowRowsA{win}, pack_b, beta, bias, c, n);
  } else {
    blocked_gemm(m, n, k, 1.0f, WindowA{win}, pack_b, beta, bias, c, n);
  }
}

// B = the window's rows (dw's im2col(x), reduction over pixels).
struct WindowRowB {
  ConvWindow win;
  const float* operator()(int64_t p, int64_t j0, int64_t count, float* tmp) const {
    win.copy(p, j0, count, tmp);
    return tmp;
  }
};

// B = w' for dx: row p = (tap, co) is w[co, tap, :], read in place.
struct FlippedWeightRowB {
  const float* w;
  int64_t taps, cout, cin;
  const float* operator()(int64_t p, int64_t j0, int64_t, float*) const {
    const int64_t tap = p / cout, co = p - tap * cout;
    return w + (co * taps + tap) * cin + j0;
  }
};

// With a residual, Winograd's output transform adds it as it stores y; the implicit GEMM starts y
// as its copy and the GEMM's store adds the product and the bias to it (beta 1). Neither reads y
// back in a separate add pass.
void forward_f32(const Conv2dDesc& d, const float* x, const float* w, const float* bias, const float* residual,
                 float* y) {
  if (winograd_forward_wanted(d)) {
    winograd_conv3x3_forward(d, x, w, bias, y, residual);
    return;
  }
  const int64_t k = d.k(), pixels = d.n * d.out_h() * d.out_w();
  const float beta = start_from_residual(pixels * d.cout, residual, y);
  window_gemm(pixels, d.cout, k, input_window(d, x), TransposedB{w, k}, beta, bias, y);
}

// dx of a strided convolution, image by image (an image's dx is written by one thread, its taps
// added in a fixed order, so results do not depend on the thread count): the columns
// cols [out pixels, kh·kw·Cin] = dy_n · w (w is [Cout, kh·kw·Cin] row-major), then each output
// pixel's taps added into the dx pixels they came from. Measured at `tiny`'s downsample (32
// channels, 32×32 → 16×16, batch 32, one thread): 4.48 ms as the implicit GEMM over dy's window,
// against the forward's 1.01.
void strided_backward_data(const Conv2dDesc& d, const float* w, const float* dy, float* dx) {
  const int64_t oh = d.out_h(), ow = d.out_w(), k = d.kh * d.kw * d.cin;
  const int64_t out_pixels = oh * ow, image = d.h * d.w * d.cin;
  parallel_for(d.n, double(out_pixels) * double(k) * double(d.cout + 1), [&](int64_t n0, int64_t n1) {
    float* cols = thread_scratch_of<float>(0, size_t(out_pixels * k));
    for (int64_t n = n0; n < n1; ++n) {
      gemm_bias(false, false, out_pixels, k, d.cout, 1.0f, dy + n * out_pixels * d.cout, d.cout, w, k, 0.0f, nullptr,
                cols, k);
      float* img = dx + n * image;
      std::fill(img, img + image, 0.0f);
      for (int64_t oy = 0; oy < oh; ++oy)
        for (int64_t ox = 0; ox < ow; ++ox) {
          const float* col = cols + (oy * ow + ox) * k;
          for (int64_t ki = 0; ki < d.kh; ++ki) {
            const int64_t iy = oy * d.stride - d.pad_top + ki;
            if (iy < 0 || iy >= d.h) continue;
            for (int64_t kj = 0; kj < d.kw; ++kj) {
              const int64_t ix = ox * d.stride - d.pad_left + kj;
              if (ix < 0 || ix >= d.w) continue;
              float* __restrict to = img + (iy * d.w + ix) * d.cin;
              const float* __restrict from = col + (ki * d.kw + kj) * d.cin;
              for (int64_t c = 0; c < d.cin; ++c) to[c] += from[c];
            }
          }
        }
    }
  });
}

// dbias comes from Winograd dw's own pass over dy when that runs, else from a column sum.
void backward_f32(const Conv2dDesc& d, const float* x, const float* w, const float* dy, float* dx, float* dw,
                  float* dbias) {
  const int64_t k = d.k(), pixels = d.n * d.out_h() * d.out_w();
  const bool winograd_dw = dw && winograd_backward_weights_wanted(d);
  if (dbias && !winograd_dw) column_sum(pixels, d.cout, dy, dbias);
  if (winograd_dw) {
    winograd_conv3x3_backward_weights(d, x, dy, dw, dbias);
  } else if (dw) {
    blocked_gemm(d.cout, k, pixels, 1.0f, TransposedA{dy, d.cout}, RowsB<WindowRowB>{{input_window(d, x)}}, 0.0f,
                 nullptr, dw, k);
  }
  if (dx && winograd_backward_data_wanted(d)) {
    winograd_conv3x3_backward_data(d, w, dy, dx);
  } else if (dx && d.stride > 1) {
    strided_backward_data(d, w, dy, dx);
  } else if (dx) {
    const int64_t taps = d.kh * d.kw;
    window_gemm(d.n * d.h * d.w, d.cin, taps * d.cout, output_grad_window(d, dy),
                RowsB<FlippedWeightRowB>{{w, taps, d.cout, d.cin}}, 0.0f, nullptr, dx);
  }
}

// ---- f64: im2col + dgemm ---------------------------------------------------------------------

// Column buffer budget per chunk (at least one whole image).
constexpr size_t kColumnBytes = size_t(8) << 20;

int64_t images_per_chunk(const Conv2dDesc& d) {
  int64_t per_image = d.out_h() * d.out_w() * d.k() * int64_t(sizeof(double));
  return std::clamp<int64_t>(int64_t(kColumnBytes) / std::max<int64_t>(per_image, 1), 1, std::max<int64_t>(d.n, 1));
}

// cols[(n, oh, ow), (ki, kj, ci)] for images [n0, n0 + count); zeros where the window is in padding.
void im2col(const Conv2dDesc& d, const double* x, int64_t n0, int64_t count, double* cols) {
  const int64_t ho = d.out_h(), wo = d.out_w(), k = d.k();
  const size_t run = size_t(d.cin) * sizeof(double);
  for (int64_t r = 0; r < count * ho; ++r) {
    const int64_t n = n0 + r / ho, oh = r % ho;
    const double* img = x + n * d.h * d.w * d.cin;
    for (int64_t ow = 0; ow < wo; ++ow) {
      double* row = cols + (r * wo + ow) * k;
      for (int64_t ki = 0; ki < d.kh; ++ki) {
        const int64_t ih = oh * d.stride - d.pad_top + ki;
        for (int64_t kj = 0; kj < d.kw; ++kj) {
          const int64_t iw = ow * d.stride - d.pad_left + kj;
          double* dst = row + (ki * d.kw + kj) * d.cin;
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
void col2im(const Conv2dDesc& d, const double* dcols, int64_t n0, int64_t count, double* dx) {
  const int64_t ho = d.out_h(), wo = d.out_w(), k = d.k(), s = d.stride;
  for (int64_t r = 0; r < count * d.h; ++r) {
    const int64_t nl = r / d.h, ih = r % d.h;
    double* out_row = dx + ((n0 + nl) * d.h + ih) * d.w * d.cin;
    std::fill(out_row, out_row + d.w * d.cin, 0.0);
    for (int64_t ki = 0; ki < d.kh; ++ki) {
      const int64_t oh_s = ih + d.pad_top - ki;  // = oh * stride
      if (oh_s < 0 || oh_s % s != 0 || oh_s / s >= ho) continue;
      const int64_t oh = oh_s / s;
      for (int64_t iw = 0; iw < d.w; ++iw) {
        double* out = out_row + iw * d.cin;
        for (int64_t kj = 0; kj < d.kw; ++kj) {
          const int64_t ow_s = iw + d.pad_left - kj;
          if (ow_s < 0 || ow_s % s != 0 || ow_s / s >= wo) continue;
          const double* src = dcols + ((nl * ho + oh) * wo + ow_s / s) * k + (ki * d.kw + kj) * d.cin;
          for (int64_t c = 0; c < d.cin; ++c) out[c] += src[c];
        }
      }
    }
  }
}

void forward_f64(const Conv2dDesc& d, const double* x, const double* w, const double* bias, const double* residual,
                 double* y) {
  const int64_t p_img = d.out_h() * d.out_w(), k = d.k();
  const int64_t chunk = images_per_chunk(d);
  double* cols = thread_scratch_of<double>(0, size_t(std::min(chunk, d.n) * p_img * k));
  for (int64_t n0 = 0; n0 < d.n; n0 += chunk) {
    const int64_t count = std::min(chunk, d.n - n0);
    im2col(d, x, n0, count, cols);
    const int64_t offset = n0 * p_img * d.cout;
    linear_forward(LinearDesc{count * p_img, k, d.cout}, cols, w, bias, y + offset,
                   residual ? residual + offset : nullptr);
  }
}

void backward_f64(const Conv2dDesc& d, const double* x, const double* w, const double* dy, double* dx, double* dw) {
  const int64_t p_img = d.out_h() * d.out_w(), k = d.k();
  if (dw && d.n == 0) std::fill(dw, dw + d.cout * k, 0.0);
  const int64_t chunk = images_per_chunk(d);
  double* cols = thread_scratch_of<double>(0, size_t(std::min(chunk, d.n) * p_img * k));
  for (int64_t n0 = 0; n0 < d.n; n0 += chunk) {
    const int64_t count = std::min(chunk, d.n - n0);
    const int64_t rows = count * p_img;
    const double* dyc = dy + n0 * p_img * d.cout;
    if (dw) {  // dw[Cout, K] (+)= dyᵀ · cols
      im2col(d, x, n0, count, cols);
      gemm<double>(true, false, d.cout, k, rows, 1.0, dyc, d.cout, cols, k, n0 == 0 ? 0.0 : 1.0, dw, k);
    }
    if (dx) {  // dcols[rows, K] = dy · w, then gathered into dx (reuses the column buffer)
      gemm<double>(false, false, rows, k, d.cout, 1.0, dyc, d.cout, w, k, 0.0, cols, k);
      col2im(d, cols, n0, count, dx);
    }
  }
}

LinearDesc as_linear(const Conv2dDesc& d) { return {d.n * d.h * d.w, d.cin, d.cout}; }

}  // namespace

template <typename T>
void conv2d_forward(const Conv2dDesc& d, const T* x, const T* w, const T* bias, T* y, const T* residual) {
  if (d.pointwise()) {
    linear_forward(as_linear(d), x, w, bias, y, residual);
  } else if constexpr (sizeof(T) == sizeof(float)) {
    forward_f32(d, x, w, bias, residual, y);
  } else {
    forward_f64(d, x, w, bias, residual, y);
  }
}

template <typename T>
void conv2d_backward(const Conv2dDesc& d, const T* x, const T* w, const T* dy, T* dx, T* dw, T* dbias) {
  if (d.pointwise()) {
    linear_backward(as_linear(d), x, w, dy, dx, dw, dbias);
    return;
  }
  if constexpr (sizeof(T) == sizeof(float)) {
    backward_f32(d, x, w, dy, dx, dw, dbias);
  } else {
    if (dbias) column_sum(d.n * d.out_h() * d.out_w(), d.cout, dy, dbias);
    backward_f64(d, x, w, dy, dx, dw);
  }
}

#define DIFFUSE_INSTANTIATE(T)                                                                  \
  template void conv2d_forward<T>(const Conv2dDesc&, const T*, const T*, const T*, T*, const T*); \
  template void conv2d_backward<T>(const Conv2dDesc&, const T*, const T*, const T*, T*, T*, T*);
DIFFUSE_INSTANTIATE(float)
DIFFUSE_INSTANTIATE(double)
#undef DIFFUSE_INSTANTIATE

}  // namespace diffuse::kernels::cpu
