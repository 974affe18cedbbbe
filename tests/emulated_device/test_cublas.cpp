// The emulated device's cuBLAS and cuBLASLt (kernels/emulated_device/cublas.cpp, cublaslt.cpp)
// through the real API, on device memory from the emulated cudaMalloc: every entry point diffuse
// calls against a naive double-precision GEMM on small odd shapes (all four transpose
// combinations, padded leading dimensions, alpha/beta, beta = 0 over NaN-poisoned C), bf16
// rounding, bounded TF32 error, the bias epilogue, strided batches (f32, and bf16 in with f32 or bf16
// out), both pointer modes; that the
// work runs only when the host synchronises; and that each documented misuse returns the
// documented status (the planted bug: a bad leading dimension is CUBLAS_STATUS_INVALID_VALUE, and
// nn/cuda's check turns it into a diffuse::Error naming it).
#include <catch2/catch.hpp>
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "diffuse/error.h"
#include "kernels/bf16.h"
#include "kernels/gemm.h"
#include "nn/cuda/caching_allocator.h"
#include "nn/device_context.h"
#include "support/bf16_vectors.h"
#include "support/device_memory.h"

namespace {

using diffuse::kernels::bf16_to_float;
using diffuse::kernels::float_to_bf16;
using diffuse::test::DeviceBuffer;
using diffuse::test::download;
using diffuse::test::to_bf16;
using diffuse::test::upload;

#define BLAS_OK(call) REQUIRE((call) == CUBLAS_STATUS_SUCCESS)

const float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<float> random_floats(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// Small integers: products and sums of them are exact in f32, so bf16 rounding of the result is
// checkable bit for bit.
std::vector<float> random_ints(size_t n, unsigned seed, int range) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> u(-range, range);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(u(rng));
  return v;
}

// Column-major reference: D = alpha·op(A)·op(B) + beta·C (+ bias[i]), in double; C not read when
// beta == 0 (it may hold NaN).
std::vector<double> reference(bool ta, bool tb, int m, int n, int k, double alpha, const std::vector<float>& a, int lda,
                              const std::vector<float>& b, int ldb, double beta, const std::vector<float>& c, int ldc,
                              const std::vector<float>* bias = nullptr) {
  std::vector<double> d(static_cast<size_t>(m) * n);
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      double s = 0;
      for (int p = 0; p < k; ++p) {
        const double av = ta ? a[static_cast<size_t>(i) * lda + p] : a[static_cast<size_t>(p) * lda + i];
        const double bv = tb ? b[static_cast<size_t>(p) * ldb + j] : b[static_cast<size_t>(j) * ldb + p];
        s += av * bv;
      }
      double v = alpha * s;
      if (beta != 0) v += beta * c[static_cast<size_t>(j) * ldc + i];
      if (bias) v += (*bias)[i];
      d[static_cast<size_t>(j) * m + i] = v;
    }
  return d;
}

// Largest |got - want| / max(1, |want|) over the m × n matrix stored with ld; NaN is infinite.
double max_error(const std::vector<float>& got, int ld, const std::vector<double>& want, int m, int n) {
  double worst = 0;
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      const double g = got[static_cast<size_t>(j) * ld + i], w = want[static_cast<size_t>(j) * m + i];
      const double e = std::isfinite(g) ? std::fabs(g - w) / std::max(1.0, std::fabs(w)) : INFINITY;
      worst = std::max(worst, e);
    }
  return worst;
}

struct Handle {
  cublasHandle_t h = nullptr;
  Handle() { BLAS_OK(cublasCreate(&h)); }
  ~Handle() { cublasDestroy(h); }
};

struct LtHandle {
  cublasLtHandle_t h = nullptr;
  LtHandle() { BLAS_OK(cublasLtCreate(&h)); }
  ~LtHandle() { cublasLtDestroy(h); }
};

// Shapes of one GEMM: op(A) m × k, op(B) k × n, C m × n, every leading dimension padded by 2.
struct Shape {
  bool ta, tb;
  int m = 5, n = 7, k = 3;
  int a_rows() const { return ta ? k : m; }
  int a_cols() const { return ta ? m : k; }
  int b_rows() const { return tb ? n : k; }
  int b_cols() const { return tb ? k : n; }
  int lda() const { return a_rows() + 2; }
  int ldb() const { return b_rows() + 2; }
  int ldc() const { return m + 2; }
  size_t a_count() const { return static_cast<size_t>(lda()) * a_cols(); }
  size_t b_count() const { return static_cast<size_t>(ldb()) * b_cols(); }
  size_t c_count() const { return static_cast<size_t>(ldc()) * n; }
};

cublasOperation_t op(bool t) { return t ? CUBLAS_OP_T : CUBLAS_OP_N; }

}  // namespace

TEST_CASE("cublasGemmEx f32 matches a double GEMM for every transpose, alpha/beta and beta = 0 over NaN",
          "[cuda][emulated]") {
  Handle handle;
  for (const bool ta : {false, true})
    for (const bool tb : {false, true}) {
      const Shape s{ta, tb};
      INFO("transa " << ta << " transb " << tb);
      const auto a = random_floats(s.a_count(), 1), b = random_floats(s.b_count(), 2), c = random_floats(s.c_count(), 3);
      DeviceBuffer da(s.a_count() * 4), db(s.b_count() * 4), dc(s.c_count() * 4);
      upload(da.p, a);
      upload(db.p, b);

      // alpha and beta both non-trivial.
      upload(dc.p, c);
      const float alpha = 1.5f, beta = -0.75f;
      BLAS_OK(cublasGemmEx(handle.h, op(ta), op(tb), s.m, s.n, s.k, &alpha, da.p, CUDA_R_32F, s.lda(), db.p,
                           CUDA_R_32F, s.ldb(), &beta, dc.p, CUDA_R_32F, s.ldc(), CUBLAS_COMPUTE_32F,
                           CUBLAS_GEMM_DEFAULT));
      auto got = download<float>(dc.p, s.c_count());
      CHECK(max_error(got, s.ldc(), reference(ta, tb, s.m, s.n, s.k, alpha, a, s.lda(), b, s.ldb(), beta, c, s.ldc()),
                      s.m, s.n) < 1e-6);
      // The padding rows between columns are not written.
      for (int j = 0; j < s.n; ++j) CHECK(got[static_cast<size_t>(j) * s.ldc() + s.m] == c[j * s.ldc() + s.m]);

      // beta = 0: C is not read, so NaN in it must not reach the result.
      upload(dc.p, std::vector<float>(s.c_count(), kNaN));
      const float zero = 0.0f;
      BLAS_OK(cublasGemmEx(handle.h, op(ta), op(tb), s.m, s.n, s.k, &alpha, da.p, CUDA_R_32F, s.lda(), db.p,
                           CUDA_R_32F, s.ldb(), &zero, dc.p, CUDA_R_32F, s.ldc(), CUBLAS_COMPUTE_32F,
                           CUBLAS_GEMM_DEFAULT));
      got = download<float>(dc.p, s.c_count());
      CHECK(max_error(got, s.ldc(), reference(ta, tb, s.m, s.n, s.k, alpha, a, s.lda(), b, s.ldb(), 0, c, s.ldc()),
                      s.m, s.n) < 1e-6);
    }
}

