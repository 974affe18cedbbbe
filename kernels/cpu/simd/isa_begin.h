// Opens a kernels/cpu/simd/ translation unit for one instruction-set path. CMake compiles every
// kernels/cpu/simd/*.cpp three times, with DIFFUSE_ISA = 0 (baseline), 1 (AVX2+FMA) or 2 (AVX-512),
// each time into its own namespace (DIFFUSE_ISA_NS: isa_baseline, isa_avx2, isa_avx512), and the
// dispatchers of kernels/cpu/simd/dispatch.h call the one kernels/cpu_isa.h chose.
//
// The wider paths are turned on with a target pragma here, not with -mavx2/-mavx512f on the
// command line: a pragma applies only to functions declared after it, so the standard library's
// and our own inline functions (included BEFORE this header) stay baseline code. Compiled with
// -mavx512f, a weak inline function such as a std::vector method could be the copy the linker
// keeps for the whole program, and a CPU without AVX-512 would die on it. Hence the rule for a
// simd source: every #include first, then this header, then only kernels/cpu/simd/vec.h and the
// family's own kernels/cpu/simd/*.h; no OpenMP, no exceptions, no containers (drivers in
// kernels/cpu/*.cpp do those), and everything inside namespace DIFFUSE_ISA_NS.
#pragma once
#if !defined(DIFFUSE_ISA)
#error "kernels/cpu/simd/*.cpp are compiled once per ISA by CMake with DIFFUSE_ISA set"
#endif
#if defined(__x86_64__)
#include <immintrin.h>  // before the pragma: the intrinsics carry their own target attributes
#endif
#include <cstdint>

#include "kernels/cpu/simd/dispatch.h"  // and kernels/cpu_isa.h: their inline code stays baseline

// (The target list is spelled out in each pragma: GCC does not expand macros inside them. Clang's
// attribute push is popped by the generated wrapper after the source, CMakeLists.txt.)
#if DIFFUSE_ISA == 0
#define DIFFUSE_ISA_NS isa_baseline
#elif !defined(__x86_64__)
#error "the AVX2 and AVX-512 paths exist only on x86-64 (CMake compiles them nowhere else)"
#elif DIFFUSE_ISA == 1
#define DIFFUSE_ISA_NS isa_avx2
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,bmi,bmi2"))), apply_to = function)
#else
#pragma GCC target("avx2,fma,f16c,bmi,bmi2")
#endif
#elif DIFFUSE_ISA == 2
#define DIFFUSE_ISA_NS isa_avx512
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c,bmi,bmi2"))), \
                             apply_to = function)
#else
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c,bmi,bmi2")
#endif
#else
#error "DIFFUSE_ISA must be 0, 1 or 2"
#endif
