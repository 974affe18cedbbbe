// The kernels of attention's GEMM path (kernels/attention.h; the cuBLAS side is attention_gemm.cpp),
// also run by the SIMT emulator: the row softmax between S = scale·q kᵀ and out = P v, and the
// backward's P = exp(S − lse) and dS = P ∘ (dP − delta) with delta = Σ_j P_ij dP_ij. This file
// exists because those steps are per-row reductions and element maps over the f32 score matrix
// that no library call fuses with the storage conversion.
// delta is taken from P and dP in f32 here, not as rowsum(dout ∘ out) (the flash kernels' D, equal
// in exact arithmetic): out was made from P rounded to bf16, and a delta from it no longer matches
// this dP, an error every dS_ij then carries (modelled in f64 for q = k = v, [2, 40, 2 × 32], bf16:
// largest grad error 1.4e-2 of the peak with rowsum(dout ∘ out), 5e-3 with Σ P dP, 1e-2 for the
// all-f32 flash kernels).
//
// Launch: 256 threads = 8 warps, one warp per row, at most grid::kMaxBlocks blocks (warps stride
// over the rows). Lane l takes elements l, l+32, ... of its row; sums and the max reduce over the
// warp in a fixed order (deterministic). P and dS are written in the storage type over the f32
// row they come from: element j of the output lands in bytes [j·s, j·s + s) of the row, inside the
// f32 elements 0..j that this warp has already read (each 32-element step reads, then __syncwarp,
// then writes), so no other row and no unread score is overwritten.
// Traffic per row of L: softmax_rows reads the scores three times (max, sum, write pass; the row is
// 4·L bytes, so the repeats come from L1/L2) and writes L·s; softmax_grad reads S and dP twice
// (delta, then the write pass) and writes 2·L·s.
#include "kernels/compat.cuh"
#include "kernels/attention.h"
#include "kernels/cuda/attention_tiles.cuh"
#include "kernels/cuda/grid_helpers.cuh"
#include "kernels/cuda/storage.cuh"

#include <cmath>
#include <cstdint>
#include <string>

namespace diffuse::kernels::DIFFUSE_DEVICE_NS {
namespace {

using attention_tiles::warp_max;
using grid::warp_sum;

constexpr int kWarps = 8, kThreads = 32 * kWarps;

__device__ __forceinline__ int64_t first_row() { return static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32; }
__device__ __forceinline__ int64_t row_stride() { return static_cast<int64_t>(gridDim.x) * kWarps; }

template <typename T>
__global__ void __launch_bounds__(kThreads) softmax_rows_kernel(int64_t rows, int len, float* s, float* lse) {
  const int lane = threadIdx.x % 32;
  for (int64_t r = first_row(); r < rows; r += row_stride()) {
    float* row = s + r * len;
    float m = -INFINITY;
    for (int j = lane; j < len; j += 32) m = fmaxf(m, row[j]);
    m = warp_max(m);
    float l = 0.0f;
    for (int j = lane; j < len; j += 32) l += __expf(row[j] - m);
    l = warp_sum(l);
    const float inv = 1.0f / l;
    T* p = reinterpret_cast<T*>(row);
    for (int j0 = 0; j0 < len; j0 += 32) {
      const int j = j0 + lane;
      const float x = j < len ? row[j] : 0.0f;
      __syncwarp();  // the warp's scores of this step are read before P overwrites them
      if (j < len) storage::store(p, j, __expf(x - m) * inv);
    }
    if (lse != nullptr && lane == 0) lse[r] = m + logf(l);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) softmax_grad_kernel(int64_t rows, int len, float* s, float* dp,
                                                                 const float* lse) {
  const int lane = threadIdx.x % 32;
  for (int64_t r = first_row(); r < rows; r += row_stride()) {
    float* s_row = s + r * len;
    float* dp_row = dp != nullptr ? dp + r * len : nullptr;
    T* p = reinterpret_cast<T*>(s_row);
    T* ds = reinterpret_cast<T*>(dp_row);
    const float row_lse = lse[r];
    float row_delta = 0.0f;
    if (dp_row != nullptr) {  // delta = Σ_j P_ij dP_ij (warp-uniform branch)
      for (int j = lane; j < len; j += 32) row_delta += __expf(s_row[j] - row_lse) * dp_row[j];
      row_delta = warp_sum(row_delta);
    }
    for (int j0 = 0; j0 < len; j0 += 32) {
      const int j = j0 + lane;
      const float x = j < len ? s_row[j] : 0.0f;
      const float g = dp_row != nullptr && j < len ? dp_row[j] : 0.0f;
      __syncwarp();  // this step's S and dP are read before P and dS overwrite them
      if (j >= len) continue;
      const float pj = __expf(x - row_lse);
      storage::store(p, j, pj);
      if (dp_row != nullptr) storage::store(ds, j, pj * (g - row_delta));
    }
  }
}

int row_blocks(int64_t rows) { return grid::blocks_for(rows, kWarps); }

void check_rows(const char* what, int64_t rows, int64_t len) {
  require(rows >= 0 && len >= 0 && len <= (int64_t{1} << 30),
          [&] { return std::string(what) + ": " + std::to_string(rows) + " rows of " + std::to_string(len) +
                       " (at most 2^30 a row)"; });
}

template <typename T>
void launch_softmax_rows(int64_t rows, int64_t len, float* s, float* lse, Stream stream) {
  DIFFUSE_LAUNCH((softmax_rows_kernel<T>), dim3(static_cast<unsigned>(row_blocks(rows))), kThreads, 0, stream, rows,
                 static_cast<int>(len), s, lse);
}

template <typename T>
void launch_softmax_grad(int64_t rows, int64_t len, float* s, float* dp, const float* lse, Stream stream) {
  DIFFUSE_LAUNCH((softmax_grad_kernel<T>), dim3(static_cast<unsigned>(row_blocks(rows))), kThreads, 0, stream, rows,
                 static_cast<int>(len), s, dp, lse);
}

}  // namespace

void attention_softmax_rows(int64_t rows, int64_t len, DenseType p_type, float* s, float* lse, Stream stream) {
  check_rows("attention_softmax_rows", rows, len);
  if (rows == 0 || len == 0) return;
  require(s != nullptr, "attention_softmax_rows: null scores");
  if (p_type == DenseType::f32)
    launch_softmax_rows<float>(rows, len, s, lse, stream);
  else
    launch_softmax_rows<storage::bf16>(rows, len, s, lse, stream);
}

void attention_softmax_grad(int64_t rows, int64_t len, DenseType p_type, float* s, float* dp, const float* lse,
                            Stream stream) {
  check_rows("attention_softmax_grad", rows, len);
  if (rows == 0 || len == 0) return;
  require(s != nullptr && lse != nullptr, "attention_softmax_grad: null buffer");
  if (p_type == DenseType::f32)
    launch_softmax_grad<float>(rows, len, s, dp, lse, stream);
  else
    launch_softmax_grad<storage::bf16>(rows, len, s, dp, lse, stream);
}

}  // namespace diffuse::kernels::DIFFUSE_DEVICE_NS