TEST_CASE("cublasSgemm and cublasSgemmStridedBatched match a double GEMM", "[cuda][emulated]") {
  Handle handle;
  const Shape s{true, false, 6, 3, 9};
  const auto a = random_floats(s.a_count(), 4), b = random_floats(s.b_count(), 5);
  DeviceBuffer da(s.a_count() * 4), db(s.b_count() * 4), dc(s.c_count() * 4);
  upload(da.p, a);
  upload(db.p, b);
  upload(dc.p, std::vector<float>(s.c_count(), kNaN));
  const float alpha = -2.0f, beta = 0.0f;
  BLAS_OK(cublasSgemm(handle.h, CUBLAS_OP_T, CUBLAS_OP_N, s.m, s.n, s.k, &alpha, da.as<float>(), s.lda(),
                      db.as<float>(), s.ldb(), &beta, dc.as<float>(), s.ldc()));
  CHECK(max_error(download<float>(dc.p, s.c_count()), s.ldc(),
                  reference(true, false, s.m, s.n, s.k, alpha, a, s.lda(), b, s.ldb(), 0, {}, s.ldc()), s.m,
                  s.n) < 1e-6);

  // Three batches; A's stride leaves a gap, B is shared (stride 0), C's entries are contiguous.
  const int batch = 3;
  const Shape t{false, true, 4, 5, 3};
  const long long sa = static_cast<long long>(t.a_count()) + 3, sb = 0, sc = static_cast<long long>(t.c_count());
  const auto ab = random_floats(static_cast<size_t>(sa) * batch, 6), bb = random_floats(t.b_count(), 7),
             cb = random_floats(static_cast<size_t>(sc) * batch, 8);
  DeviceBuffer dab(ab.size() * 4), dbb(bb.size() * 4), dcb(cb.size() * 4);
  upload(dab.p, ab);
  upload(dbb.p, bb);
  upload(dcb.p, cb);
  const float alpha2 = 0.5f, beta2 = 2.0f;
  BLAS_OK(cublasSgemmStridedBatched(handle.h, CUBLAS_OP_N, CUBLAS_OP_T, t.m, t.n, t.k, &alpha2, dab.as<float>(),
                                    t.lda(), sa, dbb.as<float>(), t.ldb(), sb, &beta2, dcb.as<float>(), t.ldc(), sc,
                                    batch));
  const auto got = download<float>(dcb.p, cb.size());
  for (int i = 0; i < batch; ++i) {
    INFO("batch entry " << i);
    const std::vector<float> ai(ab.begin() + i * sa, ab.begin() + (i + 1) * sa);
    const std::vector<float> ci(cb.begin() + i * sc, cb.begin() + (i + 1) * sc);
    const std::vector<float> gi(got.begin() + i * sc, got.begin() + (i + 1) * sc);
    CHECK(max_error(gi, t.ldc(), reference(false, true, t.m, t.n, t.k, alpha2, ai, t.lda(), bb, t.ldb(), beta2, ci,
                                           t.ldc()),
                    t.m, t.n) < 1e-6);
  }
}

TEST_CASE("cublasGemmEx bf16: f32 accumulation, outputs rounded to nearest even, f32 output too", "[cuda][emulated]") {
  Handle handle;
  for (const bool ta : {false, true})
    for (const bool tb : {false, true}) {
      INFO("transa " << ta << " transb " << tb);
      const Shape s{ta, tb, 7, 5, 9};
      // Integers up to 16 over k = 9 reach |sums| ~ 2000, beyond bf16's 8 significant bits, and
      // every partial sum is exact in f32: the only rounding is the final one to bf16.
      const auto a = random_ints(s.a_count(), 9, 16), b = random_ints(s.b_count(), 10, 16);
      const auto c = random_ints(s.c_count(), 11, 16);
      DeviceBuffer da(s.a_count() * 2), db(s.b_count() * 2), dc(s.c_count() * 2), dc32(s.c_count() * 4);
      upload(da.p, to_bf16(a));
      upload(db.p, to_bf16(b));
      upload(dc.p, to_bf16(c));
      const float alpha = 1.0f, beta = 1.0f;
      BLAS_OK(cublasGemmEx(handle.h, op(ta), op(tb), s.m, s.n, s.k, &alpha, da.p, CUDA_R_16BF, s.lda(), db.p,
                           CUDA_R_16BF, s.ldb(), &beta, dc.p, CUDA_R_16BF, s.ldc(), CUBLAS_COMPUTE_32F,
                           CUBLAS_GEMM_DEFAULT));
      const auto want = reference(ta, tb, s.m, s.n, s.k, alpha, a, s.lda(), b, s.ldb(), beta, c, s.ldc());
      const auto got = download<uint16_t>(dc.p, s.c_count());
      int rounded = 0;
      for (int j = 0; j < s.n; ++j)
        for (int i = 0; i < s.m; ++i) {
          const double w = want[static_cast<size_t>(j) * s.m + i];
          const uint16_t g = got[static_cast<size_t>(j) * s.ldc() + i];
          CHECK(g == float_to_bf16(static_cast<float>(w)));
          rounded += bf16_to_float(g) != w;
        }
      CHECK(rounded > 0);  // the shape does exercise the rounding

      // bf16 in, f32 out: no rounding at all.
      upload(dc32.p, std::vector<float>(s.c_count(), kNaN));
      const float zero = 0.0f;
      BLAS_OK(cublasGemmEx(handle.h, op(ta), op(tb), s.m, s.n, s.k, &alpha, da.p, CUDA_R_16BF, s.lda(), db.p,
                           CUDA_R_16BF, s.ldb(), &zero, dc32.p, CUDA_R_32F, s.ldc(), CUBLAS_COMPUTE_32F,
                           CUBLAS_GEMM_DEFAULT));
      CHECK(max_error(download<float>(dc32.p, s.c_count()), s.ldc(),
                      reference(ta, tb, s.m, s.n, s.k, alpha, a, s.lda(), b, s.ldb(), 0, c, s.ldc()), s.m, s.n) == 0);
    }
}

