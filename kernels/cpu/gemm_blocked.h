// The CPU's own f32 GEMM driver (docs/design.md §5, "CPU kernels"): BLIS-style blocking around the
// per-path micro-kernel of kernels/cpu/simd/gemm_micro.h, with the operands delivered by packers,
// so that a convolution packs its im2col blocks straight from the NHWC activations
// (kernels/cpu/conv2d.cpp) instead of writing and re-reading a column buffer, and a plain GEMM
// (kernels/cpu/gemm.cpp) packs from its matrices.
//
// c[m, n] = alpha · A[m, k] · B[k, n] + beta · c + bias[j]. Blocks: at most KC reduction columns at
// a time (an MR-row sliver of A, 8 × 384 floats, stays in L1), at most NC columns of B packed into
// panels (KC × NC floats, in L2), at most MC rows of A per task. One parallel region per call (kernels/cpu/parallel.h)
// hands out (MC, NC) tasks in dynamic chunks; each c element is summed by one task in a fixed order,
// so results do not depend on the thread count. The packing buffers are grow-only per-thread
// scratch: no allocation in the steady state.
//
// The packers (any callable objects):
//   pack_a(i0, mc, p0, kc, float* scratch, int64_t& ld) -> const float*
//       rows [i0, i0 + mc) of A, columns [p0, p0 + kc), row-major with row stride ld (set by the
//       packer): written into scratch (room for mc × kc floats), or a pointer into the caller's A.
//   or, for an IndirectPackA (one with `static constexpr bool kIndirect`), no copy at all:
//   run_length() -> int64_t, and
//   pack_a(i0, mc, p0, kc, const float** table, const float* zeros)
//       fills table[r · (kc / run) + s] with where row i0 + r's run s (columns p0 + s·run ..) is,
//       or `zeros` (run_length() zeros); the micro-kernel reads A through it (gemm_block_rows).
//   or, for a PanelPackA (one with `static constexpr bool kPanels`), A's block in the micro-kernel's
//   MR-row panels (simd::gemm_pack_a_transposed's layout; room for mc × kc floats):
//   pack_a(i0, mc, p0, kc, float* dst)
//   pack_b(p0, kc, j0, nc, nr, float* dst)
//       B's rows [p0, p0 + kc), columns [j0, j0 + nc) as ceil(nc / nr) panels of kc × nr floats
//       (panel q holds columns j0 + q·nr ..), zero past nc.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd/gemm_micro.h"
#include "kernels/gemm.h"

namespace diffuse::kernels::cpu {

namespace gemm_detail {
constexpr int64_t kBlockK = 384;    // reduction columns per packed block (a 3×3 conv's 9·C: whole taps)
constexpr int64_t kBlockN = 384;    // B columns per packed block: 384 × 384 floats = 576 KB, in L2
constexpr int64_t kMaxBlockM = 192;  // rows per task at most
constexpr int64_t kSplitTasks = 8;      // c blocks below which a long reduction is sliced
constexpr int64_t kMinSliceBlocks = 4;  // reduction blocks per slice at least
constexpr int64_t kRowQuantum = 24;  // a multiple of every path's MR (4, 6 and 8)

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }
}  // namespace gemm_detail

template <class PackA>
concept IndirectPackA = PackA::kIndirect;

template <class PackA>
concept PanelPackA = PackA::kPanels;

