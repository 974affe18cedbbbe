// Loop helpers shared by this folder's element-wise, GroupNorm, optimizer and shape kernels: walk
// a row of w floats a vector at a time with a masked tail, and move f32 lane sums into f64 ones.
// Include after kernels/cpu/simd/vec.h (inside a path's translation unit, like vec.h itself).
#pragma once
#if !defined(DIFFUSE_ISA_NS)
#error "include kernels/cpu/simd/isa_begin.h first"
#endif

namespace diffuse::kernels::cpu::simd::DIFFUSE_ISA_NS {

// Vector load/store of the first n ≤ kLanes floats; n == kLanes (a constant in over_lanes' main
// loop once inlined) takes the plain unmasked instruction.
inline Vec load_part(const float* p, int n) { return n == kLanes ? load(p) : load_n(p, n); }
inline void store_part(float* p, Vec v, int n) {
  if (n == kLanes)
    store(p, v);
  else
    store_n(p, v, n);
}

// f(j, n) for j = 0, kLanes, 2·kLanes, … covering [0, w): n = kLanes, then the tail n < kLanes.
template <typename F>
inline void over_lanes(int64_t w, F&& f) {
  int64_t j = 0;
  for (; j + kLanes <= w; j += kLanes) f(j, kLanes);
  if (j < w) f(j, int(w - j));
}

// a·b rounded to f32 by itself, never fused with the add or subtract that follows: GCC contracts
// a·b − c into one FMA in C++ whatever the -std, which would keep the product's rounding error in
// a difference that must cancel exactly. (The empty asm makes the product opaque to the compiler.)
inline Vec product_rounded(Vec a, Vec b) {
  Vec p = a * b;
#if defined(__x86_64__)
  __asm__("" : "+x"(p.v));
#else
  volatile float opaque = p.v;
  p.v = opaque;
#endif
  return p;
}

inline void fill_floats(float* p, int64_t w, float value) {
  over_lanes(w, [&](int64_t j, int n) { store_part(p + j, set1(value), n); });
}

inline void fill_doubles(double* p, int64_t w, double value) {
  for (int64_t j = 0; j < w; ++j) p[j] = value;
}

// sum[j] += acc[j] in f64, then acc[j] = 0: f32 lane sums kept short enough to stay accurate.
inline void flush_to_doubles(float* acc, double* sum, int64_t w) {
  for (int64_t j = 0; j < w; ++j) {
    sum[j] += double(acc[j]);
    acc[j] = 0.0f;
  }
}

}  // namespace diffuse::kernels::cpu::simd::DIFFUSE_ISA_NS
