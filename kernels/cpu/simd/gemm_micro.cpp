// See kernels/cpu/simd/gemm_micro.h; compiled once per path (kernels/cpu/simd/isa_begin.h).
#include <cstdint>

#include "kernels/cpu/simd/isa_begin.h"
#include "kernels/cpu/simd/vec.h"
#include "kernels/cpu/simd/gemm_micro.h"

namespace diffuse::kernels::cpu::simd::DIFFUSE_ISA_NS {

namespace {

constexpr int kNR = 2 * kLanes;
// Rows per tile. SSE2 and AVX2 have 16 vector registers: 4×2 (SSE2) or 6×2 (AVX2) accumulators
// + 2 b vectors + the broadcast fit, and 12 accumulators cover the FMA latency on two pipes.
// AVX-512 has 32: 8×2, so a convolution's 32, 64 or 128 output channels (the rows of its weight
// gradient) fill whole tiles.
constexpr int kMR = kLanes == 4 ? 4 : (kLanes == 16 ? 8 : 6);

// out = alpha · acc + beta · c + bias for the first `cols` (<= kLanes) columns of one row.
inline void store_row_part(Vec acc, float* c, const float* bias, int cols, float alpha, float beta) {
  const bool full = cols == kLanes;
  Vec out = acc * set1(alpha);
  if (bias) out = out + (full ? load(bias) : load_n(bias, cols));
  if (beta != 0.0f) out = fma(set1(beta), full ? load(c) : load_n(c, cols), out);
  if (full) {
    store(c, out);
  } else {
    store_n(c, out, cols);
  }
}

// Accumulates `len` reduction steps into one R × NR tile (R = MR but in gemm_block_ksum): row r's
// a values are ar[r][p0 .. p0 + len), b advances by len panel rows.
template <int R = kMR>
inline void accumulate(const float* const* ar, int64_t len, const float*& b, Vec (&acc)[R][2], int64_t p0 = 0) {
  for (int64_t p = p0; p < p0 + len; ++p) {
    const Vec b0 = load(b), b1 = load(b + kLanes);
    b += kNR;
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const Vec av = set1(ar[r][p]);
      acc[r][0] = fma(av, b0, acc[r][0]);
      acc[r][1] = fma(av, b1, acc[r][1]);
    }
  }
}

// Unrolled over MR with a guard rather than looping to `rows`: a loop with a run-time bound indexes
// acc by a variable, which made GCC spill the whole tile to the stack after every tile (32 extra
// memory operations per 8×32 tile, a quarter of a short reduction's time).
inline void store_tile(const Vec (&acc)[kMR][2], int rows, float* c, int64_t ldc, int cols, float alpha, float beta,
                       const float* bias) {
#pragma GCC unroll 16
  for (int r = 0; r < kMR; ++r) {
    if (r >= rows) break;
    float* cr = c + r * ldc;
    store_row_part(acc[r][0], cr, bias, cols < kLanes ? cols : kLanes, alpha, beta);
    if (cols > kLanes) store_row_part(acc[r][1], cr + kLanes, bias ? bias + kLanes : nullptr, cols - kLanes, alpha, beta);
  }
}

inline void clear(Vec (&acc)[kMR][2]) {
#pragma GCC unroll 16
  for (int r = 0; r < kMR; ++r) acc[r][0] = acc[r][1] = zero();
}

// One MR × NR tile: rows past `rows` read the last valid row of a and are not stored.
inline void tile(int64_t kc, const float* a, int64_t lda, int rows, const float* b, float* c, int64_t ldc, int cols,
                 float alpha, float beta, const float* bias) {
  const float* ar[kMR];
  for (int r = 0; r < kMR; ++r) ar[r] = a + (r < rows ? r : rows - 1) * lda;
  Vec acc[kMR][2];
  clear(acc);
  accumulate(ar, kc, b, acc);
  store_tile(acc, rows, c, ldc, cols, alpha, beta, bias);
}

// The same tile with a as one panel of kc × MR floats (rows past `rows` are zeros, not stored).
inline void tile_panel(int64_t kc, const float* a, int rows, const float* b, float* c, int64_t ldc, int cols,
                       float alpha, float beta, const float* bias) {
  Vec acc[kMR][2];
  clear(acc);
  for (int64_t p = 0; p < kc; ++p) {
    const Vec b0 = load(b), b1 = load(b + kLanes);
    b += kNR;
#pragma GCC unroll 16
    for (int r = 0; r < kMR; ++r) {
      const Vec av = set1(a[r]);
      acc[r][0] = fma(av, b0, acc[r][0]);
      acc[r][1] = fma(av, b1, acc[r][1]);
    }
    a += kMR;
  }
  store_tile(acc, rows, c, ldc, cols, alpha, beta, bias);
}

// The same tile with each row of a in `segments` pieces found through a table (gemm_block_rows).
inline void tile_rows(int64_t segments, int64_t seg_len, const float* const* table, int rows, const float* b,
                      float* c, int64_t ldc, int cols, float alpha, float beta, const float* bias) {
  Vec acc[kMR][2];
  clear(acc);
  for (int64_t s = 0; s < segments; ++s) {
    const float* ar[kMR];
    for (int r = 0; r < kMR; ++r) ar[r] = table[(r < rows ? r : rows - 1) * segments + s];
    accumulate(ar, seg_len, b, acc);
  }
  store_tile(acc, rows, c, ldc, cols, alpha, beta, bias);
}

#if DIFFUSE_ISA == 2
// gemm_block_ksum's tile on AVX-512: 6 rows × NR, the block's sums and the running totals both in
// registers (12 + 12 of the 32, with the two b vectors and the broadcast). Rows past `rows` read
// the last valid row of a and are not stored.
constexpr int kMRSum = 6;
inline void tile_ksum(int64_t k, int64_t kblock, const float* a, int64_t lda, int rows, const float* b,
                      int64_t n_pad, int64_t panel, float* c, int64_t ldc, int cols) {
  const float* ar[kMRSum];
  for (int r = 0; r < kMRSum; ++r) ar[r] = a + (r < rows ? r : rows - 1) * lda;
  Vec total[kMRSum][2];
  for (int64_t p0 = 0; p0 < k; p0 += kblock) {
    const int64_t kc = k - p0 < kblock ? k - p0 : kblock;
    const float* bp = b + p0 * n_pad + panel * kc * kNR;
    Vec acc[kMRSum][2];
#pragma GCC unroll 6
    for (int r = 0; r < kMRSum; ++r) acc[r][0] = acc[r][1] = zero();
    accumulate<kMRSum>(ar, kc, bp, acc, p0);
#pragma GCC unroll 6
    for (int r = 0; r < kMRSum; ++r) {
      total[r][0] = p0 == 0 ? acc[r][0] : total[r][0] + acc[r][0];
      total[r][1] = p0 == 0 ? acc[r][1] : total[r][1] + acc[r][1];
    }
  }
  const int w0 = cols < kLanes ? cols : kLanes, w1 = cols - w0;
  // Unrolled, so total stays in registers (store_tile says why); plain stores rather than
  // store_tile<6> itself, whose alpha, beta and bias handling measured 2-4% slower here.
#pragma GCC unroll 6
  for (int r = 0; r < kMRSum; ++r) {
    if (r >= rows) break;
    float* cr = c + r * ldc;
    if (w0 == kLanes) {
      store(cr, total[r][0]);
    } else {
      store_n(cr, total[r][0], w0);
    }
    if (w1 == kLanes) {
      store(cr + kLanes, total[r][1]);
    } else if (w1 > 0) {
      store_n(cr + kLanes, total[r][1], w1);
    }
  }
}
#endif

}  // namespace

