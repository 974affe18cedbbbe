// See kernels/cpu/simd/winograd.h; compiled once per path (kernels/cpu/simd/isa_begin.h).
// F(2×2, 3×3) (interpolation points 0, ±1, ∞): Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1] and
// Aᵀ = [1 1 1 0; 0 1 −1 −1]: additions only, so the transforms add no rounding beyond the sums
// themselves. F(4×4, 3×3): interpolation points 0, 1, −1, ½, −2, ∞ rather than the usual 0, ±1,
// ±2, ∞ — the same work, but 2.5–3× less f32 error (the usual points measured 1.46e-5 and 1.58e-5 on two
// of the op table's conv rows against their 1e-5 bound; kernels/cpu/winograd.h). Worked out from the
// Toom–Cook construction (Bᵀ row j: the coefficients of Π_{l≠j}(x − p_l); G row j: p_jᵏ / Π_{l≠j}(p_j −
// p_l); Aᵀ column j: p_jⁱ), rows of Bᵀ and G and the ½ column of Aᵀ then scaled by powers of two
// (exact) so that Bᵀ and Aᵀ hold small integers, and checked in f64 against the correlation,
// y_i = Σ_k d_{i+k}·g_k, before it was written here:
//   Bᵀ = [2 −3 −4  3 2 0;      G = [ 1/2     0     0;      Aᵀ = [1 1  1 8  1 0;
//         0 −2  1  5 2 0;             1/6   1/6   1/6;            0 1 −1 4 −2 0;
//         0  2 −5  1 2 0;            −1/6   1/6  −1/6;            0 1  1 2  4 0;
//         0 −2 −1  2 1 0;            −4/30 −2/30 −1/30;           0 1 −1 1 −8 1]
//         0  1 −2 −1 2 0;             1/30 −2/30  4/30;
//         0  2 −3 −4 3 2]             0     0     1/2]
// The fractions sit in G, which runs once per weight per call. The weight gradient's F(3×3, 4×4)
// (the same points, so the same Bᵀ for x's 6×6 windows) transforms 4×4 tiles of dy with G₄ and
// the 6×6 sums back to the 3×3 dw with A₃ᵀ, scaled to match Bᵀ's rows and checked the same way:
//   G₄ = [ 1/2    0     0     0;       A₃ᵀ = [1 1  1 4  1 0;
//          1/6   1/6   1/6   1/6;              0 1 −1 2 −2 0;
//         −1/6   1/6  −1/6   1/6;              0 1  1 1  4 1]
//         −8/30 −4/30 −2/30 −1/30;
//          1/30 −2/30  4/30 −8/30;
//          0     0     0     1/2]
// Row 1 of G₄ sums the tile's dy (/ 6), so position 7 of G₄·dY·G₄ᵀ is the tile's dy sum / 36.
#include <cstdint>

#include "kernels/cpu/simd/isa_begin.h"
#include "kernels/cpu/simd/vec.h"
#include "kernels/cpu/simd/elementwise_lanes.h"
#include "kernels/cpu/simd/winograd.h"

namespace diffuse::kernels::cpu::simd::DIFFUSE_ISA_NS {

namespace {

// Where tile t lies: its image and the top-left pixel of its m×m outputs.
struct TilePos {
  int64_t n, y, x;
};

inline TilePos tile_pos(int64_t t, int64_t th, int64_t tw, int64_t m) {
  const int64_t tx = t % tw, rest = t / tw;
  return {rest / th, m * (rest % th), m * tx};
}

// at[i][j]: pixel (p.y + i, p.x + j) of the tile's image in the NHWC tensor `base` [N, h, w, C],
// or null outside the image (the partial tiles at the right and bottom edges).
template <int M, typename T>
inline void tile_pixels(T* base, int64_t h, int64_t w, int64_t channels, const TilePos& p, T* (&at)[M][M]) {
  T* img = base + p.n * h * w * channels;
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < M; ++j)
      at[i][j] = p.y + i < h && p.x + j < w ? img + ((p.y + i) * w + p.x + j) * channels : nullptr;
}

// V = Bᵀ·d·B for the `lanes` channels at offset c of one tile: window row i starts at rows[i] (null
// outside the image), column j is cols[j] floats into it (negative outside the image); position
// xi's lanes are stored at v + xi · v_stride.
inline void input_tile(const float* const (&rows)[4], const int64_t (&cols)[4], int64_t c, int lanes, float* v,
                       int64_t v_stride) {
  Vec d[4][4];
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) d[i][j] = rows[i] && cols[j] >= 0 ? load_part(rows[i] + cols[j] + c, lanes) : zero();
  }
  Vec t[4][4];  // Bᵀ·d
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    t[0][j] = d[0][j] - d[2][j];
    t[1][j] = d[1][j] + d[2][j];
    t[2][j] = d[2][j] - d[1][j];
    t[3][j] = d[1][j] - d[3][j];
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {  // (Bᵀ·d)·B
    float* row = v + 4 * i * v_stride;
    store_part(row, t[i][0] - t[i][2], lanes);
    store_part(row + v_stride, t[i][1] + t[i][2], lanes);
    store_part(row + 2 * v_stride, t[i][2] - t[i][1], lanes);
    store_part(row + 3 * v_stride, t[i][1] - t[i][3], lanes);
  }
}

