// bfloat16 storage conversions on the host: round-to-nearest-even, NaN kept quiet. Device code
// uses CUDA's __nv_bfloat16 intrinsics (or the emulator's versions of them).
#pragma once
#include <cstdint>
#include <cstring>

namespace diffuse::kernels {

inline float bf16_to_float(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t float_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // NaN
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

}  // namespace diffuse::kernels
