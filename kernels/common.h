// Shared vocabulary of the kernels layer: the host/device qualifier macro, the opaque stream
// handle the device launchers take, and the argument-check helper. Kernels work on raw pointers
// and plain descriptor structs; they know nothing of tensors or autograd.
#pragma once
#include <cstdint>
#include <string>
#include <type_traits>

#include "diffuse/error.h"

// Under the SIMT emulator (DIFFUSE_EMULATOR) host and device code are one g++ program, so
// DIFFUSE_HD is empty there too; that keeps headers usable before or without kernels/compat.cuh.
#if defined(__CUDACC__)
#define DIFFUSE_HD __host__ __device__
#else
#define DIFFUSE_HD
#endif

namespace diffuse::kernels {

// A cudaStream_t passed through headers that must not include the CUDA runtime.
using Stream = void*;

// Argument checks. Kernels run every step, so a check must cost nothing when it passes: pass a
// literal, or a lambda that builds the message (it runs only on failure) — never a std::string
// built in the call, which allocates each time (tests/cpu/test_steady_state_alloc.cpp).
inline void require(bool ok, const char* what) {
  if (!ok) throw Error(what);
}
inline void require(bool ok, const std::string& what) {  // for checks off the per-step path
  if (!ok) throw Error(what);
}
template <typename MakeMessage, typename = std::enable_if_t<std::is_invocable_r_v<std::string, MakeMessage>>>
inline void require(bool ok, MakeMessage&& make_message) {  // C++17: nvcc compiles this header too
  if (!ok) throw Error(make_message());
}

}  // namespace diffuse::kernels
