// Typed GEMM over OpenBLAS (row-major cblas) for the CPU kernels of conv2d, linear and attention,
// plus the per-thread scratch those kernels keep their im2col columns and score matrices in.
// Leading dimensions are explicit, so a head of a [N, L, heads*d] tensor is an operand in place
// (ld = heads*d). Dimensions must fit OpenBLAS's 32-bit ints; anything larger is an Error.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/common.h"

namespace diffuse::kernels::cpu {

// c[m, n] = alpha * op(a) · op(b) + beta * c, all row-major; op(a) is [m, k], op(b) is [k, n].
// trans_a: a is stored [k, m]; trans_b: b is stored [n, k]. Empty dims are fine (k == 0 scales c
// by beta). Threads: the first call pins OpenBLAS to one thread for the whole process; a large
// GEMM called outside an OpenMP region is split over OpenMP's threads, one inside runs serially.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
          const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

// A grow-only buffer of at least `bytes`, private to the calling thread and to `slot` (0..3),
// 64-byte aligned, uninitialised. Valid until the same thread asks for the same slot again.
// Kept for the thread's life so repeated calls do not fault fresh pages in every step.
void* thread_scratch(int slot, size_t bytes);

template <typename T>
T* thread_scratch_of(int slot, size_t count) {
  return static_cast<T*>(thread_scratch(slot, count * sizeof(T)));
}

}  // namespace diffuse::kernels::cpu
