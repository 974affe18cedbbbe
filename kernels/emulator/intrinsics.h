// CUDA's device-only functions for g++ under the SIMT emulator: barriers and warp collectives
// (which record their call site for error reports), atomics, fast-math and conversion intrinsics.
// The fast-math intrinsics (__expf, __logf, __fdividef, ...) are the accurate libm functions
// here, so tolerances between emulator and GPU must allow for the GPU's approximations.
// Atomics are plain read-modify-writes: all threads of a grid run on one OS thread; each marks
// itself as atomic for racecheck (racecheck.h), so atomics on shared memory do not race.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/emulator/racecheck.h"
#include "kernels/emulator/runtime.h"

namespace diffuse::emulator {
// Where a barrier or warp collective was called from, for the emulator's reports: a default
// argument `CallSite at = CallSite::current()` records the caller's file and line, as
// std::source_location would. (clang 14 has no std::source_location with libstdc++ 12: it lacks
// the __builtin_source_location that header needs; __builtin_FILE/__builtin_LINE work in both.)
class CallSite {
 public:
  static constexpr CallSite current(const char* file = __builtin_FILE(), unsigned line = __builtin_LINE()) {
    return CallSite(file, line);
  }
  constexpr const char* file_name() const { return file_; }
  constexpr unsigned line() const { return line_; }

 private:
  constexpr CallSite(const char* file, unsigned line) : file_(file), line_(line) {}
  const char* file_;
  unsigned line_;
};
}  // namespace diffuse::emulator

// ---- built-in variables (read-only views of the running thread's indices) --------------------
inline const uint3& threadIdx = diffuse::emulator::detail::thread_idx;
inline const uint3& blockIdx = diffuse::emulator::detail::block_idx;
inline const dim3& blockDim = diffuse::emulator::detail::block_dim;
inline const dim3& gridDim = diffuse::emulator::detail::grid_dim;
constexpr int warpSize = 32;

// ---- barriers --------------------------------------------------------------------------------
inline void __syncthreads(::diffuse::emulator::CallSite at = ::diffuse::emulator::CallSite::current()) {
  diffuse::emulator::detail::syncthreads(0, 0, at.file_name(), at.line());
}
inline int __syncthreads_count(int pred, ::diffuse::emulator::CallSite at = ::diffuse::emulator::CallSite::current()) {
  return diffuse::emulator::detail::syncthreads(1, pred, at.file_name(), at.line());
}
inline int __syncthreads_and(int pred, ::diffuse::emulator::CallSite at = ::diffuse::emulator::CallSite::current()) {
  return diffuse::emulator::detail::syncthreads(2, pred, at.file_name(), at.line());
}
inline int __syncthreads_or(int pred, ::diffuse::emulator::CallSite at = ::diffuse::emulator::CallSite::current()) {
  return diffuse::emulator::detail::syncthreads(3, pred, at.file_name(), at.line());
}
inline void __threadfence_block() {}
inline void __threadfence() {}

// ---- warp collectives --------------------------------------------------------------------------
namespace diffuse::emulator::detail {
template <typename T>
T warp_value(WarpOp op, unsigned mask, T var, int arg, int width, const CallSite& at) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "warp shuffles move values of at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &var, sizeof(T));
  bits = warp_collective(op, mask, bits, static_cast<int>(sizeof(T)), arg, width, at.file_name(), at.line());
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}
inline uint64_t warp_vote(WarpOp op, unsigned mask, int pred, const CallSite& at) {
  return warp_collective(op, mask, pred != 0, 4, 0, 32, at.file_name(), at.line());
}
}  // namespace diffuse::emulator::detail