TEST_CASE("cublasGemmStridedBatchedEx: bf16 in, f32 or bf16 out, per-entry strides and extents", "[cuda][emulated]") {
  // What attention's GEMM path calls (kernels/cuda/attention_gemm.cpp): bf16 operands, one batch
  // entry per image, a head as a strided operand. Integer inputs: f32 results are exact.
  Handle handle;
  const int batch = 3;
  const Shape s{false, true, 6, 5, 7};
  const long long sa = static_cast<long long>(s.a_count()) + 5, sb = static_cast<long long>(s.b_count()) + 1,
                  sc = static_cast<long long>(s.c_count()) + 2;
  const auto a = random_ints(static_cast<size_t>(sa) * batch, 21, 8), b = random_ints(static_cast<size_t>(sb) * batch, 22, 8);
  DeviceBuffer da(a.size() * 2), db(b.size() * 2), dc32(static_cast<size_t>(sc) * batch * 4),
      dc16(static_cast<size_t>(sc) * batch * 2);
  upload(da.p, to_bf16(a));
  upload(db.p, to_bf16(b));
  upload(dc32.p, std::vector<float>(static_cast<size_t>(sc) * batch, kNaN));
  upload(dc16.p, to_bf16(std::vector<float>(static_cast<size_t>(sc) * batch, kNaN)));
  const float alpha = 0.5f, zero = 0.0f;
  BLAS_OK(cublasGemmStridedBatchedEx(handle.h, CUBLAS_OP_N, CUBLAS_OP_T, s.m, s.n, s.k, &alpha, da.p, CUDA_R_16BF,
                                     s.lda(), sa, db.p, CUDA_R_16BF, s.ldb(), sb, &zero, dc32.p, CUDA_R_32F, s.ldc(),
                                     sc, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  BLAS_OK(cublasGemmStridedBatchedEx(handle.h, CUBLAS_OP_N, CUBLAS_OP_T, s.m, s.n, s.k, &alpha, da.p, CUDA_R_16BF,
                                     s.lda(), sa, db.p, CUDA_R_16BF, s.ldb(), sb, &zero, dc16.p, CUDA_R_16BF, s.ldc(),
                                     sc, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  const auto got32 = download<float>(dc32.p, static_cast<size_t>(sc) * batch);
  const auto got16 = download<uint16_t>(dc16.p, static_cast<size_t>(sc) * batch);
  for (int e = 0; e < batch; ++e) {
    INFO("batch entry " << e);
    const std::vector<float> ae(a.begin() + e * sa, a.begin() + (e + 1) * sa), be(b.begin() + e * sb, b.begin() + (e + 1) * sb);
    const auto want = reference(false, true, s.m, s.n, s.k, alpha, ae, s.lda(), be, s.ldb(), 0, {}, s.ldc());
    for (int j = 0; j < s.n; ++j)
      for (int i = 0; i < s.m; ++i) {
        const size_t at = static_cast<size_t>(e * sc + j * s.ldc() + i);
        const double w = want[static_cast<size_t>(j) * s.m + i];
        CHECK(got32[at] == w);
        CHECK(got16[at] == float_to_bf16(static_cast<float>(w)));
      }
  }
  // An A stride that carries the last entry past A's allocation is refused; C is left alone.
  const auto before = download<float>(dc32.p, static_cast<size_t>(sc) * batch);
  CHECK(cublasGemmStridedBatchedEx(handle.h, CUBLAS_OP_N, CUBLAS_OP_T, s.m, s.n, s.k, &alpha, da.p, CUDA_R_16BF,
                                   s.lda(), sa + 10, db.p, CUDA_R_16BF, s.ldb(), sb, &zero, dc32.p, CUDA_R_32F, s.ldc(),
                                   sc, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_INVALID_VALUE);
  // f32 A with bf16 B is not a combination cuBLAS has.
  CHECK(cublasGemmStridedBatchedEx(handle.h, CUBLAS_OP_N, CUBLAS_OP_T, s.m, s.n, s.k, &alpha, da.p, CUDA_R_32F,
                                   s.lda(), sa / 2, db.p, CUDA_R_16BF, s.ldb(), sb, &zero, dc32.p, CUDA_R_32F, s.ldc(),
                                   sc, 1, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_NOT_SUPPORTED);
  cudaDeviceSynchronize();
  const auto after = download<float>(dc32.p, static_cast<size_t>(sc) * batch);  // NaN padding: compare bits
  CHECK(std::memcmp(after.data(), before.data(), after.size() * sizeof(float)) == 0);
}

TEST_CASE("TF32: CUBLAS_COMPUTE_32F_FAST_TF32 and the TF32 math mode round inputs to 10 mantissa bits",
          "[cuda][emulated]") {
  Handle handle;
  const Shape s{false, false, 9, 11, 33};
  const auto a = random_floats(s.a_count(), 12), b = random_floats(s.b_count(), 13);
  DeviceBuffer da(s.a_count() * 4), db(s.b_count() * 4), dc(s.c_count() * 4);
  upload(da.p, a);
  upload(db.p, b);
  const auto exact = reference(false, false, s.m, s.n, s.k, 1, a, s.lda(), b, s.ldb(), 0, {}, s.ldc());
  // Σ|a||b| bounds the error scale of each element; TF32 rounding is 2^-11 relative per input.
  double scale = 0;
  for (int i = 0; i < s.m; ++i)
    for (int p = 0; p < s.k; ++p) scale = std::max(scale, double(std::fabs(a[static_cast<size_t>(p) * s.lda() + i])));
  const double bound = 2.0 * std::ldexp(1.0, -11) * s.k * scale;  // |b| ≤ 1
  const float one = 1.0f, zero = 0.0f;

  auto run = [&](cublasComputeType_t compute) {
    upload(dc.p, std::vector<float>(s.c_count(), kNaN));
    BLAS_OK(cublasGemmEx(handle.h, CUBLAS_OP_N, CUBLAS_OP_N, s.m, s.n, s.k, &one, da.p, CUDA_R_32F, s.lda(), db.p,
                         CUDA_R_32F, s.ldb(), &zero, dc.p, CUDA_R_32F, s.ldc(), compute, CUBLAS_GEMM_DEFAULT));
    return download<float>(dc.p, s.c_count());
  };
  auto abs_error = [&](const std::vector<float>& got) {
    double worst = 0;
    for (int j = 0; j < s.n; ++j)
      for (int i = 0; i < s.m; ++i)
        worst = std::max(worst, std::fabs(got[static_cast<size_t>(j) * s.ldc() + i] - exact[static_cast<size_t>(j) * s.m + i]));
    return worst;
  };
  const double f32_error = abs_error(run(CUBLAS_COMPUTE_32F));
  const double tf32_error = abs_error(run(CUBLAS_COMPUTE_32F_FAST_TF32));
  CHECK(f32_error < 1e-5);
  CHECK(tf32_error < bound);
  CHECK(tf32_error > 1e-4);  // TF32-like error, not f32's
  // The math mode turns CUBLAS_COMPUTE_32F into TF32 for f32 operands; PEDANTIC never is.
  BLAS_OK(cublasSetMathMode(handle.h, CUBLAS_TF32_TENSOR_OP_MATH));
  CHECK(abs_error(run(CUBLAS_COMPUTE_32F)) == tf32_error);
  CHECK(abs_error(run(CUBLAS_COMPUTE_32F_PEDANTIC)) < 1e-5);
  BLAS_OK(cublasSetMathMode(handle.h, CUBLAS_DEFAULT_MATH));
}

TEST_CASE("cuBLAS pointer modes: HOST scalars are read at the call, DEVICE scalars when the work runs",
          "[cuda][emulated]") {
  Handle handle;
  cudaStream_t stream = nullptr;
  REQUIRE_CUDA_OK(cudaStreamCreate(&stream));
  BLAS_OK(cublasSetStream(handle.h, stream));
  const Shape s{false, false, 3, 4, 2};
  const auto a = random_floats(s.a_count(), 14), b = random_floats(s.b_count(), 15);
  DeviceBuffer da(s.a_count() * 4), db(s.b_count() * 4), dc(s.c_count() * 4), scalars(2 * sizeof(float));
  upload(da.p, a);
  upload(db.p, b);
  const auto want2 = reference(false, false, s.m, s.n, s.k, 2.0, a, s.lda(), b, s.ldb(), 0, {}, s.ldc());

  // HOST: changing the variable after the call does not change the result.
  float alpha = 2.0f, beta = 0.0f;
  upload(dc.p, std::vector<float>(s.c_count(), kNaN));
  BLAS_OK(cublasGemmEx(handle.h, CUBLAS_OP_N, CUBLAS_OP_N, s.m, s.n, s.k, &alpha, da.p, CUDA_R_32F, s.lda(), db.p,
                       CUDA_R_32F, s.ldb(), &beta, dc.p, CUDA_R_32F, s.ldc(), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  alpha = 100.0f;
  REQUIRE_CUDA_OK(cudaStreamSynchronize(stream));
  CHECK(max_error(download<float>(dc.p, s.c_count()), s.ldc(), want2, s.m, s.n) < 1e-6);

  // DEVICE: the scalars are written by a copy queued before the GEMM on the same stream, so they
  // hold their values only when the work runs.
  BLAS_OK(cublasSetPointerMode(handle.h, CUBLAS_POINTER_MODE_DEVICE));
  cublasPointerMode_t mode{};
  BLAS_OK(cublasGetPointerMode(handle.h, &mode));
  CHECK(mode == CUBLAS_POINTER_MODE_DEVICE);
  const float host_scalars[2] = {2.0f, 0.0f};
  upload(dc.p, std::vector<float>(s.c_count(), kNaN));
  upload(scalars.p, std::vector<float>{kNaN, kNaN});
  REQUIRE_CUDA_OK(cudaMemcpyAsync(scalars.p, host_scalars, sizeof(host_scalars), cudaMemcpyHostToDevice, stream));
  BLAS_OK(cublasGemmEx(handle.h, CUBLAS_OP_N, CUBLAS_OP_N, s.m, s.n, s.k, scalars.as<float>(), da.p, CUDA_R_32F,
                       s.lda(), db.p, CUDA_R_32F, s.ldb(), scalars.as<float>(4), dc.p, CUDA_R_32F, s.ldc(),
                       CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  REQUIRE_CUDA_OK(cudaStreamSynchronize(stream));
  CHECK(max_error(download<float>(dc.p, s.c_count()), s.ldc(), want2, s.m, s.n) < 1e-6);
  // A host scalar in DEVICE mode (and a device one in HOST mode) is refused.
  const float host_one = 1.0f;
  CHECK(cublasGemmEx(handle.h, CUBLAS_OP_N, CUBLAS_OP_N, s.m, s.n, s.k, &host_one, da.p, CUDA_R_32F, s.lda(), db.p,
                     CUDA_R_32F, s.ldb(), &host_one, dc.p, CUDA_R_32F, s.ldc(), CUBLAS_COMPUTE_32F,
                     CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_INVALID_VALUE);
  BLAS_OK(cublasSetPointerMode(handle.h, CUBLAS_POINTER_MODE_HOST));
  CHECK(cublasGemmEx(handle.h, CUBLAS_OP_N, CUBLAS_OP_N, s.m, s.n, s.k, scalars.as<float>(), da.p, CUDA_R_32F,
                     s.lda(), db.p, CUDA_R_32F, s.ldb(), scalars.as<float>(4), dc.p, CUDA_R_32F, s.ldc(),
                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_INVALID_VALUE);
  CHECK(cublasSetPointerMode(handle.h, static_cast<cublasPointerMode_t>(7)) == CUBLAS_STATUS_INVALID_VALUE);
  BLAS_OK(cublasSetStream(handle.h, nullptr));
  REQUIRE_CUDA_OK(cudaStreamDestroy(stream));
}

TEST_CASE("cuBLAS work runs when the host synchronises, not when it is queued", "[cuda][emulated]") {
  Handle handle;
  cudaStream_t gemm_stream = nullptr, copy_stream = nullptr;
  REQUIRE_CUDA_OK(cudaStreamCreateWithFlags(&gemm_stream, cudaStreamNonBlocking));
  REQUIRE_CUDA_OK(cudaStreamCreateWithFlags(&copy_stream, cudaStreamNonBlocking));
  BLAS_OK(cublasSetStream(handle.h, gemm_stream));
  cudaStream_t got_stream = nullptr;
  BLAS_OK(cublasGetStream(handle.h, &got_stream));
  CHECK(got_stream == gemm_stream);
  const Shape s{false, false, 3, 3, 2};
  const auto a = random_floats(s.a_count(), 16), b = random_floats(s.b_count(), 17), a2 = random_floats(s.a_count(), 18);
  DeviceBuffer da(s.a_count() * 4), db(s.b_count() * 4), dc(s.c_count() * 4);
  upload(da.p, a);
  upload(db.p, b);
  upload(dc.p, std::vector<float>(s.c_count(), -1.0f));
  const float one = 1.0f, zero = 0.0f;
  BLAS_OK(cublasGemmEx(handle.h, CUBLAS_OP_N, CUBLAS_OP_N, s.m, s.n, s.k, &one, da.p, CUDA_R_32F, s.lda(), db.p,
                       CUDA_R_32F, s.ldb(), &zero, dc.p, CUDA_R_32F, s.ldc(), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  // A read of C queued behind the GEMM still sees the old contents before the sync.
  std::vector<float> early(s.c_count(), 0.0f);
  REQUIRE_CUDA_OK(cudaMemcpyAsync(early.data(), dc.p, early.size() * 4, cudaMemcpyDeviceToHost, gemm_stream));
  CHECK(early == std::vector<float>(s.c_count(), 0.0f));
  // Overwrite A on an unordered stream and run only that: the queued GEMM has not read A yet, so
  // it computes with the new A once its own stream is synchronised.
  REQUIRE_CUDA_OK(cudaMemcpyAsync(da.p, a2.data(), a2.size() * 4, cudaMemcpyHostToDevice, copy_stream));
  REQUIRE_CUDA_OK(cudaStreamSynchronize(copy_stream));
  REQUIRE_CUDA_OK(cudaStreamSynchronize(gemm_stream));
  CHECK(max_error(early, s.ldc(), reference(false, false, s.m, s.n, s.k, 1, a2, s.lda(), b, s.ldb(), 0, {}, s.ldc()),
                  s.m, s.n) < 1e-6);
  BLAS_OK(cublasSetStream(handle.h, nullptr));
  REQUIRE_CUDA_OK(cudaStreamDestroy(gemm_stream));
  REQUIRE_CUDA_OK(cudaStreamDestroy(copy_stream));
}

TEST_CASE("cublasGemmEx argument checks return the documented statuses and leave C alone", "[cuda][emulated]") {
  Handle handle;
  const Shape s{false, false, 4, 3, 5};
  DeviceBuffer da(s.a_count() * 4), db(s.b_count() * 4), dc(s.c_count() * 4), small(8);
  upload(da.p, random_floats(s.a_count(), 19));
  upload(db.p, random_floats(s.b_count(), 20));
  const std::vector<float> c(s.c_count(), 42.0f);
  upload(dc.p, c);
  const float one = 1.0f, zero = 0.0f;
  auto call = [&](cublasHandle_t h, cublasOperation_t ta, int m, int n, int k, const void* alpha, const void* a,
                  cudaDataType_t at, int lda, int ldb, int ldc, cudaDataType_t ct = CUDA_R_32F,
                  cublasComputeType_t compute = CUBLAS_COMPUTE_32F) {
    return cublasGemmEx(h, ta, CUBLAS_OP_N, m, n, k, alpha, a, at, lda, db.p, at, ldb, &zero, dc.p, ct, ldc, compute,
                        CUBLAS_GEMM_DEFAULT);
  };
  // The planted bug: lda below the rows of A as stored.
  CHECK(call(handle.h, CUBLAS_OP_N, s.m, s.n, s.k, &one, da.p, CUDA_R_32F, s.m - 1, s.ldb(), s.ldc()) ==
        CUBLAS_STATUS_INVALID_VALUE);
  // With transa = T, A is stored k × m: lda = m (enough for N) is too small.
  CHECK(call(handle.h, CUBLAS_OP_T, s.m, s.n, s.k, &one, da.p, CUDA_R_32F, s.m, s.ldb(), s.ldc()) ==
        CUBLAS_STATUS_INVALID_VALUE);
  CHECK(call(handle.h, CUBLAS_OP_N, s.m, s.n, s.k, &one, da.p, CUDA_R_32F, s.lda(), s.k - 1, s.ldc()) ==
        CUBLAS_STATUS_INVALID_VALUE);
  CHECK(call(handle.h, CUBLAS_OP_N, s.m, s.n, s.k, &one, da.p, CUDA_R_32F, s.lda(), s.ldb(), s.m - 1) ==
        CUBLAS_STATUS_INVALID_VALUE);
  CHECK(call(handle.h, CUBLAS_OP_N, -1, s.n, s.k, &one, da.p, CUDA_R_32F, s.lda(), s.ldb(), s.ldc()) ==
        CUBLAS_STATUS_INVALID_VALUE);
  CHECK(call(handle.h, CUBLAS_OP_N, s.m, s.n, -2, &one, da.p, CUDA_R_32F, s.lda(), s.ldb(), s.ldc()) ==
        CUBLAS_STATUS_INVALID_VALUE);
  CHECK(call(handle.h, static_cast<cublasOperation_t>(9), s.m, s.n, s.k, &one, da.p, CUDA_R_32F, s.lda(), s.ldb(),
             s.ldc()) == CUBLAS_STATUS_INVALID_VALUE);
  CHECK(call(handle.h, CUBLAS_OP_N, s.m, s.n, s.k, nullptr, da.p, CUDA_R_32F, s.lda(), s.ldb(), s.ldc()) ==
        CUBLAS_STATUS_INVALID_VALUE);
  // Type and compute combinations the library does not have (or the emulation does not compute).
  CHECK(call(handle.h, CUBLAS_OP_N, s.m, s.n, s.k, &one, da.p, CUDA_R_16F, s.lda(), s.ldb(), s.ldc(), CUDA_R_16F) ==
        CUBLAS_STATUS_NOT_SUPPORTED);
  CHECK(call(handle.h, CUBLAS_OP_N, s.m, s.n, s.k, &one, da.p, CUDA_R_32F, s.lda(), s.ldb(), s.ldc(), CUDA_R_16BF) ==
        CUBLAS_STATUS_NOT_SUPPORTED);
  CHECK(call(handle.h, CUBLAS_OP_N, s.m, s.n, s.k, &one, da.p, CUDA_R_16BF, s.lda(), s.ldb(), s.ldc(), CUDA_R_16BF,
             CUBLAS_COMPUTE_32F_FAST_TF32) == CUBLAS_STATUS_NOT_SUPPORTED);
  CHECK(call(handle.h, CUBLAS_OP_N, s.m, s.n, s.k, &one, da.p, CUDA_R_32F, s.lda(), s.ldb(), s.ldc(), CUDA_R_32F,
             CUBLAS_COMPUTE_64F) == CUBLAS_STATUS_NOT_SUPPORTED);
  // Operands outside live device memory (stricter than a GPU, which would fault): host memory,
  // an allocation too small for the extent, an offset that runs past the end.
  std::vector<float> host_a(s.a_count());
  CHECK(call(handle.h, CUBLAS_OP_N, s.m, s.n, s.k, &one, host_a.data(), CUDA_R_32F, s.lda(), s.ldb(), s.ldc()) ==
        CUBLAS_STATUS_INVALID_VALUE);
  CHECK(call(handle.h, CUBLAS_OP_N, s.m, s.n, s.k, &one, small.p, CUDA_R_32F, s.lda(), s.ldb(), s.ldc()) ==
        CUBLAS_STATUS_INVALID_VALUE);
  CHECK(call(handle.h, CUBLAS_OP_N, s.m, s.n, s.k, &one, da.as<float>(16), CUDA_R_32F, s.lda(), s.ldb(), s.ldc()) ==
        CUBLAS_STATUS_INVALID_VALUE);
  // An output overlapping an input (a GPU's result would depend on block scheduling).
  CHECK(cublasGemmEx(handle.h, CUBLAS_OP_N, CUBLAS_OP_N, s.m, s.n, s.n, &one, dc.p, CUDA_R_32F, s.ldc(), db.p,
                     CUDA_R_32F, s.ldb(), &zero, dc.p, CUDA_R_32F, s.ldc(), CUBLAS_COMPUTE_32F,
                     CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_INVALID_VALUE);
  // A handle that was never created, or was destroyed.
  cublasHandle_t dead = nullptr;
  BLAS_OK(cublasCreate(&dead));
  BLAS_OK(cublasDestroy(dead));
  CHECK(call(dead, CUBLAS_OP_N, s.m, s.n, s.k, &one, da.p, CUDA_R_32F, s.lda(), s.ldb(), s.ldc()) ==
        CUBLAS_STATUS_NOT_INITIALIZED);
  CHECK(call(nullptr, CUBLAS_OP_N, s.m, s.n, s.k, &one, da.p, CUDA_R_32F, s.lda(), s.ldb(), s.ldc()) ==
        CUBLAS_STATUS_NOT_INITIALIZED);
  CHECK(cublasDestroy(dead) == CUBLAS_STATUS_NOT_INITIALIZED);
  // Nothing was queued: C is untouched.
  REQUIRE_CUDA_OK(cudaDeviceSynchronize());
  CHECK(download<float>(dc.p, s.c_count()) == c);
  // Empty problems touch nothing and succeed; k = 0 with beta = 0 zeroes C without reading A.
  CHECK(call(handle.h, CUBLAS_OP_N, 0, s.n, s.k, &one, nullptr, CUDA_R_32F, 1, s.ldb(), 1) == CUBLAS_STATUS_SUCCESS);
  CHECK(call(handle.h, CUBLAS_OP_N, s.m, s.n, 0, &one, nullptr, CUDA_R_32F, s.lda(), 1, s.ldc()) ==
        CUBLAS_STATUS_SUCCESS);
  const auto zeroed = download<float>(dc.p, s.c_count());
  for (int j = 0; j < s.n; ++j)
    for (int i = 0; i < s.m; ++i) CHECK(zeroed[static_cast<size_t>(j) * s.ldc() + i] == 0.0f);

  CHECK(std::string(cublasGetStatusName(CUBLAS_STATUS_INVALID_VALUE)) == "CUBLAS_STATUS_INVALID_VALUE");
  CHECK(std::string(cublasGetStatusName(CUBLAS_STATUS_NOT_SUPPORTED)) == "CUBLAS_STATUS_NOT_SUPPORTED");
  CHECK(std::string(cublasGetStatusString(CUBLAS_STATUS_SUCCESS)).size() > 0);
}

TEST_CASE("planted bug: kernels/cuda's GEMM with a bad leading dimension is a diffuse::Error naming cuBLAS's status",
          "[cuda][emulated]") {
  // Row-major c[2, 3] = a[2, 4] · b[4, 3] with lda = 3 < 4: cuBLAS sees ldb = 3 < k.
  DeviceBuffer a(2 * 4 * 4), b(4 * 3 * 4), c(2 * 3 * 4);
  upload(a.p, random_floats(8, 21));
  upload(b.p, random_floats(12, 22));
  try {
    diffuse::kernels::cuda::gemm(diffuse::kernels::DenseType::f32, false, false, 2, 3, 4, 1.0f, a.p, 3, b.p, 3, 0.0f,
                                 c.p, 3, diffuse::cuda::device_memory(), diffuse::current_stream());
    FAIL("a GEMM with lda < k was accepted");
  } catch (const diffuse::Error& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK(what.find("CUBLAS_STATUS_INVALID_VALUE") != std::string::npos);
    CHECK(what.find("cublasGemmEx") != std::string::npos);
  }
}

TEST_CASE("cuBLAS handle settings: workspace alignment and memory, math mode, stream", "[cuda][emulated]") {
  Handle handle;
  DeviceBuffer ws(4096);
  BLAS_OK(cublasSetWorkspace(handle.h, ws.p, ws.bytes));
  // The documentation: the workspace must be 256-byte aligned.
  CHECK(cublasSetWorkspace(handle.h, ws.as<char>(64), 1024) == CUBLAS_STATUS_INVALID_VALUE);
  // Stricter: host memory, or more bytes than the allocation holds.
  std::vector<char> host(4096 + 256);
  void* host_aligned = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(host.data()) + 255) / 256 * 256);
  CHECK(cublasSetWorkspace(handle.h, host_aligned, 4096) == CUBLAS_STATUS_INVALID_VALUE);
  CHECK(cublasSetWorkspace(handle.h, ws.p, 8192) == CUBLAS_STATUS_INVALID_VALUE);
  CHECK(cublasSetWorkspace(handle.h, nullptr, 0) == CUBLAS_STATUS_SUCCESS);
  CHECK(cublasSetWorkspace(nullptr, ws.p, ws.bytes) == CUBLAS_STATUS_NOT_INITIALIZED);
  cublasMath_t math{};
  BLAS_OK(cublasGetMathMode(handle.h, &math));
  CHECK(math == CUBLAS_DEFAULT_MATH);
  BLAS_OK(cublasSetMathMode(handle.h, CUBLAS_PEDANTIC_MATH));
  BLAS_OK(cublasGetMathMode(handle.h, &math));
  CHECK(math == CUBLAS_PEDANTIC_MATH);
  CHECK(cublasSetMathMode(handle.h, static_cast<cublasMath_t>(5)) == CUBLAS_STATUS_INVALID_VALUE);
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(1);
  BLAS_OK(cublasGetStream(handle.h, &stream));
  CHECK(stream == nullptr);
  CHECK(cublasCreate(nullptr) == CUBLAS_STATUS_INVALID_VALUE);
}

// ---- cuBLASLt -----------------------------------------------------------------------------------

namespace {

// One cuBLASLt problem: descriptors for D[m × n] = op(A)·op(B) (+ bias), C = D in place unless
// `c_ld` differs, with destroy on scope exit.
struct LtProblem {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr, d = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  LtProblem(const Shape& s, cudaDataType_t type, cublasComputeType_t compute = CUBLAS_COMPUTE_32F, int c_ld = 0) {
    BLAS_OK(cublasLtMatmulDescCreate(&op, compute, CUDA_R_32F));
    const int32_t ta = op_of(s.ta), tb = op_of(s.tb);
    BLAS_OK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    BLAS_OK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    BLAS_OK(cublasLtMatrixLayoutCreate(&a, type, s.a_rows(), s.a_cols(), s.lda()));
    BLAS_OK(cublasLtMatrixLayoutCreate(&b, type, s.b_rows(), s.b_cols(), s.ldb()));
    BLAS_OK(cublasLtMatrixLayoutCreate(&c, type, s.m, s.n, c_ld ? c_ld : s.ldc()));
    BLAS_OK(cublasLtMatrixLayoutCreate(&d, type, s.m, s.n, s.ldc()));
    BLAS_OK(cublasLtMatmulPreferenceCreate(&pref));
  }
  ~LtProblem() {
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(d);
    cublasLtMatrixLayoutDestroy(c);
    cublasLtMatrixLayoutDestroy(b);
    cublasLtMatrixLayoutDestroy(a);
    cublasLtMatmulDescDestroy(op);
  }
  static int32_t op_of(bool t) { return t ? CUBLAS_OP_T : CUBLAS_OP_N; }
  void set_bias(const void* bias) {
    const uint32_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    BLAS_OK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
    BLAS_OK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  void set_max_workspace(uint64_t bytes) {
    BLAS_OK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &bytes,
                                                 sizeof(bytes)));
  }
  void set_alignment(uint32_t bytes) {
    for (const auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                            CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
      BLAS_OK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &bytes, sizeof(bytes)));
  }
  cublasStatus_t heuristic(cublasLtHandle_t h, cublasLtMatmulHeuristicResult_t* results, int requested, int* count) {
    return cublasLtMatmulAlgoGetHeuristic(h, op, a, b, c, d, pref, requested, results, count);
  }
};

}  // namespace

TEST_CASE("cublasLtMatmul with the bias epilogue matches a double GEMM, f32 and bf16, every transpose",
          "[cuda][emulated]") {
  LtHandle lt;
  DeviceBuffer workspace(1 << 20);
  for (const cudaDataType_t type : {CUDA_R_32F, CUDA_R_16BF})
    for (const bool ta : {false, true})
      for (const bool tb : {false, true}) {
        const bool bf16 = type == CUDA_R_16BF;
        INFO((bf16 ? "bf16" : "f32") << " transa " << ta << " transb " << tb);
        const Shape s{ta, tb, 5, 7, 9};
        const size_t elem = bf16 ? 2 : 4;
        const auto a = bf16 ? random_ints(s.a_count(), 23, 16) : random_floats(s.a_count(), 23);
        const auto b = bf16 ? random_ints(s.b_count(), 24, 16) : random_floats(s.b_count(), 24);
        const auto bias = bf16 ? random_ints(s.m, 25, 64) : random_floats(s.m, 25);
        DeviceBuffer da(s.a_count() * elem), db(s.b_count() * elem), dd(s.c_count() * elem), dbias(s.m * elem);
        if (bf16) {
          upload(da.p, to_bf16(a));
          upload(db.p, to_bf16(b));
          upload(dbias.p, to_bf16(bias));
        } else {
          upload(da.p, a);
          upload(db.p, b);
          upload(dbias.p, bias);
        }
        upload(dd.p, std::vector<uint8_t>(s.c_count() * elem, 0xFF));  // NaN in both types

        LtProblem p(s, type);
        p.set_bias(dbias.p);
        p.set_max_workspace(workspace.bytes);
        cublasLtMatmulHeuristicResult_t results[3] = {};
        int count = 0;
        BLAS_OK(p.heuristic(lt.h, results, 3, &count));
        REQUIRE(count >= 1);
        CHECK(results[0].state == CUBLAS_STATUS_SUCCESS);
        CHECK(results[0].workspaceSize > 0);  // the workspace path runs
        CHECK(results[0].workspaceSize <= workspace.bytes);
        for (int i = 0; i < count; ++i) {
          INFO("algorithm " << i << " of " << count);
          upload(dd.p, std::vector<uint8_t>(s.c_count() * elem, 0xFF));
          const float alpha = 1.0f, beta = 0.0f;
          BLAS_OK(cublasLtMatmul(lt.h, p.op, &alpha, da.p, p.a, db.p, p.b, &beta, dd.p, p.c, dd.p, p.d,
                                 &results[i].algo, workspace.p, workspace.bytes, nullptr));
          const auto want = reference(ta, tb, s.m, s.n, s.k, 1, a, s.lda(), b, s.ldb(), 0, {}, s.ldc(), &bias);
          if (bf16) {
            const auto got = download<uint16_t>(dd.p, s.c_count());
            for (int j = 0; j < s.n; ++j)
              for (int r = 0; r < s.m; ++r)
                CHECK(got[static_cast<size_t>(j) * s.ldc() + r] ==
                      float_to_bf16(static_cast<float>(want[static_cast<size_t>(j) * s.m + r])));
          } else {
            CHECK(max_error(download<float>(dd.p, s.c_count()), s.ldc(), want, s.m, s.n) < 1e-6);
          }
        }
      }
}

TEST_CASE("cublasLtMatmul out of place with beta: C read with its own ld, D written, and algo NULL runs the heuristic",
          "[cuda][emulated]") {
  LtHandle lt;
  const Shape s{false, true, 6, 4, 5};
  const int c_ld = s.m + 5;
  const auto a = random_floats(s.a_count(), 26), b = random_floats(s.b_count(), 27);
  const auto c = random_floats(static_cast<size_t>(c_ld) * s.n, 28);
  DeviceBuffer da(s.a_count() * 4), db(s.b_count() * 4), dc(c.size() * 4), dd(s.c_count() * 4), ws(1 << 16);
  upload(da.p, a);
  upload(db.p, b);
  upload(dc.p, c);
  upload(dd.p, std::vector<float>(s.c_count(), kNaN));
  LtProblem p(s, CUDA_R_32F, CUBLAS_COMPUTE_32F, c_ld);
  const float alpha = 0.25f, beta = 3.0f;
  BLAS_OK(cublasLtMatmul(lt.h, p.op, &alpha, da.p, p.a, db.p, p.b, &beta, dc.p, p.c, dd.p, p.d, nullptr, ws.p, ws.bytes,
                         nullptr));
  CHECK(max_error(download<float>(dd.p, s.c_count()), s.ldc(),
                  reference(false, true, s.m, s.n, s.k, alpha, a, s.lda(), b, s.ldb(), beta, c, c_ld), s.m, s.n) < 1e-6);
  CHECK(download<float>(dc.p, c.size()) == c);
  // In place with differing C and D layouts is refused.
  CHECK(cublasLtMatmul(lt.h, p.op, &alpha, da.p, p.a, db.p, p.b, &beta, dd.p, p.c, dd.p, p.d, nullptr, ws.p, ws.bytes,
                       nullptr) == CUBLAS_STATUS_INVALID_VALUE);
}

TEST_CASE("cuBLASLt workspace and alignment misuse returns the documented statuses", "[cuda][emulated]") {
  LtHandle lt;
  const Shape s{true, false, 6, 4, 6};  // every column 32 bytes, so the 16-byte-vector algorithm qualifies
  DeviceBuffer da(s.a_count() * 4 + 256), db(s.b_count() * 4), dd(s.c_count() * 4), dbias(s.m * 4 + 64), ws(1 << 16);
  upload(da.p, random_floats(s.a_count() + 64, 29));
  upload(db.p, random_floats(s.b_count(), 30));
  upload(dbias.p, random_floats(s.m + 16, 31));
  LtProblem p(s, CUDA_R_32F);
  p.set_bias(dbias.p);
  const float alpha = 1.0f, beta = 0.0f;
  cublasLtMatmulHeuristicResult_t r[3] = {};
  int count = 0;

  // The default preference allows no workspace: only the workspace-free algorithm.
  BLAS_OK(p.heuristic(lt.h, r, 3, &count));
  REQUIRE(count == 1);
  CHECK(r[0].workspaceSize == 0);
  BLAS_OK(cublasLtMatmul(lt.h, p.op, &alpha, da.p, p.a, db.p, p.b, &beta, dd.p, p.d, dd.p, p.d, &r[0].algo, nullptr, 0,
                         nullptr));

  p.set_max_workspace(ws.bytes);
  BLAS_OK(p.heuristic(lt.h, r, 3, &count));
  REQUIRE(count == 3);
  CHECK(r[0].workspaceSize > r[1].workspaceSize);
  CHECK(r[1].workspaceSize > 0);
  CHECK(r[2].workspaceSize == 0);
  // Less workspace than the algorithm needs (documented: INVALID_VALUE).
  CHECK(cublasLtMatmul(lt.h, p.op, &alpha, da.p, p.a, db.p, p.b, &beta, dd.p, p.d, dd.p, p.d, &r[0].algo, ws.p,
                       r[0].workspaceSize - 256, nullptr) == CUBLAS_STATUS_INVALID_VALUE);
  // A workspace that is not 256-byte aligned, NULL with a size, or not device memory.
  CHECK(cublasLtMatmul(lt.h, p.op, &alpha, da.p, p.a, db.p, p.b, &beta, dd.p, p.d, dd.p, p.d, &r[0].algo,
                       ws.as<char>(64), r[0].workspaceSize, nullptr) == CUBLAS_STATUS_INVALID_VALUE);
  CHECK(cublasLtMatmul(lt.h, p.op, &alpha, da.p, p.a, db.p, p.b, &beta, dd.p, p.d, dd.p, p.d, &r[0].algo, nullptr,
                       r[0].workspaceSize, nullptr) == CUBLAS_STATUS_INVALID_VALUE);
  std::vector<char> host_ws(r[0].workspaceSize + 256);
  void* host_aligned = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(host_ws.data()) + 255) / 256 * 256);
  CHECK(cublasLtMatmul(lt.h, p.op, &alpha, da.p, p.a, db.p, p.b, &beta, dd.p, p.d, dd.p, p.d, &r[0].algo, host_aligned,
                       r[0].workspaceSize, nullptr) == CUBLAS_STATUS_INVALID_VALUE);
  // The heuristic assumed 256-byte alignment (the default preference); A at +4 bytes breaks the
  // vector-load algorithm's assumption.
  CHECK(cublasLtMatmul(lt.h, p.op, &alpha, da.as<float>(4), p.a, db.p, p.b, &beta, dd.p, p.d, dd.p, p.d, &r[0].algo,
                       ws.p, ws.bytes, nullptr) == CUBLAS_STATUS_INVALID_VALUE);
  // Declaring the real alignment excludes that algorithm; the element-aligned ones still run.
  const uint32_t four = 4;
  BLAS_OK(cublasLtMatmulPreferenceSetAttribute(p.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &four, sizeof(four)));
  BLAS_OK(p.heuristic(lt.h, r, 3, &count));
  CHECK(count == 2);
  BLAS_OK(cublasLtMatmul(lt.h, p.op, &alpha, da.as<float>(4), p.a, db.p, p.b, &beta, dd.p, p.d, dd.p, p.d, &r[0].algo,
                         ws.p, ws.bytes, nullptr));
  // The heuristic reads the bias pointer's alignment from the descriptor.
  p.set_alignment(256);
  p.set_bias(dbias.as<float>(4));
  BLAS_OK(p.heuristic(lt.h, r, 3, &count));
  CHECK(count == 2);
  // Alignment below the element size: no algorithm fits (NOT_SUPPORTED, no results).
  p.set_alignment(2);
  CHECK(p.heuristic(lt.h, r, 3, &count) == CUBLAS_STATUS_NOT_SUPPORTED);
  CHECK(count == 0);
  REQUIRE_CUDA_OK(cudaDeviceSynchronize());
}

TEST_CASE("cuBLASLt descriptor and configuration misuse returns the documented statuses", "[cuda][emulated]") {
  LtHandle lt;
  const Shape s{false, false, 4, 4, 4};
  LtProblem p(s, CUDA_R_32F);
  cublasLtMatmulHeuristicResult_t r[1] = {};
  int count = 0;
  // Attributes: wrong size, NULL buffer, unknown attribute; a value reads back.
  const int32_t trans = CUBLAS_OP_T;
  CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans, 8) == CUBLAS_STATUS_INVALID_VALUE);
  CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, nullptr, 4) == CUBLAS_STATUS_INVALID_VALUE);
  CHECK(cublasLtMatmulDescSetAttribute(p.op, static_cast<cublasLtMatmulDescAttributes_t>(9999), &trans, 4) ==
        CUBLAS_STATUS_INVALID_VALUE);
  uint32_t epilogue = 0;
  size_t written = 0;
  BLAS_OK(cublasLtMatmulDescGetAttribute(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue), &written));
  CHECK(epilogue == CUBLASLT_EPILOGUE_DEFAULT);
  CHECK(written == sizeof(epilogue));
  BLAS_OK(cublasLtMatmulDescGetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, nullptr, 0, &written));
  CHECK(written == sizeof(void*));
  int64_t ld = 0;
  BLAS_OK(cublasLtMatrixLayoutGetAttribute(p.a, CUBLASLT_MATRIX_LAYOUT_LD, &ld, sizeof(ld), &written));
  CHECK(ld == s.lda());

  // Heuristic arguments.
  CHECK(p.heuristic(lt.h, r, 0, &count) == CUBLAS_STATUS_INVALID_VALUE);
  CHECK(p.heuristic(nullptr, r, 1, &count) == CUBLAS_STATUS_NOT_INITIALIZED);
  // Layouts that disagree with the transposes: A declared k × m while TRANSA = N with m != k.
  cublasLtMatrixLayout_t wrong = nullptr;
  BLAS_OK(cublasLtMatrixLayoutCreate(&wrong, CUDA_R_32F, s.m, s.n + 1, s.ldc()));
  CHECK(cublasLtMatmulAlgoGetHeuristic(lt.h, p.op, p.a, p.b, p.c, wrong, p.pref, 1, r, &count) ==
        CUBLAS_STATUS_INVALID_VALUE);
  BLAS_OK(cublasLtMatrixLayoutDestroy(wrong));
  CHECK(cublasLtMatrixLayoutDestroy(wrong) == CUBLAS_STATUS_INVALID_VALUE);  // twice
  // A leading dimension below the rows.
  cublasLtMatrixLayout_t short_ld = nullptr;
  BLAS_OK(cublasLtMatrixLayoutCreate(&short_ld, CUDA_R_32F, s.m, s.k, s.m - 1));
  CHECK(cublasLtMatmulAlgoGetHeuristic(lt.h, p.op, short_ld, p.b, p.c, p.d, p.pref, 1, r, &count) ==
        CUBLAS_STATUS_INVALID_VALUE);
  BLAS_OK(cublasLtMatrixLayoutDestroy(short_ld));
  // Epilogues and types the emulation does not compute.
  const uint32_t gelu = CUBLASLT_EPILOGUE_GELU_BIAS;
  BLAS_OK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &gelu, sizeof(gelu)));
  CHECK(p.heuristic(lt.h, r, 1, &count) == CUBLAS_STATUS_NOT_SUPPORTED);
  const uint32_t plain = CUBLASLT_EPILOGUE_DEFAULT;
  BLAS_OK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &plain, sizeof(plain)));
  BLAS_OK(p.heuristic(lt.h, r, 1, &count));
  {
    LtProblem f16(s, CUDA_R_16F);  // (not `half`: that is cuda_fp16.h's type)
    CHECK(f16.heuristic(lt.h, r, 1, &count) == CUBLAS_STATUS_NOT_SUPPORTED);
    LtProblem tf32_bf16(s, CUDA_R_16BF, CUBLAS_COMPUTE_32F_FAST_TF32);
    CHECK(tf32_bf16.heuristic(lt.h, r, 1, &count) == CUBLAS_STATUS_NOT_SUPPORTED);
  }
  // An algorithm chosen for one configuration used with another.
  DeviceBuffer da(s.a_count() * 4), db(s.b_count() * 4), dd(s.c_count() * 4);
  upload(da.p, random_floats(s.a_count(), 32));
  upload(db.p, random_floats(s.b_count(), 33));
  const float alpha = 1.0f, beta = 0.0f;
  cublasLtMatmulAlgo_t bogus{};
  CHECK(cublasLtMatmul(lt.h, p.op, &alpha, da.p, p.a, db.p, p.b, &beta, dd.p, p.d, dd.p, p.d, &bogus, nullptr, 0,
                       nullptr) == CUBLAS_STATUS_INVALID_VALUE);
  BLAS_OK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans, sizeof(trans)));
  CHECK(cublasLtMatmul(lt.h, p.op, &alpha, da.p, p.a, db.p, p.b, &beta, dd.p, p.d, dd.p, p.d, &r[0].algo, nullptr, 0,
                       nullptr) == CUBLAS_STATUS_INVALID_VALUE);
  // The bias epilogue with no bias pointer.
  const int32_t no_trans = CUBLAS_OP_N;
  BLAS_OK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &no_trans, sizeof(no_trans)));
  p.set_bias(nullptr);
  CHECK(cublasLtMatmul(lt.h, p.op, &alpha, da.p, p.a, db.p, p.b, &beta, dd.p, p.d, dd.p, p.d, nullptr, nullptr, 0,
                       nullptr) == CUBLAS_STATUS_INVALID_VALUE);
  // Operand outside device memory; D overlapping A.
  std::vector<float> host(s.a_count());
  p.set_bias(dd.p);
  CHECK(cublasLtMatmul(lt.h, p.op, &alpha, da.p, p.a, db.p, p.b, &beta, da.p, p.d, da.p, p.d, nullptr, nullptr, 0,
                       nullptr) == CUBLAS_STATUS_INVALID_VALUE);
  CHECK(cublasLtMatmul(lt.h, p.op, &alpha, host.data(), p.a, db.p, p.b, &beta, dd.p, p.d, dd.p, p.d, nullptr, nullptr,
                       0, nullptr) == CUBLAS_STATUS_INVALID_VALUE);
  CHECK(std::string(cublasLtGetStatusName(CUBLAS_STATUS_NOT_SUPPORTED)) == "CUBLAS_STATUS_NOT_SUPPORTED");
  REQUIRE_CUDA_OK(cudaDeviceSynchronize());
}

