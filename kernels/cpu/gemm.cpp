// The CPU GEMM behind one template (see kernels/gemm.h), and the per-thread scratch. f32 runs on
// the project's own packed GEMM (kernels/cpu/gemm_blocked.h): its AVX-512 micro-kernel is chosen
// at run time whatever OPENBLAS_CORETYPE says, it threads with one dynamic region per call, and
// convolution shares its packing machinery. f64 (gradient checks only) stays on OpenBLAS's dgemm,
// pinned to one thread and split into row or column blocks over OpenMP's threads: two thread
// pools (OpenMP's and OpenBLAS's pthreads) spinning for the same cores made it 2-3x slower.
#include "kernels/gemm.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <string>

#include "kernels/cpu/gemm_blocked.h"
#include "kernels/single_threaded_blas.h"

namespace diffuse::kernels::cpu {

namespace {

// The messages are built only on failure: a steady-state step allocates nothing (docs/design.md §4).
void check_fits(int64_t v, const char* what) {
  if (v < 0 || v > INT_MAX)
    throw Error(std::string("gemm: ") + what + " = " + std::to_string(v) +
                " does not fit the BLAS library's 32-bit integers");
}

// The k == 0 (or alpha == 0) case: c = beta * c, which cblas would also do but only after
// rejecting lda < 1; and beta == 0 must overwrite whatever (possibly NaN) c held.
void scale_c(int64_t m, int64_t n, double beta, double* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0 ? 0.0 : beta * c[i * ldc + j];
}

// Below this many multiply-adds a dgemm runs on the calling thread alone.
constexpr double kSplitWork = 1 << 18;

void dgemm_call(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
                int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, int(m), int(n),
              int(k), alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
}

void dgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha, const double* a, int64_t lda,
           const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
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
  single_threaded_blas();
  // Serial inside an OpenMP region or a chunk of the pool's (the f64 attention tiles call it
  // there): a nested team would put more threads on the cores than there are.
  const int threads = region_threads();
  if (threads <= 1 || double(m) * double(n) * double(k) < kSplitWork) {
    dgemm_call(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  // Split the longer side of c into one block per thread (multiples of 16 keep the blocks
  // aligned with the BLAS micro-kernels); op(a) rows or op(b) columns follow their block.
  const bool split_rows = m >= n;
  const int64_t len = split_rows ? m : n;
  const int64_t block = std::max<int64_t>(16, (len + threads - 1) / threads + 15) / 16 * 16;
  const int64_t blocks = (len + block - 1) / block;
#pragma omp parallel for schedule(static, 1) num_threads(threads)
  for (int64_t i = 0; i < blocks; ++i) {
    const int64_t lo = i * block, hi = std::min(len, lo + block);
    if (split_rows) {
      const double* ai = trans_a ? a + lo : a + lo * lda;
      dgemm_call(trans_a, trans_b, hi - lo, n, k, alpha, ai, lda, b, ldb, beta, c + lo * ldc, ldc);
    } else {
      const double* bi = trans_b ? b + lo * ldb : b + lo;
      dgemm_call(trans_a, trans_b, m, hi - lo, k, alpha, a, lda, bi, ldb, beta, c + lo, ldc);
    }
  }
}

template <class PackA>
void sgemm_with(const PackA& pack_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* b,
                int64_t ldb, float beta, const float* bias, float* c, int64_t ldc) {
  if (trans_b) {
    blocked_gemm(m, n, k, alpha, pack_a, TransposedB{b, ldb}, beta, bias, c, ldc);
  } else {
    blocked_gemm(m, n, k, alpha, pack_a, PlainB{b, ldb}, beta, bias, c, ldc);
  }
}

struct Scratch {
  void* data = nullptr;
  size_t bytes = 0;
  ~Scratch() { std::free(data); }
};

}  // namespace

void gemm_bias(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
               int64_t lda, const float* b, int64_t ldb, float beta, const float* bias, float* c, int64_t ldc) {
  if (m < 0 || n < 0 || k < 0)
    throw Error("gemm: negative dimension (m " + std::to_string(m) + ", n " + std::to_string(n) + ", k " +
                std::to_string(k) + ")");
  if (trans_a) {
    sgemm_with(TransposedA{a, lda}, trans_b, m, n, k, alpha, b, ldb, beta, bias, c, ldc);
  } else {
    sgemm_with(PlainA{a, lda}, trans_b, m, n, k, alpha, b, ldb, beta, bias, c, ldc);
  }
}

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
          const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if constexpr (sizeof(T) == sizeof(float)) {
    gemm_bias(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, nullptr, c, ldc);
  } else {
    if (m == 0 || n == 0) return;
    dgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*,
                          int64_t, float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t, const double*,
                           int64_t, double, double*, int64_t);

void* thread_scratch(int slot, size_t bytes) {
  thread_local Scratch scratch[kScratchSlots];
  if (slot < 0 || slot >= kScratchSlots) throw Error("thread_scratch: slot " + std::to_string(slot) + " out of range");
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
