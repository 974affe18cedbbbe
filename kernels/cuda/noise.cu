// CUDA q_sample (see kernels/noise.h), also run by the SIMT emulator. One thread per Philox quad
// (four consecutive flat elements share one counter block), grid-stride over one full wave of
// blocks (grid::wave_blocks); float4 loads/stores when all three arrays are 16-byte aligned.
// Traffic: the minimum, x0 read (4 B) and x_t, target written (8 B) per element, plus two
// coefficients per image (cached). What limits it on an H200 is arithmetic as much as HBM: Philox-10
// and Box-Muller cost about as many cycles per quad as moving its 48 bytes, so each thread issues
// the next quad's load before this quad's draw (two loads in flight), and the sample index of a
// quad is stepped along the grid stride (one division per thread, none per quad). The Philox offset may come from a step number in device
// memory (QSampleDesc::step). train_draws: one thread per row of the batch.
#include "kernels/compat.cuh"
#include "kernels/cuda/grid_helpers.cuh"
#include "kernels/noise.h"
#include "kernels/philox.h"

#include <algorithm>
#include <cstdint>

namespace diffuse::kernels::DIFFUSE_DEVICE_NS {
namespace {

constexpr int kThreads = 256;

template <bool kVector>
__global__ void __launch_bounds__(kThreads)
    q_sample_kernel(QSampleDesc d, const float* __restrict__ x0, const float* __restrict__ sqrt_ab,
                    const float* __restrict__ sqrt_1mab, float* __restrict__ x_t, float* __restrict__ target) {
  const int64_t total = d.batch * d.per_sample, P = d.per_sample;
  const int64_t quads = (total + 3) / 4;
  const int64_t stride = grid::grid_threads();
  const uint64_t offset = q_sample_offset(d);
  int64_t q = grid::global_thread();
  if (q >= quads) return;
  // Sample b and position pos of the quad's first element 4q: divided once per thread, then
  // stepped by the grid stride (4·stride elements = step_b samples + step_pos positions).
  int64_t b = 4 * q / P, pos = 4 * q - b * P;
  const int64_t step_b = 4 * stride / P, step_pos = 4 * stride - step_b * P;
  // x0's quad qq (zeros past the end).
  const auto load_quad = [&](int64_t qq, float (&v)[4]) {
    const int64_t k = 4 * qq;
    const int cnt = total - k < 4 ? static_cast<int>(total - k) : 4;
    if (kVector && cnt == 4) {
      grid::load4(x0, qq, v);
    } else {
      DIFFUSE_UNROLL
      for (int j = 0; j < 4; ++j) v[j] = j < cnt ? x0[k + j] : 0.0f;
    }
  };
  float next[4];
  load_quad(q, next);
  for (; q < quads; q += stride) {
    const int64_t k0 = 4 * q;
    const int count = total - k0 < 4 ? static_cast<int>(total - k0) : 4;
    // The next quad's load is issued before this quad's draw: two loads in flight per thread.
    float in[4] = {next[0], next[1], next[2], next[3]};
    if (q + stride < quads) load_quad(q + stride, next);
    float a = sqrt_ab[b], s = sqrt_1mab[b];
    float eps[4];
    philox::normals4(d.seed, philox::kNoise, offset + static_cast<uint64_t>(q), eps);
    float xt[4], tg[4];
    // The quad may straddle samples: step the sample index instead of dividing per element.
    // A fixed trip count (and `j < count` guards) keeps the quad's arrays in registers.
    int64_t bj = b, pj = pos;
    DIFFUSE_UNROLL
    for (int j = 0; j < 4; ++j, ++pj) {
      if (pj == P && j < count) {
        ++bj;
        pj = 0;
        a = sqrt_ab[bj];
        s = sqrt_1mab[bj];
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
    b += step_b;
    pos += step_pos;
    if (pos >= P) {
      pos -= P;
      ++b;
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
  if (grid::aligned16(x0) && grid::aligned16(x_t) && grid::aligned16(target))
    DIFFUSE_LAUNCH((q_sample_kernel<true>), grid::wave_blocks(q_sample_kernel<true>, kThreads, quads, kThreads), kThreads,
                   0, stream, d, x0, sqrt_ab, sqrt_1mab, x_t, target);
  else
    DIFFUSE_LAUNCH((q_sample_kernel<false>), grid::wave_blocks(q_sample_kernel<false>, kThreads, quads, kThreads),
                   kThreads, 0, stream, d, x0, sqrt_ab, sqrt_1mab, x_t, target);
}

}  // namespace diffuse::kernels::DIFFUSE_DEVICE_NS
