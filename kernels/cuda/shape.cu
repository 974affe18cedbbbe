// CUDA shape kernels (see kernels/shape.h), also run by the SIMT emulator: channel concat and its
// split, nearest 2x upsampling of NHWC maps and its backward. Pure data movement, so the layout is
// one warp per row (concat) or per input pixel (upsample): the lanes stride over the channels,
// float4 when the channel counts are multiples of 4 and the buffers 16-byte aligned, so each warp
// moves 512 contiguous bytes per step and needs one division per pixel, none per element.
// Traffic: concat/split read and write each element once (8 B/element); upsample reads an input
// pixel once and writes it four times (20 B per input element), its backward the reverse. Every
// kernel is a template over the storage type (kernels/cuda/storage.cuh): bf16 moves exactly (a
// widening to f32 and back), and the upsample backward adds its four grads in f32, rounding once.
#include "kernels/compat.cuh"
#include "kernels/cuda/grid_helpers.cuh"
#include "kernels/cuda/storage.cuh"
#include "kernels/shape.h"

#include <cstdint>

namespace diffuse::kernels::DIFFUSE_DEVICE_NS {
namespace {

using grid::blocks_for;
using grid::kThreads;
using storage::aligned4;
using storage::load;
using storage::load4;
using storage::store;
using storage::store4;

// dst[0, len) = src[0, len) by the 32 lanes of a warp (len in elements; four at a time when `vector`).
template <typename S>
__device__ __forceinline__ void warp_copy(S* __restrict__ dst, const S* __restrict__ src, int64_t len, bool vector,
                                          int lane) {
  if (vector) {
    for (int64_t k = lane; k < len / 4; k += 32) {
      float v[4];
      load4(src, k, v);
      store4(dst, k, v);
    }
  } else {
    for (int64_t k = lane; k < len; k += 32) dst[k] = src[k];
  }
}

template <typename S>
__global__ void __launch_bounds__(kThreads)
    concat_kernel(ConcatDesc d, const S* __restrict__ a, const S* __restrict__ b, S* __restrict__ out, bool vector) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = grid::grid_threads() / 32, c = d.ca + d.cb;
  for (int64_t r = grid::global_thread() / 32; r < d.rows; r += warps) {
    warp_copy(out + r * c, a + r * d.ca, d.ca, vector, lane);
    warp_copy(out + r * c + d.ca, b + r * d.cb, d.cb, vector, lane);
  }
}

template <typename S>
__global__ void __launch_bounds__(kThreads)
    split_kernel(ConcatDesc d, const S* __restrict__ g, S* __restrict__ ga, S* __restrict__ gb, bool vector) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = grid::grid_threads() / 32, c = d.ca + d.cb;
  for (int64_t r = grid::global_thread() / 32; r < d.rows; r += warps) {
    if (ga) warp_copy(ga + r * d.ca, g + r * c, d.ca, vector, lane);
    if (gb) warp_copy(gb + r * d.cb, g + r * c + d.ca, d.cb, vector, lane);
  }
}

// Input pixel p = (n*h + i)*w + j goes to output pixels (2(n*h+i) + {0,1}) * 2w + 2j + {0,1}.
template <typename S>
__global__ void __launch_bounds__(kThreads)
    upsample_kernel(Upsample2xDesc d, const S* __restrict__ x, S* __restrict__ y, bool vector) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = grid::grid_threads() / 32, pixels = d.n * d.h * d.w, c = d.c;
  for (int64_t p = grid::global_thread() / 32; p < pixels; p += warps) {
    const int64_t ni = p / d.w, j = p - ni * d.w;
    const S* src = x + p * c;
    S* top = y + (2 * ni * 2 * d.w + 2 * j) * c;
    S* bottom = top + 2 * d.w * c;
    if (vector) {
      const int64_t c4 = c / 4;
      for (int64_t k = lane; k < c4; k += 32) {
        float v[4];
        load4(src, k, v);
        store4(top, k, v);
        store4(top, c4 + k, v);
        store4(bottom, k, v);
        store4(bottom, c4 + k, v);
      }
    } else {
      for (int64_t k = lane; k < c; k += 32) {
        const S v = src[k];
        top[k] = v, top[c + k] = v, bottom[k] = v, bottom[c + k] = v;
      }
    }
  }
}