int gemm_panel_width() { return kNR; }

void gemm_block_ksum(int64_t m, int64_t n, int64_t k, int64_t kblock, const float* a, int64_t lda, const float* b,
                     int64_t n_pad, float* c, int64_t ldc) {
#if DIFFUSE_ISA == 2
  if (k > 0) {
    for (int64_t i = 0; i < m; i += kMRSum) {
      const int rows = int(m - i < kMRSum ? m - i : kMRSum);
      for (int64_t j = 0; j < n; j += kNR)
        tile_ksum(k, kblock, a + i * lda, lda, rows, b, n_pad, j / kNR, c + i * ldc + j, ldc,
                  int(n - j < kNR ? n - j : kNR));
    }
    return;
  }
#endif
  // The other paths have 16 vector registers: too few for a second set of sums beside the tile.
  if (k == 0) return gemm_block(m, n, 0, a, lda, b, 1.0f, 0.0f, nullptr, c, ldc);
  for (int64_t p0 = 0; p0 < k; p0 += kblock)
    gemm_block(m, n, k - p0 < kblock ? k - p0 : kblock, a + p0, lda, b + p0 * n_pad, 1.0f, p0 == 0 ? 0.0f : 1.0f,
               nullptr, c, ldc);
}

void gemm_block(int64_t m, int64_t n, int64_t kc, const float* a, int64_t lda, const float* b_panels, float alpha,
                float beta, const float* bias, float* c, int64_t ldc) {
  // Rows outer, panels inner: the MR rows of a stay in L1 while every b panel of the block (sized
  // by the driver to stay in L2) streams past them.
  for (int64_t i = 0; i < m; i += kMR) {
    const int rows = int(m - i < kMR ? m - i : kMR);
    for (int64_t j = 0; j < n; j += kNR) {
      const int cols = int(n - j < kNR ? n - j : kNR);
      tile(kc, a + i * lda, lda, rows, b_panels + (j / kNR) * kc * kNR, c + i * ldc + j, ldc, cols, alpha, beta,
           bias ? bias + j : nullptr);
    }
  }
}

