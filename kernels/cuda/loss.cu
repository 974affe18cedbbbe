// CUDA dropout and MSE loss (see kernels/loss.h), also run by the SIMT emulator.
// Dropout: one thread per Philox block (4 consecutive elements share one counter, the mapping of
// philox::uniform_at), float4 when aligned: 8 B per element and one Philox4x32-10 per 4 elements;
// a template over the storage type (kernels/cuda/storage.cuh), so bf16 activations drop in place
// (4 B per element, the kept value scaled in f32 and rounded once). The mask's first block may
// come from device memory (DropoutDesc::base, read once per thread), so a replayed graph draws a
// new mask each step.
// MSE: stage 1 runs a 256-thread block per (batch item, split), f32 sums per thread over float4
// loads, an f64 block sum, times the item's weight, into a workspace of doubles; stage 2 is one
// block adding every partial in a fixed order and writing loss[0]. Splits depend on the shape
// alone, so the loss is bit-reproducible; no atomics. Backward: grid (columns, items), the
// item's coefficient computed once in f64 like the twin, then 12 B per element.
#include "kernels/compat.cuh"
#include "kernels/cuda/grid_helpers.cuh"
#include "kernels/cuda/storage.cuh"
#include "kernels/loss.h"
#include "kernels/philox.h"

#include <algorithm>
#include <cstdint>

namespace diffuse::kernels::DIFFUSE_DEVICE_NS {
namespace {

using grid::aligned16;
using grid::blocks_for;
using grid::kThreads;
constexpr int64_t kTargetBlocks = 1024;  // stage-1 blocks to aim for
constexpr int64_t kSplitMin = 16384;     // elements per split (64 per thread)
constexpr int64_t kMaxGridY = 65535;

template <typename S>
__global__ void __launch_bounds__(kThreads)
    dropout_kernel(DropoutDesc d, const S* __restrict__ x, S* __restrict__ y, bool vector) {
  const float scale = static_cast<float>(d.scale);
  const int64_t quads = (d.n + 3) / 4, stride = grid::grid_threads();
  const uint64_t first = dropout_first_block(d);
  for (int64_t q = grid::global_thread(); q < quads; q += stride) {
    const philox::U32x4 r = philox::block(d.seed, philox::kDropout, first + static_cast<uint64_t>(q));
    const int64_t i0 = 4 * q;
    const int count = d.n - i0 < 4 ? static_cast<int>(d.n - i0) : 4;
    float in[4], out[4];
    if (vector && count == 4) {
      storage::load4(x, q, in);
    } else {
      DIFFUSE_UNROLL
      for (int j = 0; j < 4; ++j) in[j] = j < count ? storage::load(x, i0 + j) : 0.0f;
    }
    DIFFUSE_UNROLL
    for (int j = 0; j < 4; ++j) out[j] = philox::to_uniform(r.v[j]) < d.p ? 0.0f : in[j] * scale;
    if (vector && count == 4) {
      storage::store4(y, q, out);
    } else {
      DIFFUSE_UNROLL
      for (int j = 0; j < 4; ++j)
        if (j < count) storage::store(y, i0 + j, out[j]);
    }
  }
}

struct MsePlan {
  int64_t splits = 0, span = 4;  // per batch item
  int64_t partials = 0;          // batch * splits doubles
};

MsePlan plan_mse(const MseDesc& d) {
  MsePlan p;
  if (d.batch <= 0 || d.per_item <= 0) return p;
  const int64_t r = d.per_item;
  const int64_t s = std::max<int64_t>(1, std::min((r + kSplitMin - 1) / kSplitMin, (kTargetBlocks + d.batch - 1) / d.batch));
  p.span = ((r + s - 1) / s + 3) / 4 * 4;  // a multiple of 4: every split starts on a float4
  p.splits = (r + p.span - 1) / p.span;
  p.partials = d.batch * p.splits;
  return p;
}

__global__ void __launch_bounds__(kThreads)
    mse_partials(MseDesc d, int64_t splits, int64_t span, const float* __restrict__ pred,
                 const float* __restrict__ target, const float* __restrict__ w, double* __restrict__ partials,
                 bool vector) {
  for (int64_t blk = blockIdx.x; blk < d.batch * splits; blk += gridDim.x) {  // block-uniform
    const int64_t o = blk / splits, s = blk - o * splits;
    const int64_t begin = o * d.per_item + s * span, end = o * d.per_item + grid::min64(d.per_item, (s + 1) * span);
    float acc = 0.0f;
    if (vector) {
      for (int64_t q = begin / 4 + threadIdx.x; q < end / 4; q += blockDim.x) {
        const float4 p = grid::load4(pred, q), t = grid::load4(target, q);
        const float e0 = p.x - t.x, e1 = p.y - t.y, e2 = p.z - t.z, e3 = p.w - t.w;
        acc += e0 * e0;
        acc += e1 * e1;
        acc += e2 * e2;
        acc += e3 * e3;
      }
    } else {
      for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
        const float e = pred[i] - target[i];
        acc += e * e;
      }
    }
    const double total = grid::block_sum<double, kThreads>(static_cast<double>(acc));
    if (threadIdx.x == 0) partials[blk] = (w ? static_cast<double>(w[o]) : 1.0) * total;
  }
}

// One block: loss[0] = scale * (the partials added in a fixed order).
__global__ void __launch_bounds__(kThreads)
    mse_combine(int64_t count, double scale, const double* __restrict__ partials, float* __restrict__ loss) {
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
  const double total = grid::block_sum<double, kThreads>(acc);
  if (threadIdx.x == 0) loss[0] = static_cast<float>(total * scale);
}

__global__ void __launch_bounds__(kThreads)
    mse_backward_kernel(MseDesc d, double coef, const float* __restrict__ grad_loss, const float* __restrict__ pred,
                        const float* __restrict__ target, const float* __restrict__ w, float* __restrict__ gpred,
                        bool vector) {
  const double upstream = grad_loss ? static_cast<double>(*grad_loss) : 1.0;
  const int64_t cols = vector ? d.per_item / 4 : d.per_item;
  const int64_t col_stride = grid::grid_threads();
  for (int64_t o = blockIdx.y; o < d.batch; o += gridDim.y) {
    const float c = static_cast<float>(coef * upstream * (w ? static_cast<double>(w[o]) : 1.0));
    const int64_t base = o * cols;
    for (int64_t k = grid::global_thread(); k < cols; k += col_stride) {
      if (vector) {
        const float4 p = grid::load4(pred, base + k);
        const float4 t = grid::load4(target, base + k);
        grid::store4(gpred, base + k,
                     make_float4(c * (p.x - t.x), c * (p.y - t.y), c * (p.z - t.z), c * (p.w - t.w)));
      } else {
        gpred[base + k] = c * (pred[base + k] - target[base + k]);
      }
    }
  }
}

void check_mse(const MseDesc& d, const char* op) {
  require(d.batch >= 0 && d.per_item >= 0, [&] {
    return std::string(op) + ": negative size (batch " + std::to_string(d.batch) + ", per_item " +
           std::to_string(d.per_item) + ")";
  });
}

template <typename S>
void dropout_impl(const DropoutDesc& d, const S* x, S* y, Stream stream) {
  require(d.n >= 0 && d.p >= 0.0f && d.p < 1.0f, [&] {
    return "dropout: need n >= 0 and p in [0, 1), got n " + std::to_string(d.n) + ", p " + std::to_string(d.p);
  });
  const bool vector = storage::aligned4(x) && storage::aligned4(y);
  DIFFUSE_LAUNCH(dropout_kernel<S>, blocks_for((d.n + 3) / 4), kThreads, 0, stream, d, x, y, vector);
}

}  // namespace