inline void __syncwarp(unsigned mask = 0xffffffffu,
                       ::diffuse::emulator::CallSite at = ::diffuse::emulator::CallSite::current()) {
  diffuse::emulator::detail::warp_collective(diffuse::emulator::detail::WarpOp::sync, mask, 0, 0, 0, 32,
                                             at.file_name(), at.line());
}
template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize,
              ::diffuse::emulator::CallSite at = ::diffuse::emulator::CallSite::current()) {
  return diffuse::emulator::detail::warp_value(diffuse::emulator::detail::WarpOp::shfl_idx, mask, var, src_lane, width, at);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                 ::diffuse::emulator::CallSite at = ::diffuse::emulator::CallSite::current()) {
  return diffuse::emulator::detail::warp_value(diffuse::emulator::detail::WarpOp::shfl_up, mask, var,
                                               static_cast<int>(delta), width, at);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                   ::diffuse::emulator::CallSite at = ::diffuse::emulator::CallSite::current()) {
  return diffuse::emulator::detail::warp_value(diffuse::emulator::detail::WarpOp::shfl_down, mask, var,
                                               static_cast<int>(delta), width, at);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize,
                  ::diffuse::emulator::CallSite at = ::diffuse::emulator::CallSite::current()) {
  return diffuse::emulator::detail::warp_value(diffuse::emulator::detail::WarpOp::shfl_xor, mask, var, lane_mask, width, at);
}
inline unsigned __ballot_sync(unsigned mask, int pred,
                              ::diffuse::emulator::CallSite at = ::diffuse::emulator::CallSite::current()) {
  return static_cast<unsigned>(diffuse::emulator::detail::warp_vote(diffuse::emulator::detail::WarpOp::ballot, mask, pred, at));
}
inline int __any_sync(unsigned mask, int pred,
                      ::diffuse::emulator::CallSite at = ::diffuse::emulator::CallSite::current()) {
  return static_cast<int>(diffuse::emulator::detail::warp_vote(diffuse::emulator::detail::WarpOp::any, mask, pred, at));
}
inline int __all_sync(unsigned mask, int pred,
                      ::diffuse::emulator::CallSite at = ::diffuse::emulator::CallSite::current()) {
  return static_cast<int>(diffuse::emulator::detail::warp_vote(diffuse::emulator::detail::WarpOp::all, mask, pred, at));
}
inline unsigned __reduce_add_sync(unsigned mask, unsigned v,
                                  ::diffuse::emulator::CallSite at = ::diffuse::emulator::CallSite::current()) {
  return diffuse::emulator::detail::warp_value(diffuse::emulator::detail::WarpOp::reduce_add, mask, v, 0, 32, at);
}
inline int __reduce_add_sync(unsigned mask, int v,
                             ::diffuse::emulator::CallSite at = ::diffuse::emulator::CallSite::current()) {
  return diffuse::emulator::detail::warp_value(diffuse::emulator::detail::WarpOp::reduce_add, mask, v, 0, 32, at);
}
inline unsigned __reduce_min_sync(unsigned mask, unsigned v,
                                  ::diffuse::emulator::CallSite at = ::diffuse::emulator::CallSite::current()) {
  return diffuse::emulator::detail::warp_value(diffuse::emulator::detail::WarpOp::reduce_min_u, mask, v, 0, 32, at);
}
inline int __reduce_min_sync(unsigned mask, int v,
                             ::diffuse::emulator::CallSite at = ::diffuse::emulator::CallSite::current()) {
  return diffuse::emulator::detail::warp_value(diffuse::emulator::detail::WarpOp::reduce_min_i, mask, v, 0, 32, at);
}
inline unsigned __reduce_max_sync(unsigned mask, unsigned v,
                                  ::diffuse::emulator::CallSite at = ::diffuse::emulator::CallSite::current()) {
  return diffuse::emulator::detail::warp_value(diffuse::emulator::detail::WarpOp::reduce_max_u, mask, v, 0, 32, at);
}
inline int __reduce_max_sync(unsigned mask, int v,
                             ::diffuse::emulator::CallSite at = ::diffuse::emulator::CallSite::current()) {
  return diffuse::emulator::detail::warp_value(diffuse::emulator::detail::WarpOp::reduce_max_i, mask, v, 0, 32, at);
}

// ---- atomics (return the old value, like CUDA's) ----------------------------------------------
#define DIFFUSE_EMU_ATOMIC(name, T, expr)              \
  inline T name(T* address, T val) {                   \
    diffuse::emulator::detail::AtomicScope atomic;     \
    T old = *address;                                  \
    *address = (expr);                                 \
    return old;                                        \
  }
