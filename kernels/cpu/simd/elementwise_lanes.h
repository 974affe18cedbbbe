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

// sum[j] += double(part lane j) for the first `lanes` lanes of a vector of f32 partial sums.
// Vector converts and adds where the path has them: each lane's convert and add are the same IEEE
// operations as the scalar loop's, so every path gives the same bits, where the scalar loop cost
// more than the sums it flushed (GroupNorm's statistics, the bias gradient's column sums).
inline void add_to_doubles(Vec part, double* sum, int lanes) {
#if DIFFUSE_ISA == 2
  if (lanes == kLanes) {
    const __m256 lo = _mm512_castps512_ps256(part.v);
    const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(part.v), 1));
    _mm512_storeu_pd(sum, _mm512_add_pd(_mm512_loadu_pd(sum), _mm512_cvtps_pd(lo)));
    _mm512_storeu_pd(sum + 8, _mm512_add_pd(_mm512_loadu_pd(sum + 8), _mm512_cvtps_pd(hi)));
    return;
  }
#elif DIFFUSE_ISA == 1
  if (lanes == kLanes) {
    _mm256_storeu_pd(sum, _mm256_add_pd(_mm256_loadu_pd(sum), _mm256_cvtps_pd(_mm256_castps256_ps128(part.v))));
    _mm256_storeu_pd(sum + 4, _mm256_add_pd(_mm256_loadu_pd(sum + 4), _mm256_cvtps_pd(_mm256_extractf128_ps(part.v, 1))));
    return;
  }
#endif
  float spill[kLanes];
  store(spill, part);
  for (int l = 0; l < lanes; ++l) sum[l] += double(spill[l]);
}

}  // namespace diffuse::kernels::cpu::simd::DIFFUSE_ISA_NS