void dropout_apply(const DropoutDesc& d, const float* x, float* y, Stream stream) { dropout_impl(d, x, y, stream); }
void dropout_apply(const DropoutDesc& d, const uint16_t* x, uint16_t* y, Stream stream) {
  dropout_impl(d, storage::dev(x), storage::dev(y), stream);
}

int64_t mse_loss_workspace(const MseDesc& d) { return plan_mse(d).partials; }

void mse_loss(const MseDesc& d, double scale, const float* pred, const float* target, const float* w, float* loss,
              double* workspace, Stream stream) {
  check_mse(d, "mse_loss");
  const MsePlan p = plan_mse(d);
  require(loss && (p.partials == 0 || (pred && target && workspace)), [&] {
    return "mse_loss: null buffer or workspace (needs " + std::to_string(p.partials) + " doubles)";
  });
  const bool vector = d.per_item % 4 == 0 && aligned16(pred) && aligned16(target);
  DIFFUSE_LAUNCH(mse_partials, blocks_for(p.partials, 1), kThreads, 0, stream, d, p.splits, p.span, pred, target, w,
                 workspace, vector);
  DIFFUSE_LAUNCH(mse_combine, 1, kThreads, 0, stream, p.partials, scale, static_cast<const double*>(workspace), loss);
}

void mse_backward(const MseDesc& d, double coef, const float* grad_loss, const float* pred, const float* target,
                  const float* w, float* gpred, Stream stream) {
  check_mse(d, "mse_backward");
  const bool vector = d.per_item % 4 == 0 && aligned16(pred) && aligned16(target) && aligned16(gpred);
  const int64_t cols = vector ? d.per_item / 4 : d.per_item;
  const dim3 grid_shape(blocks_for(cols), blocks_for(d.batch, 1, kMaxGridY));
  DIFFUSE_LAUNCH(mse_backward_kernel, grid_shape, kThreads, 0, stream, d, coef, grad_loss, pred, target, w, gpred,
                 vector);
}

}  // namespace diffuse::kernels::DIFFUSE_DEVICE_NS
