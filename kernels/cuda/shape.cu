// CUDA shape kernels (see kernels/shape.h), also run by the SIMT emulator: channel concat and its
// split, nearest 2x upsampling of NHWC maps and its backward. Pure data movement, so the layout is
// one warp per row (concat) or per input pixel (upsample): the lanes stride over the channels,
// float4 when the channel counts are multiples of 4 and the buffers 16-byte aligned, so each warp
// moves 512 contiguous bytes per step and needs one division per pixel, none per element.
// Traffic: concat/split read and write each element once (8 B/element); upsample reads an input
// pixel once and writes it four times (20 B per input element), its backward the reverse.
#include "kernels/compat.cuh"
#include "kernels/cuda/grid_helpers.cuh"
#include "kernels/shape.h"

#include <cstdint>

namespace diffuse::kernels::DIFFUSE_DEVICE_NS {
namespace {

using grid::aligned16;
using grid::blocks_for;
using grid::kThreads;

// dst[0, len) = src[0, len) by the 32 lanes of a warp (len in floats; float4 when `vector`).
__device__ __forceinline__ void warp_copy(float* __restrict__ dst, const float* __restrict__ src, int64_t len,
                                          bool vector, int lane) {
  if (vector) {
    for (int64_t k = lane; k < len / 4; k += 32) grid::store4(dst, k, grid::load4(src, k));
  } else {
    for (int64_t k = lane; k < len; k += 32) dst[k] = src[k];
  }
}

__global__ void __launch_bounds__(kThreads)
    concat_kernel(ConcatDesc d, const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out,
                  bool vector) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = grid::grid_threads() / 32, c = d.ca + d.cb;
  for (int64_t r = grid::global_thread() / 32; r < d.rows; r += warps) {
    warp_copy(out + r * c, a + r * d.ca, d.ca, vector, lane);
    warp_copy(out + r * c + d.ca, b + r * d.cb, d.cb, vector, lane);
  }
}

__global__ void __launch_bounds__(kThreads)
    split_kernel(ConcatDesc d, const float* __restrict__ g, float* __restrict__ ga, float* __restrict__ gb,
                 bool vector) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = grid::grid_threads() / 32, c = d.ca + d.cb;
  for (int64_t r = grid::global_thread() / 32; r < d.rows; r += warps) {
    if (ga) warp_copy(ga + r * d.ca, g + r * c, d.ca, vector, lane);
    if (gb) warp_copy(gb + r * d.cb, g + r * c + d.ca, d.cb, vector, lane);
  }
}

// Input pixel p = (n*h + i)*w + j goes to output pixels (2(n*h+i) + {0,1}) * 2w + 2j + {0,1}.
__global__ void __launch_bounds__(kThreads)
    upsample_kernel(Upsample2xDesc d, const float* __restrict__ x, float* __restrict__ y, bool vector) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = grid::grid_threads() / 32, pixels = d.n * d.h * d.w, c = d.c;
  for (int64_t p = grid::global_thread() / 32; p < pixels; p += warps) {
    const int64_t ni = p / d.w, j = p - ni * d.w;
    const float* src = x + p * c;
    float* top = y + (2 * ni * 2 * d.w + 2 * j) * c;
    float* bottom = top + 2 * d.w * c;
    if (vector) {
      const int64_t c4 = c / 4;
      for (int64_t k = lane; k < c4; k += 32) {
        const float4 v = grid::load4(src, k);
        grid::store4(top, k, v);
        grid::store4(top, c4 + k, v);
        grid::store4(bottom, k, v);
        grid::store4(bottom, c4 + k, v);
      }
    } else {
      for (int64_t k = lane; k < c; k += 32) {
        const float v = src[k];
        top[k] = v, top[c + k] = v, bottom[k] = v, bottom[c + k] = v;
      }
    }
  }
}

// gx = (top-left + top-right) + (bottom-left + bottom-right): the CPU twin's order.
__global__ void __launch_bounds__(kThreads)
    upsample_backward_kernel(Upsample2xDesc d, const float* __restrict__ gy, float* __restrict__ gx, bool vector) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = grid::grid_threads() / 32, pixels = d.n * d.h * d.w, c = d.c;
  for (int64_t p = grid::global_thread() / 32; p < pixels; p += warps) {
    const int64_t ni = p / d.w, j = p - ni * d.w;
    const float* top = gy + (2 * ni * 2 * d.w + 2 * j) * c;
    const float* bottom = top + 2 * d.w * c;
    float* dst = gx + p * c;
    if (vector) {
      const int64_t c4 = c / 4;
      for (int64_t k = lane; k < c4; k += 32) {
        const float4 t0 = grid::load4(top, k), t1 = grid::load4(top, c4 + k);
        const float4 b0 = grid::load4(bottom, k), b1 = grid::load4(bottom, c4 + k);
        grid::store4(dst, k, make_float4((t0.x + t1.x) + (b0.x + b1.x), (t0.y + t1.y) + (b0.y + b1.y),
                                         (t0.z + t1.z) + (b0.z + b1.z), (t0.w + t1.w) + (b0.w + b1.w)));
      }
    } else {
      for (int64_t k = lane; k < c; k += 32) dst[k] = (top[k] + top[c + k]) + (bottom[k] + bottom[c + k]);
    }
  }
}

void check_concat(const ConcatDesc& d) {
  require(d.rows >= 0 && d.ca >= 0 && d.cb >= 0, "concat_last: negative size (rows " + std::to_string(d.rows) +
                                                    ", ca " + std::to_string(d.ca) + ", cb " + std::to_string(d.cb) + ")");
}

void check_upsample(const Upsample2xDesc& d) {
  require(d.n >= 0 && d.h >= 0 && d.w >= 0 && d.c >= 0, "upsample_nearest2x: negative size");
}

}  // namespace

void concat_last(const ConcatDesc& d, const float* a, const float* b, float* out, Stream stream) {
  check_concat(d);
  const bool vector = d.ca % 4 == 0 && d.cb % 4 == 0 && aligned16(a) && aligned16(b) && aligned16(out);
  DIFFUSE_LAUNCH(concat_kernel, blocks_for(32 * d.rows), kThreads, 0, stream, d, a, b, out, vector);
}

void split_last(const ConcatDesc& d, const float* g, float* ga, float* gb, Stream stream) {
  check_concat(d);
  if (!ga && !gb) return;
  const bool vector = d.ca % 4 == 0 && d.cb % 4 == 0 && aligned16(g) && (!ga || aligned16(ga)) && (!gb || aligned16(gb));
  DIFFUSE_LAUNCH(split_kernel, blocks_for(32 * d.rows), kThreads, 0, stream, d, g, ga, gb, vector);
}

void upsample_nearest2x(const Upsample2xDesc& d, const float* x, float* y, Stream stream) {
  check_upsample(d);
  const bool vector = d.c % 4 == 0 && aligned16(x) && aligned16(y);
  DIFFUSE_LAUNCH(upsample_kernel, blocks_for(32 * d.n * d.h * d.w), kThreads, 0, stream, d, x, y, vector);
}

void upsample_nearest2x_backward(const Upsample2xDesc& d, const float* gy, float* gx, Stream stream) {
  check_upsample(d);
  const bool vector = d.c % 4 == 0 && aligned16(gy) && aligned16(gx);
  DIFFUSE_LAUNCH(upsample_backward_kernel, blocks_for(32 * d.n * d.h * d.w), kThreads, 0, stream, d, gy, gx, vector);
}

}  // namespace diffuse::kernels::DIFFUSE_DEVICE_NS
