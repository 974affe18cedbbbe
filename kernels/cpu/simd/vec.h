// The vector type of the path being compiled (kernels/cpu/simd/isa_begin.h sets DIFFUSE_ISA):
// Vec holds kLanes floats — 16 (AVX-512), 8 (AVX2) or 4 (SSE2, x86-64's baseline); 1 elsewhere —
// with the few operations the kernels use, so a kernel is written once over Vec and compiled per
// path. load_n/store_n touch only the first n < kLanes elements (loop tails). fma(a, b, c) = a·b + c
// is one rounding on the AVX paths and two on baseline SSE2, which has no FMA.
// exp/sigmoid/silu are vector approximations: relative error within 2 ulp of std::exp over
// [-87.33, 88.72]; below −87.33 (ln of the smallest normal float) exp is 0, above ln FLT_MAX it is inf,
// and a NaN stays NaN. Include this only after isa_begin.h.
#pragma once
#if !defined(DIFFUSE_ISA_NS)
#error "include kernels/cpu/simd/isa_begin.h first"
#endif

namespace diffuse::kernels::cpu::simd::DIFFUSE_ISA_NS {

#if DIFFUSE_ISA == 2
constexpr int kLanes = 16;
struct Vec { __m512 v; };
struct IVec { __m512i v; };
inline Vec load(const float* p) { return {_mm512_loadu_ps(p)}; }
inline void store(float* p, Vec a) { _mm512_storeu_ps(p, a.v); }
inline __mmask16 first(int n) { return __mmask16((1u << n) - 1u); }
inline Vec load_n(const float* p, int n) { return {_mm512_maskz_loadu_ps(first(n), p)}; }
inline void store_n(float* p, Vec a, int n) { _mm512_mask_storeu_ps(p, first(n), a.v); }
inline Vec set1(float x) { return {_mm512_set1_ps(x)}; }
inline Vec operator+(Vec a, Vec b) { return {_mm512_add_ps(a.v, b.v)}; }
inline Vec operator-(Vec a, Vec b) { return {_mm512_sub_ps(a.v, b.v)}; }
inline Vec operator*(Vec a, Vec b) { return {_mm512_mul_ps(a.v, b.v)}; }
inline Vec operator/(Vec a, Vec b) { return {_mm512_div_ps(a.v, b.v)}; }
inline Vec fma(Vec a, Vec b, Vec c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
inline Vec max(Vec a, Vec b) { return {_mm512_max_ps(a.v, b.v)}; }
inline Vec min(Vec a, Vec b) { return {_mm512_min_ps(a.v, b.v)}; }
inline float hsum(Vec a) { return _mm512_reduce_add_ps(a.v); }
inline float hmax(Vec a) { return _mm512_reduce_max_ps(a.v); }
// a < b ? x : y, and isnan(a) ? x : y, lane by lane
inline Vec where_less(Vec a, Vec b, Vec x, Vec y) { return {_mm512_mask_blend_ps(_mm512_cmp_ps_mask(a.v, b.v, _CMP_LT_OQ), y.v, x.v)}; }
inline Vec where_nan(Vec a, Vec x, Vec y) { return {_mm512_mask_blend_ps(_mm512_cmp_ps_mask(a.v, a.v, _CMP_UNORD_Q), y.v, x.v)}; }
inline Vec round_nearest(Vec a) { return {_mm512_roundscale_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
// 2^n for integer-valued n in [-126, 127], built in the exponent field.
inline Vec pow2_int(Vec n) {
  __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n.v), _mm512_set1_epi32(127));
  return {_mm512_castsi512_ps(_mm512_slli_epi32(e, 23))};
}
#elif DIFFUSE_ISA == 1
constexpr int kLanes = 8;
struct Vec { __m256 v; };
inline Vec load(const float* p) { return {_mm256_loadu_ps(p)}; }
inline void store(float* p, Vec a) { _mm256_storeu_ps(p, a.v); }
inline __m256i first(int n) { return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); }
inline Vec load_n(const float* p, int n) { return {_mm256_maskload_ps(p, first(n))}; }
inline void store_n(float* p, Vec a, int n) { _mm256_maskstore_ps(p, first(n), a.v); }
inline Vec set1(float x) { return {_mm256_set1_ps(x)}; }
inline Vec operator+(Vec a, Vec b) { return {_mm256_add_ps(a.v, b.v)}; }
inline Vec operator-(Vec a, Vec b) { return {_mm256_sub_ps(a.v, b.v)}; }
inline Vec operator*(Vec a, Vec b) { return {_mm256_mul_ps(a.v, b.v)}; }
inline Vec operator/(Vec a, Vec b) { return {_mm256_div_ps(a.v, b.v)}; }
inline Vec fma(Vec a, Vec b, Vec c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
inline Vec max(Vec a, Vec b) { return {_mm256_max_ps(a.v, b.v)}; }
inline Vec min(Vec a, Vec b) { return {_mm256_min_ps(a.v, b.v)}; }
inline float hsum(Vec a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
}
inline float hmax(Vec a) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_max_ss(s, _mm_shuffle_ps(s, s, 1)));
}
inline Vec where_less(Vec a, Vec b, Vec x, Vec y) { return {_mm256_blendv_ps(y.v, x.v, _mm256_cmp_ps(a.v, b.v, _CMP_LT_OQ))}; }
inline Vec where_nan(Vec a, Vec x, Vec y) { return {_mm256_blendv_ps(y.v, x.v, _mm256_cmp_ps(a.v, a.v, _CMP_UNORD_Q))}; }
inline Vec round_nearest(Vec a) { return {_mm256_round_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
inline Vec pow2_int(Vec n) {
  __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n.v), _mm256_set1_epi32(127));
  return {_mm256_castsi256_ps(_mm256_slli_epi32(e, 23))};
}
#elif defined(__x86_64__)
// Baseline x86-64: SSE2 only (no FMA, no blendv, no round instruction).
constexpr int kLanes = 4;
struct Vec { __m128 v; };
inline Vec load(const float* p) { return {_mm_loadu_ps(p)}; }
inline void store(float* p, Vec a) { _mm_storeu_ps(p, a.v); }
inline Vec load_n(const float* p, int n) {
  alignas(16) float t[4] = {0, 0, 0, 0};
  for (int i = 0; i < n; ++i) t[i] = p[i];
  return {_mm_load_ps(t)};
}
inline void store_n(float* p, Vec a, int n) {
  alignas(16) float t[4];
  _mm_store_ps(t, a.v);
  for (int i = 0; i < n; ++i) p[i] = t[i];
}
inline Vec set1(float x) { return {_mm_set1_ps(x)}; }
inline Vec operator+(Vec a, Vec b) { return {_mm_add_ps(a.v, b.v)}; }
inline Vec operator-(Vec a, Vec b) { return {_mm_sub_ps(a.v, b.v)}; }
inline Vec operator*(Vec a, Vec b) { return {_mm_mul_ps(a.v, b.v)}; }
inline Vec operator/(Vec a, Vec b) { return {_mm_div_ps(a.v, b.v)}; }
inline Vec fma(Vec a, Vec b, Vec c) { return {_mm_add_ps(_mm_mul_ps(a.v, b.v), c.v)}; }
inline Vec max(Vec a, Vec b) { return {_mm_max_ps(a.v, b.v)}; }
inline Vec min(Vec a, Vec b) { return {_mm_min_ps(a.v, b.v)}; }
inline float hsum(Vec a) {
  __m128 s = _mm_add_ps(a.v, _mm_movehl_ps(a.v, a.v));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
}
inline float hmax(Vec a) {
  __m128 s = _mm_max_ps(a.v, _mm_movehl_ps(a.v, a.v));
  return _mm_cvtss_f32(_mm_max_ss(s, _mm_shuffle_ps(s, s, 1)));
}
inline Vec select(__m128 mask, Vec x, Vec y) { return {_mm_or_ps(_mm_and_ps(mask, x.v), _mm_andnot_ps(mask, y.v))}; }
inline Vec where_less(Vec a, Vec b, Vec x, Vec y) { return select(_mm_cmplt_ps(a.v, b.v), x, y); }
inline Vec where_nan(Vec a, Vec x, Vec y) { return select(_mm_cmpunord_ps(a.v, a.v), x, y); }
// cvtps rounds to nearest even (the default MXCSR mode); exp's argument is clamped, so it fits.
inline Vec round_nearest(Vec a) { return {_mm_cvtepi32_ps(_mm_cvtps_epi32(a.v))}; }
inline Vec pow2_int(Vec n) {
  __m128i e = _mm_add_epi32(_mm_cvtps_epi32(n.v), _mm_set1_epi32(127));
  return {_mm_castsi128_ps(_mm_slli_epi32(e, 23))};
}
#else
// Not x86-64: one float per Vec, the loops stay scalar (and the compiler may vectorize them).
constexpr int kLanes = 1;
struct Vec { float v; };
inline Vec load(const float* p) { return {*p}; }
inline void store(float* p, Vec a) { *p = a.v; }
inline Vec load_n(const float* p, int n) { return {n > 0 ? *p : 0.0f}; }
inline void store_n(float* p, Vec a, int n) { if (n > 0) *p = a.v; }
inline Vec set1(float x) { return {x}; }
inline Vec operator+(Vec a, Vec b) { return {a.v + b.v}; }
inline Vec operator-(Vec a, Vec b) { return {a.v - b.v}; }
inline Vec operator*(Vec a, Vec b) { return {a.v * b.v}; }
inline Vec operator/(Vec a, Vec b) { return {a.v / b.v}; }
inline Vec fma(Vec a, Vec b, Vec c) { return {a.v * b.v + c.v}; }
inline Vec max(Vec a, Vec b) { return {a.v > b.v ? a.v : b.v}; }
inline Vec min(Vec a, Vec b) { return {a.v < b.v ? a.v : b.v}; }
inline float hsum(Vec a) { return a.v; }
inline float hmax(Vec a) { return a.v; }
inline Vec where_less(Vec a, Vec b, Vec x, Vec y) { return a.v < b.v ? x : y; }
inline Vec where_nan(Vec a, Vec x, Vec y) { return a.v != a.v ? x : y; }
inline Vec round_nearest(Vec a) { return {__builtin_nearbyintf(a.v)}; }
inline Vec pow2_int(Vec n) { return {__builtin_ldexpf(1.0f, int(n.v))}; }
#endif

