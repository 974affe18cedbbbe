// Shared vocabulary of the kernels layer: the host/device qualifier macro, the opaque stream
// handle the device launchers take, and the argument-check helper. Kernels work on raw pointers
// and plain descriptor structs; they know nothing of tensors or autograd.
#pragma once
#include <cstdint>
#include <string>

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

inline void require(bool ok, const std::string& what) {
  if (!ok) throw Error(what);
}

}  // namespace diffuse::kernels