TEST_CASE("cuBLASLt strided batches and TF32", "[cuda][emulated]") {
  LtHandle lt;
  const Shape s{false, false, 3, 5, 33};
  const int batch = 2;
  const int64_t sa = static_cast<int64_t>(s.a_count()), sb = static_cast<int64_t>(s.b_count()),
                sd = static_cast<int64_t>(s.c_count());
  const auto a = random_floats(sa * batch, 34), b = random_floats(sb * batch, 35);
  DeviceBuffer da(a.size() * 4), db(b.size() * 4), dd(sd * batch * 4), ws(1 << 16);
  upload(da.p, a);
  upload(db.p, b);
  for (const bool tf32 : {false, true}) {
    INFO((tf32 ? "TF32" : "f32"));
    LtProblem p(s, CUDA_R_32F, tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F);
    const int32_t n = batch;
    for (auto [layout, stride] : {std::pair{p.a, sa}, std::pair{p.b, sb}, std::pair{p.c, sd}, std::pair{p.d, sd}}) {
      BLAS_OK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &n, sizeof(n)));
      BLAS_OK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                               sizeof(stride)));
    }
    p.set_max_workspace(ws.bytes);
    cublasLtMatmulHeuristicResult_t r[1] = {};
    int count = 0;
    BLAS_OK(p.heuristic(lt.h, r, 1, &count));
    upload(dd.p, std::vector<float>(static_cast<size_t>(sd) * batch, kNaN));
    const float alpha = 1.0f, beta = 0.0f;
    BLAS_OK(cublasLtMatmul(lt.h, p.op, &alpha, da.p, p.a, db.p, p.b, &beta, dd.p, p.c, dd.p, p.d, &r[0].algo, ws.p,
                           ws.bytes, nullptr));
    const auto got = download<float>(dd.p, static_cast<size_t>(sd) * batch);
    for (int i = 0; i < batch; ++i) {
      const std::vector<float> ai(a.begin() + i * sa, a.begin() + (i + 1) * sa);
      const std::vector<float> bi(b.begin() + i * sb, b.begin() + (i + 1) * sb);
      const std::vector<float> gi(got.begin() + i * sd, got.begin() + (i + 1) * sd);
      const double e = max_error(gi, s.ldc(), reference(false, false, s.m, s.n, s.k, 1, ai, s.lda(), bi, s.ldb(), 0, {},
                                                        s.ldc()),
                                 s.m, s.n);
      if (tf32) {
        CHECK(e < 2.0 * std::ldexp(1.0, -11) * s.k);
        CHECK(e > 1e-5);
      } else {
        CHECK(e < 1e-6);
      }
    }
  }
}