inline Vec zero() { return set1(0.0f); }

// e^x: x = n·ln2 + r with |r| ≤ ln2/2, e^r by a degree-6 polynomial (Cephes' expf coefficients),
// then 2^n in two factors so that n = 128 (x just below ln FLT_MAX) still scales correctly.
// exp_reduction returns e^r for an x already clamped to [lo, hi] and sets n.
inline Vec exp_reduction(Vec xc, Vec& n) {
  n = round_nearest(xc * set1(1.44269504088896341f));
  Vec r = fma(n, set1(-0.693359375f), xc);  // ln2 in two parts: the first exact in n·hi
  r = fma(n, set1(2.12194440e-4f), r);
  Vec p = set1(1.9875691500e-4f);
  p = fma(p, r, set1(1.3981999507e-3f));
  p = fma(p, r, set1(8.3334519073e-3f));
  p = fma(p, r, set1(4.1665795894e-2f));
  p = fma(p, r, set1(1.6666665459e-1f));
  p = fma(p, r, set1(5.0000001201e-1f));
  return fma(p, r * r, r + set1(1.0f));
}
inline Vec exp_low_clamp() { return set1(-87.33654475f); }

inline Vec exp(Vec x) {
  const Vec lo = exp_low_clamp(), hi = set1(88.8f);
  Vec n;
#if DIFFUSE_ISA == 2
  // AVX-512, the same bits in 16 instructions where the form below takes 28: p·2^n by one
  // vscalefps (n = 128 overflows to inf as the two factors do), lanes below the clamp zeroed by
  // its mask, and a NaN carried through the clamp by the operand order (vmaxps and vminps return
  // their second operand when either is NaN) and through every step after it, so no NaN select.
  const Vec p = exp_reduction({_mm512_min_ps(hi.v, _mm512_max_ps(lo.v, x.v))}, n);
  return {_mm512_maskz_scalef_ps(_mm512_cmp_ps_mask(x.v, lo.v, _CMP_NLT_UQ), p.v, n.v)};
#else
  const Vec p = exp_reduction(min(max(x, lo), hi), n);
  Vec n1 = min(n, set1(127.0f));
  Vec y = p * pow2_int(n1) * pow2_int(n - n1);
  y = where_less(x, lo, zero(), y);
  return where_nan(x, x, y);
#endif
}

