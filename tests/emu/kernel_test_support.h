// Buffers and comparisons for the kernel families' emulator tests, defined once here: host buffers placed a chosen number of elements past a 16-byte
// boundary (shift 0 takes the float4 paths, shift 1 the scalar ones), NaN-poisoned outputs,
// Philox test data, and error measures in which a NaN always fails.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/bf16.h"
#include "kernels/philox.h"

namespace diffuse::test {

// At least 8 spare elements follow the data (shift 0 or 1), still holding `fill`: a write past the
// end shows up there.
template <typename T>
struct Buf {
  std::vector<T> storage;
  T* p;
  int64_t n;
  Buf(int64_t count, int shift = 0, T fill = T(NAN)) : storage(static_cast<size_t>(count) + 12, fill), n(count) {
    auto addr = reinterpret_cast<uintptr_t>(storage.data());
    p = reinterpret_cast<T*>((addr + 15) / 16 * 16) + shift;
  }
  Buf(const Buf&) = delete;  // p points into storage: a copy would alias the original
  Buf(Buf&&) = default;      // a moved vector keeps its heap block, so p stays valid
  T& operator[](int64_t i) { return p[i]; }
  // Every slot outside [p, p + n) still holds the poison (no write past either end).
  bool guard_intact() const {
    for (const T& v : storage)
      if ((&v < p || &v >= p + n) && !std::isnan(static_cast<double>(v))) return false;
    return true;
  }
};

// A float buffer of standard normals (Philox, so every run sees the same data).
inline Buf<float> randn_buf(int64_t n, uint64_t seed, int shift = 0) {
  Buf<float> b(n, shift);
  for (int64_t i = 0; i < n; ++i) b.p[i] = philox::normal_at(seed, philox::kInit, 0, static_cast<uint64_t>(i));
  return b;
}

// max |got - want| / max(1, |want|); any NaN in got counts as infinitely wrong.
template <typename A, typename B>
double max_rel(const A* got, const B* want, int64_t n) {
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    double e = std::fabs(double(got[i]) - double(want[i])) / std::max(1.0, std::fabs(double(want[i])));
    if (!(e <= worst)) worst = std::isnan(e) ? INFINITY : e;
  }
  return worst;
}
template <typename A>
double max_rel(const A* got, const std::vector<double>& want) {
  return max_rel(got, want.data(), static_cast<int64_t>(want.size()));
}

// bf16 storage (uint16_t bits, what the bf16 launchers take) placed like Buf: shift 0 takes the
// four-wide paths (8-byte aligned), shift 1 the scalar ones; every other slot holds a bf16 NaN.
struct Bf16Buf {
  static constexpr uint16_t kPoison = 0x7fc0;
  std::vector<uint16_t> storage;
  uint16_t* p;
  int64_t n;
  explicit Bf16Buf(int64_t count, int shift = 0) : storage(static_cast<size_t>(count) + 24, kPoison), n(count) {
    auto addr = reinterpret_cast<uintptr_t>(storage.data());
    p = reinterpret_cast<uint16_t*>((addr + 15) / 16 * 16) + shift;
  }
  // f32 values rounded to bf16 (kernels/bf16.h: to nearest even).
  Bf16Buf(const float* values, int64_t count, int shift) : Bf16Buf(count, shift) {
    for (int64_t i = 0; i < count; ++i) p[i] = kernels::float_to_bf16(values[i]);
  }
  Bf16Buf(const Bf16Buf&) = delete;
  Bf16Buf(Bf16Buf&&) = default;
  // The values widened to f32 (exact): what the CPU twin is given.
  Buf<float> widened() const {
    Buf<float> out(n);
    for (int64_t i = 0; i < n; ++i) out.p[i] = kernels::bf16_to_float(p[i]);
    return out;
  }
  bool guard_intact() const {
    for (const uint16_t& v : storage)
      if ((&v < p || &v >= p + n) && v != kPoison) return false;
    return true;
  }
};

// Whether got holds each of want's f32 values rounded to bf16, bit for bit: what a bf16 kernel
// that computes the twin's f32 expression and rounds once must give.
inline bool same_as_rounded(const uint16_t* got, const float* want, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (got[i] != kernels::float_to_bf16(want[i])) return false;
  return true;
}

// Whether got and want hold the same floats bit for bit (NaN never equals).
template <typename T>
bool same_values(const T* got, const T* want, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!(got[i] == want[i])) return false;
  return true;
}

}  // namespace diffuse::test