TEST_CASE("cuBLASLt pointer mode DEVICE reads alpha and beta when the work runs", "[cuda][emulated]") {
  LtHandle lt;
  cudaStream_t stream = nullptr;
  REQUIRE_CUDA_OK(cudaStreamCreate(&stream));
  const Shape s{true, true, 3, 4, 5};
  const auto a = random_floats(s.a_count(), 36), b = random_floats(s.b_count(), 37), c = random_floats(s.c_count(), 38);
  DeviceBuffer da(s.a_count() * 4), db(s.b_count() * 4), dd(s.c_count() * 4), scalars(8);
  upload(da.p, a);
  upload(db.p, b);
  upload(dd.p, c);
  upload(scalars.p, std::vector<float>{kNaN, kNaN});
  LtProblem p(s, CUDA_R_32F);
  const int32_t mode = CUBLASLT_POINTER_MODE_DEVICE;
  BLAS_OK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_POINTER_MODE, &mode, sizeof(mode)));
  const float host_scalars[2] = {-1.5f, 0.5f};
  REQUIRE_CUDA_OK(cudaMemcpyAsync(scalars.p, host_scalars, sizeof(host_scalars), cudaMemcpyHostToDevice, stream));
  BLAS_OK(cublasLtMatmul(lt.h, p.op, scalars.as<float>(), da.p, p.a, db.p, p.b, scalars.as<float>(4), dd.p, p.c, dd.p,
                         p.d, nullptr, nullptr, 0, stream));
  REQUIRE_CUDA_OK(cudaStreamSynchronize(stream));
  CHECK(max_error(download<float>(dd.p, s.c_count()), s.ldc(),
                  reference(true, true, s.m, s.n, s.k, -1.5, a, s.lda(), b, s.ldb(), 0.5, c, s.ldc()), s.m, s.n) < 1e-6);
  // Host scalars in DEVICE mode are refused.
  CHECK(cublasLtMatmul(lt.h, p.op, host_scalars, da.p, p.a, db.p, p.b, host_scalars + 1, dd.p, p.c, dd.p, p.d, nullptr,
                       nullptr, 0, stream) == CUBLAS_STATUS_INVALID_VALUE);
  REQUIRE_CUDA_OK(cudaStreamDestroy(stream));
}
