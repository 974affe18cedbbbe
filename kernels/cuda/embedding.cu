// CUDA embedding lookup and its backward (see kernels/embedding.h), also run by the SIMT emulator.
// Forward: grid (column tiles, index rows); each block copies one table row (float4 when the width
// is a multiple of 4 and the buffers aligned): 8 B per output element, no index math per element.
// Backward without atomics: grid (column tiles, table rows); a block owns one table row's columns,
// stages the indices 256 at a time in shared memory and adds gout rows whose index matches, in
// index order. It reads the index list once per (table row, column tile) — N*V compares in all,
// trivial for class labels (N = batch, V = classes) — and every grad row once per match, so the
// result is deterministic and identical to the CPU twin's serial loop.
// Timestep embedding: one thread per (row, frequency) pair writes that frequency's sin and cos,
// with the CPU twin's f32 operations in its order (kernels/embedding.h says why and what differs
// on a GPU). [N, dim] is a few thousand elements: launch-bound, so it is kept this simple.
#include "kernels/compat.cuh"
#include "kernels/cuda/grid_helpers.cuh"
#include "kernels/embedding.h"

#include <cstdint>

namespace diffuse::kernels::DIFFUSE_DEVICE_NS {
namespace {

using grid::aligned16;
using grid::blocks_for;
using grid::kThreads;
constexpr int64_t kMaxGridY = 65535;

__device__ __forceinline__ float quiet_nan() { return __int_as_float(0x7fc00000); }

template <typename I>
__global__ void __launch_bounds__(kThreads)
    embedding_forward_kernel(EmbeddingDesc d, const float* __restrict__ table, const I* __restrict__ index,
                             float* __restrict__ out, bool vector) {
  const int64_t col_stride = grid::grid_threads();
  const int64_t first = grid::global_thread();
  const float nan = quiet_nan();
  for (int64_t i = blockIdx.y; i < d.n; i += gridDim.y) {
    const int64_t row = static_cast<int64_t>(index[i]);
    const bool valid = row >= 0 && row < d.v;  // validated by the caller; never read outside the table
    const float* src = table + (valid ? row : 0) * d.d;
    float* dst = out + i * d.d;
    if (vector) {
      for (int64_t k = first; k < d.d / 4; k += col_stride)
        grid::store4(dst, k, valid ? grid::load4(src, k) : make_float4(nan, nan, nan, nan));
    } else {
      for (int64_t k = first; k < d.d; k += col_stride) dst[k] = valid ? src[k] : nan;
    }
  }
}

template <typename I>
__global__ void __launch_bounds__(kThreads)
    embedding_backward_kernel(EmbeddingDesc d, const I* __restrict__ index, const float* __restrict__ gout,
                              float* __restrict__ gtable, bool vector) {
  DIFFUSE_SHARED(int64_t, ids, kThreads);
  const int64_t cols = vector ? d.d / 4 : d.d;
  const int64_t col_stride = grid::grid_threads();
  for (int64_t row = blockIdx.y; row < d.v; row += gridDim.y) {  // block-uniform
    for (int64_t c0 = static_cast<int64_t>(blockIdx.x) * blockDim.x; c0 < cols; c0 += col_stride) {  // block-uniform
      const int64_t k = c0 + threadIdx.x;
      float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      for (int64_t i0 = 0; i0 < d.n; i0 += kThreads) {  // block-uniform
        const int m = static_cast<int>(grid::min64(kThreads, d.n - i0));
        if (static_cast<int>(threadIdx.x) < m) ids[threadIdx.x] = static_cast<int64_t>(index[i0 + threadIdx.x]);
        __syncthreads();
        if (k < cols) {
          for (int t = 0; t < m; ++t) {
            if (ids[t] != row) continue;
            if (vector) {
              const float4 g = grid::load4(gout, (i0 + t) * cols + k);
              acc[0] += g.x, acc[1] += g.y, acc[2] += g.z, acc[3] += g.w;
            } else {
              acc[0] += gout[(i0 + t) * cols + k];
            }
          }
        }
        __syncthreads();  // ids[] is refilled by the next pass
      }
      if (k < cols) {
        if (vector)
          grid::store4(gtable, row * cols + k, acc);
        else
          gtable[row * cols + k] = acc[0];
      }
    }
  }
}

template <typename TIn>
__global__ void __launch_bounds__(kThreads)
    timestep_embedding_kernel(TimestepEmbeddingDesc d, const TIn* __restrict__ t, float* __restrict__ out) {
  const int64_t half = d.dim / 2;
  const int64_t cols = half + (d.dim % 2);  // an odd width's zero column is one more item per row
  const float neg_log_period = static_cast<float>(-9.210340371976184);  // -ln(10000), rounded as the CPU's
  const float denom = static_cast<float>(static_cast<double>(half) - d.freq_shift);
  const int64_t sin_at = d.flip_sin_to_cos ? half : 0;
  const int64_t cos_at = d.flip_sin_to_cos ? 0 : half;
  for (int64_t k = grid::global_thread(); k < d.n * cols; k += grid::grid_threads()) {
    const int64_t row = k / cols, i = k % cols;
    float* dst = out + row * d.dim;
    if (i == half) {
      dst[d.dim - 1] = 0.0f;
      continue;
    }
    const float tn = static_cast<float>(t[d.broadcast_t ? 0 : row]);
    float exponent = neg_log_period * static_cast<float>(i);
    exponent = exponent / denom;
    const float arg = tn * expf(exponent);
    dst[sin_at + i] = sinf(arg);
    dst[cos_at + i] = cosf(arg);
  }
}

template <typename TIn>
void launch_timestep_embedding(const TimestepEmbeddingDesc& d, const TIn* t, float* out, Stream stream) {
  require(d.n >= 0 && d.dim >= 1, [&] {
    return "timestep_embedding: bad size (n " + std::to_string(d.n) + ", dim " + std::to_string(d.dim) + ")";
  });
  const int64_t cols = d.dim / 2 + d.dim % 2;
  if (d.n == 0) return;
  DIFFUSE_LAUNCH((timestep_embedding_kernel<TIn>), blocks_for(d.n * cols), kThreads, 0, stream, d, t, out);
}

void check_desc(const EmbeddingDesc& d, const char* op) {
  require(d.n >= 0 && d.v >= 0 && d.d >= 0, [&] {
    return std::string(op) + ": negative size (n " + std::to_string(d.n) + ", v " + std::to_string(d.v) + ", d " +
           std::to_string(d.d) + ")";
  });
}

template <typename I>
void launch_forward(const EmbeddingDesc& d, const float* table, const I* index, float* out, Stream stream) {
  check_desc(d, "embedding_forward");
  const bool vector = d.d % 4 == 0 && aligned16(table) && aligned16(out);
  const int64_t cols = vector ? d.d / 4 : d.d;
  const dim3 grid_shape(blocks_for(cols), blocks_for(d.n, 1, kMaxGridY));
  DIFFUSE_LAUNCH((embedding_forward_kernel<I>), grid_shape, kThreads, 0, stream, d, table, index, out, vector);
}

template <typename I>
void launch_backward(const EmbeddingDesc& d, const I* index, const float* gout, float* gtable, Stream stream) {
  check_desc(d, "embedding_backward");
  const bool vector = d.d % 4 == 0 && aligned16(gout) && aligned16(gtable);
  const int64_t cols = vector ? d.d / 4 : d.d;
  const dim3 grid_shape(blocks_for(cols), blocks_for(d.v, 1, kMaxGridY));
  DIFFUSE_LAUNCH((embedding_backward_kernel<I>), grid_shape, kThreads, 0, stream, d, index, gout, gtable, vector);
}

}  // namespace

void embedding_forward(const EmbeddingDesc& d, const float* table, const int32_t* index, float* out, Stream stream) {
  launch_forward(d, table, index, out, stream);
}
void embedding_forward(const EmbeddingDesc& d, const float* table, const int64_t* index, float* out, Stream stream) {
  launch_forward(d, table, index, out, stream);
}
void embedding_backward(const EmbeddingDesc& d, const int32_t* index, const float* gout, float* gtable,
                        Stream stream) {
  launch_backward(d, index, gout, gtable, stream);
}
void embedding_backward(const EmbeddingDesc& d, const int64_t* index, const float* gout, float* gtable,
                        Stream stream) {
  launch_backward(d, index, gout, gtable, stream);
}
void timestep_embedding(const TimestepEmbeddingDesc& d, const float* t, float* out, Stream stream) {
  launch_timestep_embedding(d, t, out, stream);
}
void timestep_embedding(const TimestepEmbeddingDesc& d, const int32_t* t, float* out, Stream stream) {
  launch_timestep_embedding(d, t, out, stream);
}
void timestep_embedding(const TimestepEmbeddingDesc& d, const int64_t* t, float* out, Stream stream) {
  launch_timestep_embedding(d, t, out, stream);
}

}  // namespace diffuse::kernels::DIFFUSE_DEVICE_NS
