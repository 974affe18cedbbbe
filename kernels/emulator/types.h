// The CUDA built-in types for g++ under the SIMT emulator: uint3/dim3, the vector types kernels
// use for wide loads (float2/float4/int4/...), and __nv_bfloat16 with its conversion intrinsics.
// Only kernels/compat.cuh includes this (never together with the real CUDA headers). Vector types
// are may_alias because kernels reinterpret float arrays as float4 exactly as CUDA code does.
#pragma once
#include <cstdint>

#include "kernels/bf16.h"

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};

#define DIFFUSE_EMU_VECTOR2(name, T, align)                                                   \
  struct __attribute__((may_alias, aligned(align))) name {                                    \
    T x, y;                                                                                   \
  };                                                                                          \
  inline name make_##name(T x, T y) { return name{x, y}; }
#define DIFFUSE_EMU_VECTOR4(name, T, align)                                                   \
  struct __attribute__((may_alias, aligned(align))) name {                                    \
    T x, y, z, w;                                                                             \
  };                                                                                          \
  inline name make_##name(T x, T y, T z, T w) { return name{x, y, z, w}; }

DIFFUSE_EMU_VECTOR2(float2, float, 8)
DIFFUSE_EMU_VECTOR4(float4, float, 16)
DIFFUSE_EMU_VECTOR2(double2, double, 16)
DIFFUSE_EMU_VECTOR2(int2, int, 8)
DIFFUSE_EMU_VECTOR4(int4, int, 16)
DIFFUSE_EMU_VECTOR2(uint2, unsigned int, 8)
DIFFUSE_EMU_VECTOR4(uint4, unsigned int, 16)
DIFFUSE_EMU_VECTOR4(uchar4, unsigned char, 4)
#undef DIFFUSE_EMU_VECTOR2
#undef DIFFUSE_EMU_VECTOR4

inline uint3 make_uint3(unsigned int x, unsigned int y, unsigned int z) { return uint3{x, y, z}; }

// bfloat16 storage; arithmetic goes through float (as kernels should do anyway: f32 accumulation).
struct __attribute__((may_alias, aligned(2))) __nv_bfloat16 {
  unsigned short __x;
  __nv_bfloat16() = default;
  __nv_bfloat16(float f) : __x(diffuse::kernels::float_to_bf16(f)) {}
  operator float() const { return diffuse::kernels::bf16_to_float(__x); }
};

struct __attribute__((may_alias, aligned(4))) __nv_bfloat162 {
  __nv_bfloat16 x, y;
};

inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 h) { return static_cast<float>(h); }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) {
  __nv_bfloat16 h;
  h.__x = u;
  return h;
}
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return {__nv_bfloat16(a), __nv_bfloat16(b)}; }
inline __nv_bfloat162 __float22bfloat162_rn(float2 f) { return {__nv_bfloat16(f.x), __nv_bfloat16(f.y)}; }
inline float2 __bfloat1622float2(__nv_bfloat162 h) { return {static_cast<float>(h.x), static_cast<float>(h.y)}; }
inline float __low2float(__nv_bfloat162 h) { return static_cast<float>(h.x); }
inline float __high2float(__nv_bfloat162 h) { return static_cast<float>(h.y); }