// Y = Aᵀ·M·A + bias (+ residual) for the `lanes` channels at offset c of one tile; out[i][j] is
// null for a pixel outside the image, res[i][j] null there and without a residual.
inline void output_tile(const float* m, int64_t m_stride, const float* bias, float* const (&out)[2][2],
                        const float* const (&res)[2][2], int64_t c, int lanes) {
  Vec s[2][4];  // Aᵀ·M
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    const Vec m0 = load_part(m + j * m_stride + c, lanes), m1 = load_part(m + (4 + j) * m_stride + c, lanes);
    const Vec m2 = load_part(m + (8 + j) * m_stride + c, lanes), m3 = load_part(m + (12 + j) * m_stride + c, lanes);
    s[0][j] = m0 + m1 + m2;
    s[1][j] = m1 - m2 - m3;
  }
  const Vec b = bias ? load_part(bias + c, lanes) : zero();
#pragma GCC unroll 2
  for (int i = 0; i < 2; ++i) {
    Vec y0 = s[i][0] + s[i][1] + s[i][2] + b, y1 = s[i][1] - s[i][2] - s[i][3] + b;
    if (res[i][0]) y0 = y0 + load_part(res[i][0] + c, lanes);
    if (res[i][1]) y1 = y1 + load_part(res[i][1] + c, lanes);
    if (out[i][0]) store_part(out[i][0] + c, y0, lanes);
    if (out[i][1]) store_part(out[i][1] + c, y1, lanes);
  }
}

// The one-dimensional F(4×4) transforms of six (Bᵀ, rows of d) or three (G) vectors, and Aᵀ of six.
inline void input_1d4(const Vec (&x)[6], Vec (&r)[6]) {
  const Vec two = set1(2.0f), minus_two = set1(-2.0f), three = set1(3.0f), five = set1(5.0f);
  const Vec d31 = x[3] - x[1], d42 = x[4] - x[2];
  r[0] = fma(two, fma(minus_two, x[2], x[0] + x[4]), three * d31);
  r[1] = fma(five, x[3], fma(two, x[4] - x[1], x[2]));
  r[2] = fma(set1(-5.0f), x[2], fma(two, x[1] + x[4], x[3]));
  r[3] = fma(two, d31, d42);
  r[4] = fma(two, d42, x[1] - x[3]);
  r[5] = fma(two, fma(minus_two, x[3], x[1] + x[5]), three * d42);
}

inline void output_1d4(const Vec (&m)[6], Vec (&y)[4]) {
  const Vec s12 = m[1] + m[2], d12 = m[1] - m[2], eight = set1(8.0f), four = set1(4.0f);
  y[0] = m[0] + s12 + fma(eight, m[3], m[4]);
  y[1] = fma(four, m[3], fma(set1(-2.0f), m[4], d12));
  y[2] = fma(set1(2.0f), m[3], fma(four, m[4], s12));
  y[3] = fma(set1(-8.0f), m[4], d12 + m[3]) + m[5];
}

