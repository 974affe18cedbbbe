// One line declares a kernel that has a version per instruction-set path:
//
//   namespace diffuse::kernels::cpu::simd {
//   DIFFUSE_SIMD_FUNCTION(void, exp_array, (const float* x, float* y, int64_t n), (x, y, n))
//   }
//
// In a driver (kernels/cpu/*.cpp, compiled once, baseline) it declares the three versions
// (isa_baseline::exp_array, isa_avx2::exp_array, isa_avx512::exp_array) and defines
// simd::exp_array, which calls the one active_cpu_isa() names. Inside a kernels/cpu/simd/*.cpp
// (DIFFUSE_ISA set, after isa_begin.h) it declares only that path's version, which the file then
// defines: a dispatcher compiled there would be AVX-512 code the linker could keep for everyone.
#pragma once
#include "kernels/cpu_isa.h"

#if defined(DIFFUSE_ISA)
#define DIFFUSE_SIMD_FUNCTION(ret, name, params, args) \
  namespace DIFFUSE_ISA_NS {                           \
  ret name params;                                     \
  }
#elif defined(__x86_64__)
#define DIFFUSE_SIMD_FUNCTION(ret, name, params, args)      \
  namespace isa_baseline {                                  \
  ret name params;                                          \
  }                                                         \
  namespace isa_avx2 {                                      \
  ret name params;                                          \
  }                                                         \
  namespace isa_avx512 {                                    \
  ret name params;                                          \
  }                                                         \
  inline ret name params {                                  \
    switch (::diffuse::kernels::cpu::active_cpu_isa()) {    \
      case ::diffuse::kernels::cpu::CpuIsa::avx512:         \
        return isa_avx512::name args;                       \
      case ::diffuse::kernels::cpu::CpuIsa::avx2:           \
        return isa_avx2::name args;                         \
      case ::diffuse::kernels::cpu::CpuIsa::baseline:       \
        break;                                              \
    }                                                       \
    return isa_baseline::name args;                         \
  }
#else
#define DIFFUSE_SIMD_FUNCTION(ret, name, params, args) \
  namespace isa_baseline {                             \
  ret name params;                                     \
  }                                                    \
  inline ret name params { return isa_baseline::name args; }
#endif
