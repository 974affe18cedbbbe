// Activation storage for the custom kernels that take bf16 as well as f32 (element-wise, shape,
// dropout, group norm): one kernel template per family over the storage type S (float or
// __nv_bfloat16), with all arithmetic in f32. These helpers are the only place a kernel touches S:
// load to f32, store from f32 (bf16 rounds to nearest even, once per stored value), and the
// four-element vector access (16 bytes of f32, 8 of bf16) with its alignment test. The launchers
// keep their f32 signatures and add bf16 overloads on uint16_t bits, the storage ops::cast uses.
// Include after kernels/compat.cuh and kernels/cuda/grid_helpers.cuh.
#pragma once
#include <cstdint>

namespace diffuse::kernels::DIFFUSE_DEVICE_NS::storage {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load(const bf16* p, int64_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void store(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store(bf16* p, int64_t i, float v) { p[i] = __float2bfloat16_rn(v); }

// Elements 4q..4q+3 of p, as four floats; p aligned to four elements (aligned4).
__device__ __forceinline__ void load4(const float* p, int64_t q, float (&x)[4]) { grid::load4(p, q, x); }
__device__ __forceinline__ void load4(const bf16* p, int64_t q, float (&x)[4]) {
  const __nv_bfloat162* in = reinterpret_cast<const __nv_bfloat162*>(p + 4 * q);
  const float2 a = __bfloat1622float2(in[0]), b = __bfloat1622float2(in[1]);
  x[0] = a.x, x[1] = a.y, x[2] = b.x, x[3] = b.y;
}
__device__ __forceinline__ void store4(float* p, int64_t q, const float (&x)[4]) { grid::store4(p, q, x); }
__device__ __forceinline__ void store4(bf16* p, int64_t q, const float (&x)[4]) {
  __nv_bfloat162* out = reinterpret_cast<__nv_bfloat162*>(p + 4 * q);
  out[0] = __floats2bfloat162_rn(x[0], x[1]);
  out[1] = __floats2bfloat162_rn(x[2], x[3]);
}

// Whether p may be accessed four elements at a time (16-byte f32 or 8-byte bf16 alignment).
template <typename S>
__host__ __device__ inline bool aligned4(const S* p) {
  return reinterpret_cast<uintptr_t>(p) % (4 * sizeof(S)) == 0;
}

// The device storage type behind a launcher's pointer: float for float, bf16 for uint16_t bits.
inline const float* dev(const float* p) { return p; }
inline float* dev(float* p) { return p; }
inline const bf16* dev(const uint16_t* p) { return reinterpret_cast<const bf16*>(p); }
inline bf16* dev(uint16_t* p) { return reinterpret_cast<bf16*>(p); }

}  // namespace diffuse::kernels::DIFFUSE_DEVICE_NS::storage