DIFFUSE_EMU_ATOMIC(atomicAdd, float, old + val)
DIFFUSE_EMU_ATOMIC(atomicAdd, double, old + val)
DIFFUSE_EMU_ATOMIC(atomicAdd, int, static_cast<int>(static_cast<unsigned>(old) + static_cast<unsigned>(val)))
DIFFUSE_EMU_ATOMIC(atomicAdd, unsigned int, old + val)
DIFFUSE_EMU_ATOMIC(atomicAdd, unsigned long long, old + val)
DIFFUSE_EMU_ATOMIC(atomicSub, int, static_cast<int>(static_cast<unsigned>(old) - static_cast<unsigned>(val)))
DIFFUSE_EMU_ATOMIC(atomicSub, unsigned int, old - val)
DIFFUSE_EMU_ATOMIC(atomicMax, int, old > val ? old : val)
DIFFUSE_EMU_ATOMIC(atomicMax, unsigned int, old > val ? old : val)
DIFFUSE_EMU_ATOMIC(atomicMin, int, old < val ? old : val)
DIFFUSE_EMU_ATOMIC(atomicMin, unsigned int, old < val ? old : val)
DIFFUSE_EMU_ATOMIC(atomicExch, int, val)
DIFFUSE_EMU_ATOMIC(atomicExch, unsigned int, val)
DIFFUSE_EMU_ATOMIC(atomicExch, float, val)
DIFFUSE_EMU_ATOMIC(atomicAnd, int, old & val)
DIFFUSE_EMU_ATOMIC(atomicAnd, unsigned int, old & val)
DIFFUSE_EMU_ATOMIC(atomicOr, int, old | val)
DIFFUSE_EMU_ATOMIC(atomicOr, unsigned int, old | val)
#undef DIFFUSE_EMU_ATOMIC
inline int atomicCAS(int* address, int compare, int val) {
  diffuse::emulator::detail::AtomicScope atomic;
  int old = *address;
  if (old == compare) *address = val;
  return old;
}
inline unsigned int atomicCAS(unsigned int* address, unsigned int compare, unsigned int val) {
  diffuse::emulator::detail::AtomicScope atomic;
  unsigned int old = *address;
  if (old == compare) *address = val;
  return old;
}
inline unsigned long long atomicCAS(unsigned long long* address, unsigned long long compare, unsigned long long val) {
  diffuse::emulator::detail::AtomicScope atomic;
  unsigned long long old = *address;
  if (old == compare) *address = val;
  return old;
}

// ---- math and conversion intrinsics --------------------------------------------------------------
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return powf(10.0f, x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline void __sincosf(float x, float* s, float* c) { *s = sinf(x), *c = cosf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __frsqrt_rn(float x) { return 1.0f / sqrtf(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float __saturatef(float x) { return x > 0.0f ? (x < 1.0f ? x : 1.0f) : 0.0f; }  // NaN -> 0
inline int __float2int_rn(float x) { return static_cast<int>(nearbyintf(x)); }
inline int __float2int_rz(float x) { return static_cast<int>(x); }
inline int __float2int_rd(float x) { return static_cast<int>(floorf(x)); }
inline int __float2int_ru(float x) { return static_cast<int>(ceilf(x)); }
inline unsigned int __float2uint_rn(float x) { return static_cast<unsigned int>(nearbyintf(x)); }
inline float __int2float_rn(int x) { return static_cast<float>(x); }
inline float __uint2float_rn(unsigned int x) { return static_cast<float>(x); }
inline int __float_as_int(float x) { int i; std::memcpy(&i, &x, 4); return i; }
inline unsigned int __float_as_uint(float x) { unsigned int i; std::memcpy(&i, &x, 4); return i; }
inline float __int_as_float(int i) { float x; std::memcpy(&x, &i, 4); return x; }
inline float __uint_as_float(unsigned int i) { float x; std::memcpy(&x, &i, 4); return x; }
inline long long __double_as_longlong(double x) { long long i; std::memcpy(&i, &x, 8); return i; }
inline double __longlong_as_double(long long i) { double x; std::memcpy(&x, &i, 8); return x; }
inline int __popc(unsigned int x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned int __brev(unsigned int x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0F0F0F0Fu) | ((x & 0x0F0F0F0Fu) << 4);
  x = ((x >> 8) & 0x00FF00FFu) | ((x & 0x00FF00FFu) << 8);
  return (x >> 16) | (x << 16);
}
inline unsigned int __umulhi(unsigned int a, unsigned int b) { return static_cast<unsigned int>((uint64_t{a} * b) >> 32); }
inline int __mulhi(int a, int b) { return static_cast<int>((int64_t{a} * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return static_cast<unsigned long long>((static_cast<unsigned __int128>(a) * b) >> 64);
}
inline int __mul24(int a, int b) { return a * b; }
inline unsigned int __umul24(unsigned int a, unsigned int b) { return a * b; }

// CUDA's same-type min/max overloads (host code has no global ones); fminf/fmaxf come from <cmath>.
// Mixed-type calls (int with unsigned) are ambiguous here: cast one side.
inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline unsigned long min(unsigned long a, unsigned long b) { return a < b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline unsigned long max(unsigned long a, unsigned long b) { return a > b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

// Cache-hinted loads and stores are plain accesses.
template <typename T> T __ldg(const T* p) { return *p; }
template <typename T> T __ldcg(const T* p) { return *p; }
template <typename T> T __ldcs(const T* p) { return *p; }
template <typename T> void __stcg(T* p, T v) { *p = v; }
template <typename T> void __stcs(T* p, T v) { *p = v; }