// exp for x ≤ 0 or NaN (a softmax's scores less their row maximum), bit for bit: there n ≤ 0, so
// exp's second scale factor is 1 and its upper clamp never acts; both are left out.
#if DIFFUSE_ISA == 2
// AVX-512 (the softmax's exp is most of attention's non-GEMM time): p·2^n by one vscalefps, the
// same correctly rounded product as p·pow2_int(n) for n in [−126, 0]; lanes below the clamp zeroed
// by its mask; a NaN x passes the clamp (vmaxps returns its second operand when either is NaN) and
// stays NaN through every step, so no NaN select is needed. 15 instructions where the portable
// form takes 21.
inline Vec exp_nonpositive(Vec x) {
  const Vec lo = exp_low_clamp();
  Vec n;
  const Vec p = exp_reduction({_mm512_max_ps(lo.v, x.v)}, n);
  return {_mm512_maskz_scalef_ps(_mm512_cmp_ps_mask(x.v, lo.v, _CMP_NLT_UQ), p.v, n.v)};
}
#else
inline Vec exp_nonpositive(Vec x) {
  const Vec lo = exp_low_clamp();
  Vec n;
  const Vec p = exp_reduction(max(x, lo), n);
  const Vec y = where_less(x, lo, zero(), p * pow2_int(n));
  return where_nan(x, x, y);
}
#endif

// 1 / (1 + e^−x), and x·sigmoid(x) (SiLU).
inline Vec sigmoid(Vec x) { return set1(1.0f) / (set1(1.0f) + exp(set1(0.0f) - x)); }
inline Vec silu(Vec x) { return x * sigmoid(x); }

}  // namespace diffuse::kernels::cpu::simd::DIFFUSE_ISA_NS
