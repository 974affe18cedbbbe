// CUDA q_sample (see kernels/noise.h), also run by the SIMT emulator. One thread per Philox quad
// (four consecutive flat elements share one counter block), grid-stride; float4 loads/stores when
// all three arrays are 16-byte aligned. Memory-bound: 4 bytes read, 8 written per element. The
// Philox offset may come from a step number in device memory (QSampleDesc::step). train_draws:
// one thread per row of the batch.
#include "kernels/compat.cuh"
#include "kernels/cuda/grid_helpers.cuh"
#include "kernels/noise.h"
#include "kernels/philox.h"

#include <algorithm>
#include <cstdint>

namespace diffuse::kernels::DIFFUSE_DEVICE_NS {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;  // enough to fill an H100 several times; the rest strides

template <bool kVector>
__global__ void __launch_bounds__(kThreads)
    q_sample_kernel(QSampleDesc d, const float* __restrict__ x0, const float* __restrict__ sqrt_ab,
                    const float* __restrict__ sqrt_1mab, float* __restrict__ x_t, float* __restrict__ target) {
  const int64_t total = d.batch * d.per_sample;
  const int64_t quads = (total + 3) / 4;
  const int64_t stride = grid::grid_threads();
  const uint64_t offset = q_sample_offset(d);
  for (int64_t q = grid::global_thread(); q < quads; q += stride) {
    float eps[4];
    philox::normals4(d.seed, philox::kNoise, offset + static_cast<uint64_t>(q), eps);
    const int64_t k0 = 4 * q;
    const int count = total - k0 < 4 ? static_cast<int>(total - k0) : 4;
    float in[4], xt[4], tg[4];
    if (kVector && count == 4) {
      grid::load4(x0, q, in);
    } else {
      DIFFUSE_UNROLL
      for (int j = 0; j < 4; ++j) in[j] = j < count ? x0[k0 + j] : 0.0f;
    }
    // The quad may straddle samples: step the sample index instead of dividing per element.
    int64_t b = k0 / d.per_sample;
    int64_t pos = k0 - b * d.per_sample;
    float a = sqrt_ab[b], s = sqrt_1mab[b];
    // A fixed trip count (and `j < count` guards) keeps the quad's arrays in registers.
    DIFFUSE_UNROLL
    for (int j = 0; j < 4; ++j, ++pos) {
      if (pos == d.per_sample && j < count) {
        ++b;
        pos = 0;
        a = sqrt_ab[b];
        s = sqrt_1mab[b];
      }
      q_sample_element(in[j], eps[j], a, s, d.target, xt[j], tg[j]);
    }
    if (kVector && count == 4) {
      grid::store4(x_t, q, xt);
      grid::store4(target, q, tg);
    } else {
      DIFFUSE_UNROLL
      for (int j = 0; j < 4; ++j)
        if (j < count) {
          x_t[k0 + j] = xt[j];
          target[k0 + j] = tg[j];
        }
    }
  }
}

// One thread per row.
__global__ void __launch_bounds__(kThreads) train_draws_kernel(TrainDrawDesc d, TrainDrawBuffers b) {
  const int64_t i = grid::global_thread();
  if (i < d.batch) train_draw_row(d, b, *b.step, i);
}

}  // namespace

void train_draws(const TrainDrawDesc& d, const TrainDrawBuffers& b, Stream stream) {
  check_train_draws(d, b);
  const int blocks = static_cast<int>((d.batch + kThreads - 1) / kThreads);
  DIFFUSE_LAUNCH(train_draws_kernel, blocks, kThreads, 0, stream, d, b);
}

void q_sample(const QSampleDesc& d, const float* x0, const float* sqrt_ab, const float* sqrt_1mab, float* x_t,
              float* target, Stream stream) {
  check_q_sample(d, x0, sqrt_ab, sqrt_1mab, x_t, target);
  const int64_t quads = (d.batch * d.per_sample + 3) / 4;
  const int blocks = static_cast<int>(std::min<int64_t>((quads + kThreads - 1) / kThreads, kMaxBlocks));
  if (grid::aligned16(x0) && grid::aligned16(x_t) && grid::aligned16(target))
    DIFFUSE_LAUNCH((q_sample_kernel<true>), blocks, kThreads, 0, stream, d, x0, sqrt_ab, sqrt_1mab, x_t, target);
  else
    DIFFUSE_LAUNCH((q_sample_kernel<false>), blocks, kThreads, 0, stream, d, x0, sqrt_ab, sqrt_1mab, x_t, target);
}

}  // namespace diffuse::kernels::DIFFUSE_DEVICE_NS