inline void weight_1d4(Vec g0, Vec g1, Vec g2, Vec (&u)[6]) {
  const Vec even = g0 + g2, two_g1 = set1(2.0f) * g1, half = set1(0.5f);
  u[0] = half * g0;
  u[1] = set1(1.0f / 6.0f) * (even + g1);
  u[2] = set1(-1.0f / 6.0f) * (even - g1);
  u[3] = set1(-1.0f / 30.0f) * (fma(set1(4.0f), g0, g2) + two_g1);
  u[4] = set1(1.0f / 30.0f) * (fma(set1(4.0f), g2, g0) - two_g1);
  u[5] = half * g2;
}

// F(4×4)'s V = Bᵀ·d·B for the `lanes` channels at offset c of one tile (as input_tile, 6×6 windows).
inline void input_tile4(const float* const (&rows)[6], const int64_t (&cols)[6], int64_t c, int lanes, float* v,
                        int64_t v_stride) {
  Vec t[6][6];  // t[i][j] = (Bᵀ·d)[i][j]
#pragma GCC unroll 6
  for (int j = 0; j < 6; ++j) {
    Vec x[6], r[6];
#pragma GCC unroll 6
    for (int i = 0; i < 6; ++i) x[i] = rows[i] && cols[j] >= 0 ? load_part(rows[i] + cols[j] + c, lanes) : zero();
    input_1d4(x, r);
#pragma GCC unroll 6
    for (int i = 0; i < 6; ++i) t[i][j] = r[i];
  }
#pragma GCC unroll 6
  for (int i = 0; i < 6; ++i) {  // (Bᵀ·d)·B
    Vec r[6];
    input_1d4(t[i], r);
    float* row = v + 6 * i * v_stride;
#pragma GCC unroll 6
    for (int j = 0; j < 6; ++j) store_part(row + j * v_stride, r[j], lanes);
  }
}

// F(4×4)'s Y = Aᵀ·M·A + bias (+ residual), as output_tile for 4×4 outputs.
inline void output_tile4(const float* m, int64_t m_stride, const float* bias, float* const (&out)[4][4],
                         const float* const (&res)[4][4], int64_t c, int lanes) {
  Vec s[4][6];  // Aᵀ·M
#pragma GCC unroll 6
  for (int j = 0; j < 6; ++j) {
    Vec col[6], y[4];
#pragma GCC unroll 6
    for (int i = 0; i < 6; ++i) col[i] = load_part(m + (6 * i + j) * m_stride + c, lanes);
    output_1d4(col, y);
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) s[i][j] = y[i];
  }
  const Vec b = bias ? load_part(bias + c, lanes) : zero();
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    Vec y[4];
    output_1d4(s[i], y);
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      if (!out[i][j]) continue;
      Vec o = y[j] + b;
      if (res[i][j]) o = o + load_part(res[i][j] + c, lanes);
      store_part(out[i][j] + c, o, lanes);
    }
  }
}

// The input transform of tiles [t0, t0 + count) for an m×m output tile (α = m + 2).
template <int M>
void input_tiles(const float* x, int64_t h, int64_t w, int64_t channels, int64_t t0, int64_t count, float* v,
                 int64_t v_stride, int64_t panel, int64_t panel_stride) {
  constexpr int kAlpha = M + 2;
  const int64_t th = (h + M - 1) / M, tw = (w + M - 1) / M;
  for (int64_t k = 0; k < count; ++k) {
    const TilePos p = tile_pos(t0 + k, th, tw, M);
    const float* img = x + p.n * h * w * channels;
    const float* rows[kAlpha];
    int64_t cols[kAlpha];
    for (int i = 0; i < kAlpha; ++i) {
      const int64_t r = p.y - 1 + i, col = p.x - 1 + i;
      rows[i] = r >= 0 && r < h ? img + r * w * channels : nullptr;
      cols[i] = col >= 0 && col < w ? col * channels : -1;
    }
    const auto one = [&](int64_t c, int lanes, float* vt) {
      if constexpr (M == 2)
        input_tile(rows, cols, c, lanes, vt, v_stride);
      else
        input_tile4(rows, cols, c, lanes, vt, v_stride);
    };
    if (panel == channels) {
      float* vt = v + k * channels;
      over_lanes(channels, [&](int64_t c, int lanes) { one(c, lanes, vt + c); });
    } else {
      // Panels are whole vectors wide (a multiple of kLanes), so no vector straddles two.
      float* vt = v + k * panel;
      over_lanes(channels, [&](int64_t c, int lanes) {
        const int64_t q = c / panel;
        one(c, lanes, vt + q * panel_stride + (c - q * panel));
      });
    }
  }
}

