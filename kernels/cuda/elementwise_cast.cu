// CUDA storage casts between f32 and bf16 (see kernels/elementwise.h), also run by the SIMT
// emulator. They are what bf16 autocast (nn/layers.h) puts at the edges of the bf16 layers:
// memory-bound, 256-thread blocks, grid-stride, four elements per step when both pointers allow
// (16 bytes of f32 against 8 of bf16). f32 -> bf16 rounds to nearest even (NaN stays NaN);
// bf16 -> f32 is exact.
#include "kernels/compat.cuh"
#include "kernels/cuda/grid_helpers.cuh"
#include "kernels/elementwise.h"

#include <cstdint>

namespace diffuse::kernels::DIFFUSE_DEVICE_NS {
namespace {

using grid::blocks_for;
using grid::kThreads;

bool aligned(const void* p, uintptr_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

__global__ void __launch_bounds__(kThreads)
    f32_to_bf16_kernel(int64_t n, const float* __restrict__ x, __nv_bfloat16* __restrict__ y, bool vector) {
  grid::for_each_element(
      n, vector,
      [&](int64_t q) {
        const float4 v = grid::load4(x, q);
        __nv_bfloat162* out = reinterpret_cast<__nv_bfloat162*>(y + 4 * q);
        out[0] = __floats2bfloat162_rn(v.x, v.y);
        out[1] = __floats2bfloat162_rn(v.z, v.w);
      },
      [&](int64_t i) { y[i] = __float2bfloat16_rn(x[i]); });
}

__global__ void __launch_bounds__(kThreads)
    bf16_to_f32_kernel(int64_t n, const __nv_bfloat16* __restrict__ x, float* __restrict__ y, bool vector) {
  grid::for_each_element(
      n, vector,
      [&](int64_t q) {
        const __nv_bfloat162* in = reinterpret_cast<const __nv_bfloat162*>(x + 4 * q);
        const float2 a = __bfloat1622float2(in[0]), b = __bfloat1622float2(in[1]);
        grid::store4(y, q, make_float4(a.x, a.y, b.x, b.y));
      },
      [&](int64_t i) { y[i] = __bfloat162float(x[i]); });
}

}  // namespace

void cast_f32_to_bf16(int64_t n, const float* x, uint16_t* y, Stream stream) {
  if (n == 0) return;
  require(x && y, "cast f32 -> bf16: null buffer");
  const bool vector = aligned(x, 16) && aligned(y, 8);
  DIFFUSE_LAUNCH(f32_to_bf16_kernel, blocks_for(vector ? (n + 3) / 4 : n), kThreads, 0, stream, n, x,
                 reinterpret_cast<__nv_bfloat16*>(y), vector);
}

void cast_bf16_to_f32(int64_t n, const uint16_t* x, float* y, Stream stream) {
  if (n == 0) return;
  require(x && y, "cast bf16 -> f32: null buffer");
  const bool vector = aligned(x, 8) && aligned(y, 16);
  DIFFUSE_LAUNCH(bf16_to_f32_kernel, blocks_for(vector ? (n + 3) / 4 : n), kThreads, 0, stream, n,
                 reinterpret_cast<const __nv_bfloat16*>(x), y, vector);
}

}  // namespace diffuse::kernels::DIFFUSE_DEVICE_NS