// gx = (top-left + top-right) + (bottom-left + bottom-right): the CPU twin's order.
template <typename S>
__global__ void __launch_bounds__(kThreads)
    upsample_backward_kernel(Upsample2xDesc d, const S* __restrict__ gy, S* __restrict__ gx, bool vector) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = grid::grid_threads() / 32, pixels = d.n * d.h * d.w, c = d.c;
  for (int64_t p = grid::global_thread() / 32; p < pixels; p += warps) {
    const int64_t ni = p / d.w, j = p - ni * d.w;
    const S* top = gy + (2 * ni * 2 * d.w + 2 * j) * c;
    const S* bottom = top + 2 * d.w * c;
    S* dst = gx + p * c;
    if (vector) {
      const int64_t c4 = c / 4;
      for (int64_t k = lane; k < c4; k += 32) {
        float t0[4], t1[4], b0[4], b1[4], sum[4];
        load4(top, k, t0);
        load4(top, c4 + k, t1);
        load4(bottom, k, b0);
        load4(bottom, c4 + k, b1);
        DIFFUSE_UNROLL
        for (int e = 0; e < 4; ++e) sum[e] = (t0[e] + t1[e]) + (b0[e] + b1[e]);
        store4(dst, k, sum);
      }
    } else {
      for (int64_t k = lane; k < c; k += 32)
        store(dst, k, (load(top, k) + load(top, c + k)) + (load(bottom, k) + load(bottom, c + k)));
    }
  }
}

void check_concat(const ConcatDesc& d) {
  require(d.rows >= 0 && d.ca >= 0 && d.cb >= 0, [&] {
    return "concat_last: negative size (rows " + std::to_string(d.rows) + ", ca " + std::to_string(d.ca) + ", cb " +
           std::to_string(d.cb) + ")";
  });
}

void check_upsample(const Upsample2xDesc& d) {
  require(d.n >= 0 && d.h >= 0 && d.w >= 0 && d.c >= 0, "upsample_nearest2x: negative size");
}

template <typename S>
void concat_impl(const ConcatDesc& d, const S* a, const S* b, S* out, Stream stream) {
  check_concat(d);
  const bool vector = d.ca % 4 == 0 && d.cb % 4 == 0 && aligned4(a) && aligned4(b) && aligned4(out);
  DIFFUSE_LAUNCH(concat_kernel<S>, blocks_for(32 * d.rows), kThreads, 0, stream, d, a, b, out, vector);
}

template <typename S>
void split_impl(const ConcatDesc& d, const S* g, S* ga, S* gb, Stream stream) {
  check_concat(d);
  if (!ga && !gb) return;
  const bool vector = d.ca % 4 == 0 && d.cb % 4 == 0 && aligned4(g) && (!ga || aligned4(ga)) && (!gb || aligned4(gb));
  DIFFUSE_LAUNCH(split_kernel<S>, blocks_for(32 * d.rows), kThreads, 0, stream, d, g, ga, gb, vector);
}

template <typename S>
void upsample_impl(const Upsample2xDesc& d, const S* x, S* y, Stream stream) {
  check_upsample(d);
  const bool vector = d.c % 4 == 0 && aligned4(x) && aligned4(y);
  DIFFUSE_LAUNCH(upsample_kernel<S>, blocks_for(32 * d.n * d.h * d.w), kThreads, 0, stream, d, x, y, vector);
}

template <typename S>
void upsample_backward_impl(const Upsample2xDesc& d, const S* gy, S* gx, Stream stream) {
  check_upsample(d);
  const bool vector = d.c % 4 == 0 && aligned4(gy) && aligned4(gx);
  DIFFUSE_LAUNCH(upsample_backward_kernel<S>, blocks_for(32 * d.n * d.h * d.w), kThreads, 0, stream, d, gy, gx,
                 vector);
}

}  // namespace

using storage::dev;

void concat_last(const ConcatDesc& d, const float* a, const float* b, float* out, Stream stream) {
  concat_impl(d, a, b, out, stream);
}
void concat_last(const ConcatDesc& d, const uint16_t* a, const uint16_t* b, uint16_t* out, Stream stream) {
  concat_impl(d, dev(a), dev(b), dev(out), stream);
}

void split_last(const ConcatDesc& d, const float* g, float* ga, float* gb, Stream stream) {
  split_impl(d, g, ga, gb, stream);
}
void split_last(const ConcatDesc& d, const uint16_t* g, uint16_t* ga, uint16_t* gb, Stream stream) {
  split_impl(d, dev(g), dev(ga), dev(gb), stream);
}

void upsample_nearest2x(const Upsample2xDesc& d, const float* x, float* y, Stream stream) {
  upsample_impl(d, x, y, stream);
}
void upsample_nearest2x(const Upsample2xDesc& d, const uint16_t* x, uint16_t* y, Stream stream) {
  upsample_impl(d, dev(x), dev(y), stream);
}

void upsample_nearest2x_backward(const Upsample2xDesc& d, const float* gy, float* gx, Stream stream) {
  upsample_backward_impl(d, gy, gx, stream);
}
void upsample_nearest2x_backward(const Upsample2xDesc& d, const uint16_t* gy, uint16_t* gx, Stream stream) {
  upsample_backward_impl(d, dev(gy), dev(gx), stream);
}

}  // namespace diffuse::kernels::DIFFUSE_DEVICE_NS