// The output transform of tiles [t0, t0 + count) for an m×m output tile.
template <int M>
void output_tiles(const float* m, int64_t m_stride, int64_t channels, const float* bias, const float* residual,
                  int64_t h, int64_t w, int64_t t0, int64_t count, float* y) {
  const int64_t th = (h + M - 1) / M, tw = (w + M - 1) / M;
  for (int64_t k = 0; k < count; ++k) {
    const TilePos p = tile_pos(t0 + k, th, tw, M);
    float* out[M][M];
    const float* res[M][M];
    tile_pixels<M>(y, h, w, channels, p, out);
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < M; ++j) res[i][j] = residual && out[i][j] ? residual + (out[i][j] - y) : nullptr;
    const float* mt = m + k * channels;
    over_lanes(channels, [&](int64_t c, int lanes) {
      if constexpr (M == 2)
        output_tile(mt, m_stride, bias, out, res, c, lanes);
      else
        output_tile4(mt, m_stride, bias, out, res, c, lanes);
    });
  }
}

}  // namespace

void winograd_input_tiles(int tile, const float* x, int64_t h, int64_t w, int64_t channels, int64_t t0, int64_t count,
                          float* v, int64_t v_stride, int64_t panel, int64_t panel_stride) {
  if (tile == 4)
    input_tiles<4>(x, h, w, channels, t0, count, v, v_stride, panel, panel_stride);
  else
    input_tiles<2>(x, h, w, channels, t0, count, v, v_stride, panel, panel_stride);
}

void winograd_output_tiles(int tile, const float* m, int64_t m_stride, int64_t channels, const float* bias,
                           const float* residual, int64_t h, int64_t w, int64_t t0, int64_t count, float* y) {
  if (tile == 4)
    output_tiles<4>(m, m_stride, channels, bias, residual, h, w, t0, count, y);
  else
    output_tiles<2>(m, m_stride, channels, bias, residual, h, w, t0, count, y);
}

void winograd_weight_row(int tile, const float* const* g, int64_t n, int64_t nr, int64_t panel_stride, float* out,
                         int64_t xi_stride) {
  const Vec half = set1(0.5f);
  for (int64_t j0 = 0; j0 < n; j0 += nr) {
    float* panel = out + (j0 / nr) * panel_stride;
    for (int64_t jj = 0; jj < nr; jj += kLanes) {
      const int64_t j = j0 + jj;
      const int lanes = int(n - j < kLanes ? (n - j > 0 ? n - j : 0) : kLanes);
      float* o = panel + jj;
      // Whole vectors are stored: the lanes past n are zeros.
      if (tile == 4) {
        Vec t[6][3];  // G·g
#pragma GCC unroll 3
        for (int b = 0; b < 3; ++b) {
          Vec u[6];
          weight_1d4(lanes ? load_part(g[b] + j, lanes) : zero(), lanes ? load_part(g[3 + b] + j, lanes) : zero(),
                     lanes ? load_part(g[6 + b] + j, lanes) : zero(), u);
#pragma GCC unroll 6
          for (int a = 0; a < 6; ++a) t[a][b] = u[a];
        }
#pragma GCC unroll 6
        for (int a = 0; a < 6; ++a) {  // (G·g)·Gᵀ
          Vec u[6];
          weight_1d4(t[a][0], t[a][1], t[a][2], u);
#pragma GCC unroll 6
          for (int b = 0; b < 6; ++b) store(o + (6 * a + b) * xi_stride, u[b]);
        }
        continue;
      }
      Vec t[4][3];  // G·g
#pragma GCC unroll 3
      for (int b = 0; b < 3; ++b) {
        const Vec g0 = lanes ? load_part(g[b] + j, lanes) : zero();
        const Vec g1 = lanes ? load_part(g[3 + b] + j, lanes) : zero();
        const Vec g2 = lanes ? load_part(g[6 + b] + j, lanes) : zero();
        t[0][b] = g0;
        t[1][b] = half * (g0 + g1 + g2);
        t[2][b] = half * (g0 - g1 + g2);
        t[3][b] = g2;
      }
#pragma GCC unroll 4
      for (int a = 0; a < 4; ++a) {  // (G·g)·Gᵀ
        store(o + (4 * a) * xi_stride, t[a][0]);
        store(o + (4 * a + 1) * xi_stride, half * (t[a][0] + t[a][1] + t[a][2]));
        store(o + (4 * a + 2) * xi_stride, half * (t[a][0] - t[a][1] + t[a][2]));
        store(o + (4 * a + 3) * xi_stride, t[a][2]);
      }
    }
  }
}