template <class PackA, class PackB>
void blocked_gemm(int64_t m, int64_t n, int64_t k, float alpha, const PackA& pack_a, const PackB& pack_b, float beta,
                  const float* bias, float* c, int64_t ldc) {
  using namespace gemm_detail;
  if (m <= 0 || n <= 0) return;
  const int64_t nr = simd::gemm_panel_width();
  // An indirect A (IndirectPackA below) is read in runs of run_length() floats: the reduction
  // blocks hold whole runs.
  int64_t run = 1;
  if constexpr (IndirectPackA<PackA>) run = pack_a.run_length();
  // Reduction blocks of equal length (a 3×3 conv's 9·C splits into whole multiples of C, and no
  // short tail block runs at a lower rate).
  const int64_t kc_max =
      round_up(std::max<int64_t>(1, ceil_div(k, ceil_div(std::max<int64_t>(k, 1), kBlockK))), run);
  const int64_t k_blocks = std::max<int64_t>(1, ceil_div(k, kc_max));
  // Column blocks of equal width too (288 columns: one block, not 256 + 32).
  int64_t nc_max = round_up(ceil_div(n, ceil_div(n, kBlockN)), nr);
  int64_t nb = ceil_div(n, nc_max), mb = ceil_div(m, kMaxBlockM);
  // A small c over a long reduction (a convolution's weight gradient: c is [Cout, 9·Cin], the
  // reduction runs over every pixel of the batch) is split along k into a fixed number of slices,
  // summed into c at the end in slice order. The count depends on the shape only, so the result
  // does not depend on the thread count; cutting c finer instead would repack A for every sliver.
  const int64_t slices = mb * nb < kSplitTasks && k_blocks >= 2 * kMinSliceBlocks
                             ? std::min(ceil_div(kSplitTasks, mb * nb), k_blocks / kMinSliceBlocks)
                             : 1;
  const int64_t blocks_per_slice = ceil_div(k_blocks, slices);
  // Enough tasks for each thread to take about four (load balance on a busy machine). Each extra
  // row block packs B once more (k·n floats), each extra column block packs A once more (m·k), so
  // the cheaper side is cut: rows for a convolution's tall im2col, columns for a wide c.
  const int threads = region_threads();
  const int64_t want = threads > 1 ? int64_t(threads) * 4 : 1;
  if (slices * mb * nb < want) {
    const int64_t more = ceil_div(want, slices * mb * nb);
    if (n > m) {
      // Whole panels per block, rounded down so that there are at least `more` times the blocks.
      nc_max = std::max<int64_t>(1, ceil_div(n, nr) / (nb * more)) * nr;
      nb = ceil_div(n, nc_max);
    } else {
      mb = std::min(mb * more, ceil_div(m, kRowQuantum));
    }
  }
  const int64_t mc = std::min(round_up(ceil_div(m, mb), kRowQuantum), kMaxBlockM);
  mb = ceil_div(m, mc);
  // Slices write their partial products here (the calling thread's scratch, shared by the team).
  float* partial = slices > 1 ? thread_scratch_of<float>(kGemmSliceSlot, size_t(slices * m * n)) : nullptr;
  const double task_cost =
      double(std::min(mc, m)) * double(std::min(nc_max, n)) * double(kc_max * blocks_per_slice) / 4;
  // Tasks run slice-major, then B-block-major (t = (s · nb + jb) · mb + ib): consecutive tasks of a
  // chunk share their packed B.
  parallel_for(slices * nb * mb, task_cost, [&](int64_t begin, int64_t end) {
    float* b_pack = thread_scratch_of<float>(kGemmPackBSlot, size_t(kc_max * nc_max));
    // A's block: packed floats, or for an indirect A the run table plus one run of zeros (padding).
    float* a_pack = nullptr;
    const float** table = nullptr;
    const float* zeros = nullptr;
    if constexpr (IndirectPackA<PackA>) {
      const size_t entries = size_t(mc * (kc_max / run));
      table = static_cast<const float**>(thread_scratch(kGemmPackASlot, entries * sizeof(float*) + size_t(run) * sizeof(float)));
      float* z = reinterpret_cast<float*>(table + entries);
      std::fill(z, z + run, 0.0f);
      zeros = z;
    } else {
      a_pack = thread_scratch_of<float>(kGemmPackASlot, size_t(mc * kc_max));
    }
    for (int64_t t = begin; t < end;) {
      const int64_t sj = t / mb, group_end = std::min(end, (sj + 1) * mb);
      const int64_t slice = sj / nb, jb = sj - slice * nb;
      const int64_t j0 = jb * nc_max, nc = std::min(nc_max, n - j0);
      const int64_t p_begin = slice * blocks_per_slice * kc_max;
      const int64_t p_end = std::min(k, (slice + 1) * blocks_per_slice * kc_max);
      float* out = slices > 1 ? partial + slice * m * n : c;
      const int64_t ldo = slices > 1 ? n : ldc;
      for (int64_t p0 = p_begin;; p0 += kc_max) {
        const int64_t kc = std::max<int64_t>(0, std::min(kc_max, p_end - p0));
        if (kc > 0) pack_b(p0, kc, j0, nc, nr, b_pack);
        // A slice's first block overwrites its partial product; c's first block applies alpha,
        // beta and the bias; later blocks add.
        const bool first = p0 == p_begin;
        const float blk_alpha = slices > 1 ? 1.0f : alpha;
        const float blk_beta = !first ? 1.0f : slices > 1 ? 0.0f : beta;
        const float* blk_bias = slices == 1 && first && bias ? bias + j0 : nullptr;
        for (int64_t u = t; u < group_end; ++u) {
          const int64_t i0 = (u - sj * mb) * mc, rows = std::min(mc, m - i0);
          float* blk_c = out + i0 * ldo + j0;
          if constexpr (IndirectPackA<PackA>) {
            if (kc > 0) pack_a(i0, rows, p0, kc, table, zeros);
            simd::gemm_block_rows(rows, nc, kc / run, run, table, b_pack, blk_alpha, blk_beta, blk_bias, blk_c, ldo);
          } else if constexpr (PanelPackA<PackA>) {
            // mc is a multiple of every path's MR, so the panels fit in mc × kc floats.
            if (kc > 0) pack_a(i0, rows, p0, kc, a_pack);
            simd::gemm_block_panels(rows, nc, kc, a_pack, b_pack, blk_alpha, blk_beta, blk_bias, blk_c, ldo);
          } else {
            int64_t lda = kc;
            const float* a = kc > 0 ? pack_a(i0, rows, p0, kc, a_pack, lda) : a_pack;
            simd::gemm_block(rows, nc, kc, a, lda, b_pack, blk_alpha, blk_beta, blk_bias, blk_c, ldo);
          }
        }
        if (p0 + kc_max >= p_end) break;
      }
      t = group_end;
    }
  });
  if (slices > 1) {
    // c is small here (that is why k was sliced): summed on the calling thread, slice by slice.
    for (int64_t i = 0; i < m; ++i) {
      float* row = c + i * ldc;
      for (int64_t j = 0; j < n; ++j) {
        float sum = partial[i * n + j];
        for (int64_t s = 1; s < slices; ++s) sum += partial[(s * m + i) * n + j];
        float v = alpha * sum + (bias ? bias[j] : 0.0f);
        row[j] = beta == 0.0f ? v : v + beta * row[j];
      }
    }
  }
}