int gemm_panel_height() { return kMR; }

void gemm_pack_a_transposed(const float* a, int64_t lda, int64_t m, int64_t kc, float* dst) {
  // Steps of 16 reduction rows: their stretch of A (16 rows of m floats) stays in L1 while each
  // panel's 16 × MR floats are written in one run.
  constexpr int64_t kSteps = 16;
  const int64_t panels = (m + kMR - 1) / kMR;
  for (int64_t p0 = 0; p0 < kc; p0 += kSteps) {
    const int64_t p1 = p0 + kSteps < kc ? p0 + kSteps : kc;
    for (int64_t q = 0; q < panels; ++q) {
      const int64_t i0 = q * kMR, rows = m - i0 < kMR ? m - i0 : kMR;
      float* out = dst + (q * kc + p0) * kMR;
      const float* src = a + p0 * lda + i0;
      if (rows == kMR) {
        for (int64_t p = p0; p < p1; ++p, src += lda, out += kMR) {
#pragma GCC unroll 16
          for (int r = 0; r < kMR; ++r) out[r] = src[r];
        }
      } else {
        for (int64_t p = p0; p < p1; ++p, src += lda, out += kMR) {
          for (int64_t r = 0; r < rows; ++r) out[r] = src[r];
          for (int64_t r = rows; r < kMR; ++r) out[r] = 0.0f;
        }
      }
    }
  }
}

void gemm_pack_b(const float* b, int64_t ldb, int64_t n, int64_t kc, float* dst) {
  const int64_t panels = (n + kNR - 1) / kNR;
  for (int64_t p = 0; p < kc; ++p) {
    const float* src = b + p * ldb;
    for (int64_t q = 0; q < panels; ++q) {
      float* out = dst + (q * kc + p) * kNR;
      const int64_t j0 = q * kNR;
      if (n - j0 >= kNR) {
        store(out, load(src + j0));
        store(out + kLanes, load(src + j0 + kLanes));
      } else {
        const int64_t w = n - j0;
        const int w0 = int(w < kLanes ? w : kLanes), w1 = int(w - w0);
        store(out, w0 == kLanes ? load(src + j0) : load_n(src + j0, w0));
        store(out + kLanes, w1 > 0 ? load_n(src + j0 + kLanes, w1) : zero());
      }
    }
  }
}