namespace {

void output_grad_tiles2(const float* dy, int64_t h, int64_t w, int64_t channels, int64_t t0, int64_t count, float* z,
                        int64_t z_stride) {
  const int64_t th = (h + 1) / 2, tw = (w + 1) / 2;
  for (int64_t k = 0; k < count; ++k) {
    const TilePos p = tile_pos(t0 + k, th, tw, 2);
    const float* in[2][2];
    tile_pixels<2>(dy, h, w, channels, p, in);
    float* zt = z + k * channels;
    over_lanes(channels, [&](int64_t c, int lanes) {
      Vec r[4][2];  // A·dY, A = [1 0; 1 1; 1 −1; 0 −1]
#pragma GCC unroll 2
      for (int j = 0; j < 2; ++j) {
        const Vec d0 = in[0][j] ? load_part(in[0][j] + c, lanes) : zero();
        const Vec d1 = in[1][j] ? load_part(in[1][j] + c, lanes) : zero();
        r[0][j] = d0;
        r[1][j] = d0 + d1;
        r[2][j] = d0 - d1;
        r[3][j] = zero() - d1;
      }
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {  // (A·dY)·Aᵀ
        float* row = zt + 4 * i * z_stride + c;
        store_part(row, r[i][0], lanes);
        store_part(row + z_stride, r[i][0] + r[i][1], lanes);
        store_part(row + 2 * z_stride, r[i][0] - r[i][1], lanes);
        store_part(row + 3 * z_stride, zero() - r[i][1], lanes);
      }
    });
  }
}

void weight_grad_row2(const float* du, int64_t slices, int64_t slice_stride, int64_t plane_stride, int64_t cin,
                      float* dw_row) {
  const Vec half = set1(0.5f);
  over_lanes(cin, [&](int64_t c, int lanes) {
    Vec u[4][4];
#pragma GCC unroll 16
    for (int xi = 0; xi < 16; ++xi) {
      Vec sum = load_part(du + xi * plane_stride + c, lanes);
      for (int64_t s = 1; s < slices; ++s) sum = sum + load_part(du + s * slice_stride + xi * plane_stride + c, lanes);
      u[xi / 4][xi % 4] = sum;
    }
    Vec t[3][4];  // Gᵀ·dU, Gᵀ = [1 ½ ½ 0; 0 ½ −½ 0; 0 ½ ½ 1]
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      t[0][j] = u[0][j] + half * (u[1][j] + u[2][j]);
      t[1][j] = half * (u[1][j] - u[2][j]);
      t[2][j] = half * (u[1][j] + u[2][j]) + u[3][j];
    }
#pragma GCC unroll 3
    for (int a = 0; a < 3; ++a) {  // (Gᵀ·dU)·G
      float* out = dw_row + 3 * a * cin + c;
      store_part(out, t[a][0] + half * (t[a][1] + t[a][2]), lanes);
      store_part(out + cin, half * (t[a][1] - t[a][2]), lanes);
      store_part(out + 2 * cin, half * (t[a][1] + t[a][2]) + t[a][3], lanes);
    }
  });
}

// F(3×3, 4×4)'s G (6×4) on four dy values: z = G·dY column, the dY tile's rows or columns.
inline void grad_1d4(Vec d0, Vec d1, Vec d2, Vec d3, Vec (&z)[6]) {
  const Vec half = set1(0.5f), sixth = set1(1.0f / 6.0f), thirtieth = set1(1.0f / 30.0f);
  const Vec even = d0 + d2, odd = d1 + d3, two = set1(2.0f), four = set1(4.0f), eight = set1(8.0f);
  z[0] = half * d0;
  z[1] = sixth * (even + odd);
  z[2] = sixth * (odd - even);
  z[3] = set1(-1.0f / 30.0f) * fma(eight, d0, fma(four, d1, fma(two, d2, d3)));
  z[4] = thirtieth * fma(set1(-8.0f), d3, fma(four, d2, fma(set1(-2.0f), d1, d0)));
  z[5] = half * d3;
}

