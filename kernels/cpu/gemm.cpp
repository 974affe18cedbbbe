// cblas_sgemm / cblas_dgemm behind one template (see kernels/gemm.h), and the per-thread scratch.
// The only BLAS entry point of the CPU kernels: dimension checks against OpenBLAS's int live here.
#include "kernels/gemm.h"

#include <cblas.h>

#include <climits>
#include <cstdlib>
#include <string>

namespace diffuse::kernels::cpu {

namespace {

void check_fits(int64_t v, const char* what) {
  require(v >= 0 && v <= INT_MAX, std::string("gemm: ") + what + " = " + std::to_string(v) +
                                       " does not fit the BLAS library's 32-bit integers");
}

// The k == 0 (or alpha == 0) case: c = beta * c, which cblas would also do but only after
// rejecting lda < 1; and beta == 0 must overwrite whatever (possibly NaN) c held.
template <typename T>
void scale_c(int64_t m, int64_t n, T beta, T* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == T(0) ? T(0) : beta * c[i * ldc + j];
}

struct Scratch {
  void* data = nullptr;
  size_t bytes = 0;
  ~Scratch() { std::free(data); }
};

}  // namespace

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
          const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    scale_c(m, n, beta, c, ldc);
    return;
  }
  check_fits(m, "m");
  check_fits(n, "n");
  check_fits(k, "k");
  check_fits(lda, "lda");
  check_fits(ldb, "ldb");
  check_fits(ldc, "ldc");
  CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
  CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
  if constexpr (sizeof(T) == sizeof(float)) {
    cblas_sgemm(CblasRowMajor, ta, tb, int(m), int(n), int(k), alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
  } else {
    cblas_dgemm(CblasRowMajor, ta, tb, int(m), int(n), int(k), alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
  }
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*,
                          int64_t, float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t, const double*,
                           int64_t, double, double*, int64_t);

void* thread_scratch(int slot, size_t bytes) {
  constexpr int kSlots = 4;
  thread_local Scratch scratch[kSlots];
  require(slot >= 0 && slot < kSlots, "thread_scratch: slot " + std::to_string(slot) + " out of range");
  Scratch& s = scratch[slot];
  if (bytes > s.bytes) {
    size_t rounded = (bytes + 127) / 64 * 64;  // never 0: aligned_alloc(64, 0) may be null
    void* p = std::aligned_alloc(64, rounded);
    if (!p) throw Error("out of host memory allocating " + std::to_string(rounded) + " bytes of kernel scratch");
    std::free(s.data);
    s.data = p;
    s.bytes = rounded;
  }
  return s.data;
}

}  // namespace diffuse::kernels::cpu
