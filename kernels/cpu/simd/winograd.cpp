// See kernels/cpu/simd/winograd.h; compiled once per path (kernels/cpu/simd/isa_begin.h).
// Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1] and Aᵀ = [1 1 1 0; 0 1 −1 −1]: additions only, so
// the transforms add no rounding beyond the sums themselves.
#include <cstdint>

#include "kernels/cpu/simd/isa_begin.h"
#include "kernels/cpu/simd/vec.h"
#include "kernels/cpu/simd/elementwise_lanes.h"
#include "kernels/cpu/simd/winograd.h"

namespace diffuse::kernels::cpu::simd::DIFFUSE_ISA_NS {

namespace {

// Where tile t lies: its image and the top-left pixel of its 2×2 outputs.
struct TilePos {
  int64_t n, y, x;
};

inline TilePos tile_pos(int64_t t, int64_t th, int64_t tw) {
  const int64_t tx = t % tw, rest = t / tw;
  return {rest / th, 2 * (rest % th), 2 * tx};
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

}  // namespace

void winograd_input_tiles(const float* x, int64_t h, int64_t w, int64_t channels, int64_t t0, int64_t count, float* v,
                          int64_t v_stride, int64_t panel, int64_t panel_stride) {
  const int64_t th = (h + 1) / 2, tw = (w + 1) / 2;
  for (int64_t k = 0; k < count; ++k) {
    const TilePos p = tile_pos(t0 + k, th, tw);
    const float* img = x + p.n * h * w * channels;
    const float* rows[4];
    int64_t cols[4];
    for (int i = 0; i < 4; ++i) {
      const int64_t r = p.y - 1 + i, col = p.x - 1 + i;
      rows[i] = r >= 0 && r < h ? img + r * w * channels : nullptr;
      cols[i] = col >= 0 && col < w ? col * channels : -1;
    }
    if (panel == channels) {
      float* vt = v + k * channels;
      over_lanes(channels, [&](int64_t c, int lanes) { input_tile(rows, cols, c, lanes, vt + c, v_stride); });
    } else {
      // Panels are whole vectors wide (a multiple of kLanes), so no vector straddles two.
      float* vt = v + k * panel;
      over_lanes(channels, [&](int64_t c, int lanes) {
        const int64_t q = c / panel;
        input_tile(rows, cols, c, lanes, vt + q * panel_stride + (c - q * panel), v_stride);
      });
    }
  }
}

void winograd_output_tiles(const float* m, int64_t m_stride, int64_t channels, const float* bias,
                           const float* residual, int64_t h, int64_t w, int64_t t0, int64_t count, float* y) {
  const int64_t th = (h + 1) / 2, tw = (w + 1) / 2;
  for (int64_t k = 0; k < count; ++k) {
    const TilePos p = tile_pos(t0 + k, th, tw);
    float* img = y + p.n * h * w * channels;
    float* out[2][2];
    const float* res[2][2];
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j) {
        out[i][j] = p.y + i < h && p.x + j < w ? img + ((p.y + i) * w + p.x + j) * channels : nullptr;
        res[i][j] = residual && out[i][j] ? residual + (out[i][j] - y) : nullptr;
      }
    const float* mt = m + k * channels;
    over_lanes(channels, [&](int64_t c, int lanes) { output_tile(mt, m_stride, bias, out, res, c, lanes); });
  }
}

void winograd_weight_row(const float* const* g, int64_t n, int64_t nr, int64_t panel_stride, float* out,
                         int64_t xi_stride) {
  const Vec half = set1(0.5f);
  for (int64_t j0 = 0; j0 < n; j0 += nr) {
    float* panel = out + (j0 / nr) * panel_stride;
    for (int64_t jj = 0; jj < nr; jj += kLanes) {
      const int64_t j = j0 + jj;
      const int lanes = int(n - j < kLanes ? (n - j > 0 ? n - j : 0) : kLanes);
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
      float* o = panel + jj;
#pragma GCC unroll 4
      for (int a = 0; a < 4; ++a) {  // (G·g)·Gᵀ; whole vectors: the lanes past n are zeros
        store(o + (4 * a) * xi_stride, t[a][0]);
        store(o + (4 * a + 1) * xi_stride, half * (t[a][0] + t[a][1] + t[a][2]));
        store(o + (4 * a + 2) * xi_stride, half * (t[a][0] - t[a][1] + t[a][2]));
        store(o + (4 * a + 3) * xi_stride, t[a][2]);
      }
    }
  }
}

void winograd_output_grad_tiles(const float* dy, int64_t h, int64_t w, int64_t channels, int64_t t0, int64_t count,
                                float* z, int64_t z_stride) {
  const int64_t th = (h + 1) / 2, tw = (w + 1) / 2;
  for (int64_t k = 0; k < count; ++k) {
    const TilePos p = tile_pos(t0 + k, th, tw);
    const float* img = dy + p.n * h * w * channels;
    const float* in[2][2];
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j)
        in[i][j] = p.y + i < h && p.x + j < w ? img + ((p.y + i) * w + p.x + j) * channels : nullptr;
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

void winograd_weight_grad_row(const float* du, int64_t slices, int64_t slice_stride, int64_t plane_stride, int64_t cin,
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

}  // namespace diffuse::kernels::cpu::simd::DIFFUSE_ISA_NS