// F(3×3, 4×4)'s Aᵀ (3×6) on six values.
inline void grad_out_1d4(const Vec (&u)[6], Vec (&w)[3]) {
  const Vec s12 = u[1] + u[2], d12 = u[1] - u[2], two = set1(2.0f), four = set1(4.0f);
  w[0] = u[0] + s12 + fma(four, u[3], u[4]);
  w[1] = fma(two, u[3], fma(set1(-2.0f), u[4], d12));
  w[2] = s12 + u[3] + fma(four, u[4], u[5]);
}

void output_grad_tiles4(const float* dy, int64_t h, int64_t w, int64_t channels, int64_t t0, int64_t count, float* z,
                        int64_t z_stride) {
  const int64_t th = (h + 3) / 4, tw = (w + 3) / 4;
  for (int64_t k = 0; k < count; ++k) {
    const TilePos p = tile_pos(t0 + k, th, tw, 4);
    const float* in[4][4];
    tile_pixels<4>(dy, h, w, channels, p, in);
    float* zt = z + k * channels;
    over_lanes(channels, [&](int64_t c, int lanes) {
      Vec r[6][4];  // G·dY
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        Vec col[6];
        grad_1d4(in[0][j] ? load_part(in[0][j] + c, lanes) : zero(), in[1][j] ? load_part(in[1][j] + c, lanes) : zero(),
                 in[2][j] ? load_part(in[2][j] + c, lanes) : zero(), in[3][j] ? load_part(in[3][j] + c, lanes) : zero(),
                 col);
#pragma GCC unroll 6
        for (int i = 0; i < 6; ++i) r[i][j] = col[i];
      }
#pragma GCC unroll 6
      for (int i = 0; i < 6; ++i) {  // (G·dY)·Gᵀ
        Vec row[6];
        grad_1d4(r[i][0], r[i][1], r[i][2], r[i][3], row);
        float* out = zt + 6 * i * z_stride + c;
#pragma GCC unroll 6
        for (int j = 0; j < 6; ++j) store_part(out + j * z_stride, row[j], lanes);
      }
    });
  }
}

void weight_grad_row4(const float* du, int64_t slices, int64_t slice_stride, int64_t plane_stride, int64_t cin,
                      float* dw_row) {
  over_lanes(cin, [&](int64_t c, int lanes) {
    Vec t[3][6];  // Aᵀ·dU, column by column
#pragma GCC unroll 6
    for (int j = 0; j < 6; ++j) {
      Vec col[6], w[3];
#pragma GCC unroll 6
      for (int i = 0; i < 6; ++i) {
        const float* q = du + (6 * i + j) * plane_stride + c;
        Vec sum = load_part(q, lanes);
        for (int64_t s = 1; s < slices; ++s) sum = sum + load_part(q + s * slice_stride, lanes);
        col[i] = sum;
      }
      grad_out_1d4(col, w);
#pragma GCC unroll 3
      for (int a = 0; a < 3; ++a) t[a][j] = w[a];
    }
#pragma GCC unroll 3
    for (int a = 0; a < 3; ++a) {  // (Aᵀ·dU)·A
      Vec w[3];
      grad_out_1d4(t[a], w);
#pragma GCC unroll 3
      for (int b = 0; b < 3; ++b) store_part(dw_row + (3 * a + b) * cin + c, w[b], lanes);
    }
  });
}

}  // namespace

void winograd_output_grad_tiles(int tile, const float* dy, int64_t h, int64_t w, int64_t channels, int64_t t0,
                                int64_t count, float* z, int64_t z_stride) {
  if (tile == 4)
    output_grad_tiles4(dy, h, w, channels, t0, count, z, z_stride);
  else
    output_grad_tiles2(dy, h, w, channels, t0, count, z, z_stride);
}

void winograd_weight_grad_row(int tile, const float* du, int64_t slices, int64_t slice_stride, int64_t plane_stride,
                              int64_t cin, float* dw_row) {
  if (tile == 4)
    weight_grad_row4(du, slices, slice_stride, plane_stride, cin, dw_row);
  else
    weight_grad_row2(du, slices, slice_stride, plane_stride, cin, dw_row);
}

}  // namespace diffuse::kernels::cpu::simd::DIFFUSE_ISA_NS