// Packers of plain row-major matrices (op(A) = A or Aᵀ, op(B) = B or Bᵀ).

// A stored [m, k]: used in place.
struct PlainA {
  const float* a;
  int64_t lda;
  const float* operator()(int64_t i0, int64_t, int64_t p0, int64_t, float*, int64_t& ld) const {
    ld = lda;
    return a + i0 * lda + p0;
  }
};

// A stored [k, m] (op(A) = Aᵀ): packed into MR-row panels, whose MR floats per reduction step lie
// side by side in A's rows (a vector copy per step, where a row-major block would take one scalar
// store per element).
struct TransposedA {
  static constexpr bool kPanels = true;
  const float* a;
  int64_t lda;
  void operator()(int64_t i0, int64_t mc, int64_t p0, int64_t kc, float* dst) const {
    simd::gemm_pack_a_transposed(a + p0 * lda + i0, lda, mc, kc, dst);
  }
};

// B given row by row: row(p, j0, count, tmp) returns a pointer to B[p, j0 .. j0 + count), either
// into the caller's data or into tmp after filling it (room for count floats).
template <class Row>
struct RowsB {
  Row row;
  void operator()(int64_t p0, int64_t kc, int64_t j0, int64_t nc, int64_t nr, float* dst) const {
    float tmp[gemm_detail::kBlockN];
    const int64_t panels = gemm_detail::ceil_div(nc, nr);
    for (int64_t p = 0; p < kc; ++p) {
      const float* src = row(p0 + p, j0, nc, tmp);
      for (int64_t q = 0; q < panels; ++q) {
        float* out = dst + (q * kc + p) * nr;
        const int64_t w = std::min(nr, nc - q * nr);
        const float* from = src + q * nr;
        // A plain loop, not memcpy: at 8..32 floats the call costs more than the copy.
        for (int64_t jj = 0; jj < w; ++jj) out[jj] = from[jj];
        for (int64_t jj = w; jj < nr; ++jj) out[jj] = 0.0f;
      }
    }
  }
};

// B stored [k, n]: panels copied from its rows with vector loads and stores.
struct PlainB {
  const float* b;
  int64_t ldb;
  void operator()(int64_t p0, int64_t kc, int64_t j0, int64_t nc, int64_t, float* dst) const {
    simd::gemm_pack_b(b + p0 * ldb + j0, ldb, nc, kc, dst);
  }
};

// B stored [n, k] (op(B) = Bᵀ): the panels transposed from B's rows in 4 × 4 register blocks.
struct TransposedB {
  const float* b;
  int64_t ldb;
  void operator()(int64_t p0, int64_t kc, int64_t j0, int64_t nc, int64_t, float* dst) const {
    simd::gemm_pack_b_transposed(b + j0 * ldb + p0, ldb, nc, kc, dst);
  }
};

}  // namespace diffuse::kernels::cpu