void gemm_pack_b_transposed(const float* b, int64_t ldb, int64_t n, int64_t kc, float* dst) {
  const int64_t panels = (n + kNR - 1) / kNR;
  for (int64_t q = 0; q < panels; ++q) {
    const int64_t j0 = q * kNR, w = n - j0 < kNR ? n - j0 : kNR;
    float* out = dst + q * kc * kNR;
    const float* src = b + j0 * ldb;
    int64_t p = 0;
#if defined(__x86_64__)
    // Whole 4 × 4 blocks: rows jj..jj+3 of src (columns of B) at p..p+3 become rows p..p+3 of
    // the panel at jj..jj+3 (VEX-encoded on the wider paths, where the target pragma is on).
    const int64_t whole_w = w / 4 * 4;
    for (; p + 4 <= kc; p += 4) {
      for (int64_t jj = 0; jj < whole_w; jj += 4) {
        const float* s0 = src + jj * ldb + p;
        __m128 r0 = _mm_loadu_ps(s0), r1 = _mm_loadu_ps(s0 + ldb);
        __m128 r2 = _mm_loadu_ps(s0 + 2 * ldb), r3 = _mm_loadu_ps(s0 + 3 * ldb);
        _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
        float* o = out + p * kNR + jj;
        _mm_storeu_ps(o, r0);
        _mm_storeu_ps(o + kNR, r1);
        _mm_storeu_ps(o + 2 * kNR, r2);
        _mm_storeu_ps(o + 3 * kNR, r3);
      }
      for (int64_t jj = whole_w; jj < kNR; ++jj)
        for (int64_t pp = p; pp < p + 4; ++pp) out[pp * kNR + jj] = jj < w ? src[jj * ldb + pp] : 0.0f;
    }
#endif
    for (; p < kc; ++p)
      for (int64_t jj = 0; jj < kNR; ++jj) out[p * kNR + jj] = jj < w ? src[jj * ldb + p] : 0.0f;
  }
}

void gemm_block_panels(int64_t m, int64_t n, int64_t kc, const float* a_panels, const float* b_panels, float alpha,
                       float beta, const float* bias, float* c, int64_t ldc) {
  for (int64_t i = 0; i < m; i += kMR) {
    const int rows = int(m - i < kMR ? m - i : kMR);
    for (int64_t j = 0; j < n; j += kNR) {
      const int cols = int(n - j < kNR ? n - j : kNR);
      tile_panel(kc, a_panels + i * kc, rows, b_panels + (j / kNR) * kc * kNR, c + i * ldc + j, ldc, cols, alpha,
                 beta, bias ? bias + j : nullptr);
    }
  }
}

void gemm_block_rows(int64_t m, int64_t n, int64_t segments, int64_t seg_len, const float* const* table,
                     const float* b_panels, float alpha, float beta, const float* bias, float* c, int64_t ldc) {
  const int64_t kc = segments * seg_len;
  for (int64_t i = 0; i < m; i += kMR) {
    const int rows = int(m - i < kMR ? m - i : kMR);
    for (int64_t j = 0; j < n; j += kNR) {
      const int cols = int(n - j < kNR ? n - j : kNR);
      tile_rows(segments, seg_len, table + i * segments, rows, b_panels + (j / kNR) * kc * kNR, c + i * ldc + j, ldc,
                cols, alpha, beta, bias ? bias + j : nullptr);
    }
  }
}

}  // namespace diffuse::kernels::cpu::simd::DIFFUSE_ISA_NS
