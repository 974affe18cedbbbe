// cuBLAS and cuBLASLt behind nn/cuda/blas.h. Row-major matrices reach column-major cuBLAS as
// their transposes: row-major c = op(a)·op(b) is column-major cᵀ = op(b)ᵀ·op(a)ᵀ, i.e. the same
// call with a and b (and m and n) swapped and the transpose flags unchanged.
// The linear forward's cuBLASLt plan (descriptors + chosen algorithm) is built once per shape,
// dtype, TF32 setting and pointer alignment, and kept for the process.
#include "nn/cuda/blas.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/bf16.h"
#include "nn/cuda/caching_allocator.h"
#include "nn/cuda/check.h"
#include "nn/cuda/handles.h"

namespace diffuse::cuda {

namespace {

std::atomic<bool> g_allow_tf32{false};
std::atomic<bool> g_linear_use_lt{true};

cudaDataType_t cuda_type(DType t) {
  if (t == DType::f32) return CUDA_R_32F;
  if (t == DType::bf16) return CUDA_R_16BF;
  throw Error(std::string("cuBLAS: unsupported dtype ") + dtype_name(t) + " (CUDA GEMMs take f32 or bf16)");
}

cublasComputeType_t compute_type(DType t) {
  return t == DType::f32 && g_allow_tf32.load() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
}

int to_int(int64_t v, const char* what) {
  if (v < 0 || v > INT_MAX)
    throw Error(std::string("cuBLAS: ") + what + " = " + std::to_string(v) + " does not fit cuBLAS's 32-bit sizes");
  return static_cast<int>(v);
}

// Largest power of two (up to 256) dividing the address: what cuBLASLt may assume about it.
uint32_t alignment_of(const void* p) {
  auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && a % align != 0) align /= 2;
  return align;
}

// A device vector of at least n ones in dtype t, grown by doubling and kept for the process.
// Replacing it is safe while queued work still reads the old one: the old block is only reused
// by work queued after it. The two vectors are static objects constructed after the caching
// allocator, so their destructors return the blocks before the allocator's exit teardown frees
// its cache (caching_allocator.cpp).
const void* ones(DType t, int64_t n) {
  struct Ones {
    Ones() { caching_allocator(); }  // the allocator exists before this object is complete
    DeviceBuffer buffer;
    int64_t count = 0;
  };
  static Ones f32;
  static Ones bf16;
  Ones& o = t == DType::f32 ? f32 : bf16;
  if (o.count < n) {
    const int64_t count = std::max<int64_t>({n, 2 * o.count, 4096});
    const size_t bytes = static_cast<size_t>(count) * dtype_size(t);
    std::vector<float> host_f32;
    std::vector<uint16_t> host_bf16;
    const void* host = nullptr;
    if (t == DType::f32) {
      host_f32.assign(static_cast<size_t>(count), 1.0f);
      host = host_f32.data();
    } else {
      host_bf16.assign(static_cast<size_t>(count), kernels::float_to_bf16(1.0f));
      host = host_bf16.data();
    }
    DeviceBuffer buffer(bytes);
    caching_allocator().copy(buffer.data(), Device::cuda, host, Device::cpu, bytes);
    o.buffer = std::move(buffer);
    o.count = count;
  }
  return o.buffer.data();
}

void zero(void* p, size_t bytes) {
  if (bytes) DIFFUSE_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream()));
}

// ---- cuBLASLt linear forward with the bias epilogue ---------------------------------------------

struct LtPlan {
  bool usable = false;  // false: cuBLASLt has no kernel for this case; use GEMM + add_row_bias
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

using LtKey = std::tuple<int64_t, int64_t, int64_t, DType, bool, uint32_t, uint32_t, uint32_t, uint32_t>;

// Column-major view: D [out × rows] = op(A)·B with A = w stored [in × out] (TRANSA = T),
// B = x stored [in × rows]; the bias (length out = D's row count) is added to every column.
LtPlan& lt_plan(const kernels::LinearDesc& d, DType t, const void* x, const void* w, const void* bias,
                const void* y) {
  static auto* plans = new std::map<LtKey, LtPlan>();
  const LtKey key{d.rows, d.in, d.out, t, g_allow_tf32.load(), alignment_of(x), alignment_of(w), alignment_of(y),
                  alignment_of(bias)};
  auto found = plans->find(key);
  if (found != plans->end()) return found->second;

  const cudaDataType_t type = cuda_type(t);
  const int rows = to_int(d.rows, "rows"), in = to_int(d.in, "in"), out = to_int(d.out, "out");
  LtPlan p;
  DIFFUSE_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, compute_type(t), CUDA_R_32F));
  const int32_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  const uint32_t epilogue = CUBLASLT_EPILOGUE_BIAS;
  DIFFUSE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
  DIFFUSE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
  DIFFUSE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
  // The heuristic reads the bias pointer's alignment, so set it before asking.
  DIFFUSE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  DIFFUSE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, type, in, out, in));
  DIFFUSE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, type, in, rows, in));
  DIFFUSE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.d, type, out, rows, out));

  cublasLtMatmulPreference_t pref = nullptr;
  DIFFUSE_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t max_workspace = blas_workspace_bytes();
  const uint32_t align_a = std::get<6>(key), align_b = std::get<5>(key), align_d = std::get<7>(key);
  DIFFUSE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                            &max_workspace, sizeof(max_workspace)));
  DIFFUSE_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof(align_a)));
  DIFFUSE_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof(align_b)));
  DIFFUSE_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_d, sizeof(align_d)));
  DIFFUSE_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_d, sizeof(align_d)));
  cublasLtMatmulHeuristicResult_t result{};
  int count = 0;
  const cublasStatus_t status =
      cublasLtMatmulAlgoGetHeuristic(cublaslt_handle(), p.op, p.a, p.b, p.d, p.d, pref, 1, &result, &count);
  cublasLtMatmulPreferenceDestroy(pref);
  if (status == CUBLAS_STATUS_SUCCESS && count > 0 && result.state == CUBLAS_STATUS_SUCCESS) {
    p.usable = true;
    p.algo = result.algo;
  } else if (status != CUBLAS_STATUS_NOT_SUPPORTED && status != CUBLAS_STATUS_SUCCESS) {
    DIFFUSE_CUBLAS_CHECK(status);
  }
  return plans->emplace(key, p).first->second;
}

// True when cuBLASLt computed y = x·wᵀ + bias; false when it has no kernel for the case.
bool linear_forward_lt(const kernels::LinearDesc& d, DType t, const void* x, const void* w, const void* bias,
                       void* y) {
  LtPlan& p = lt_plan(d, t, x, w, bias, y);
  if (!p.usable) return false;
  DIFFUSE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  const float alpha = 1.0f, beta = 0.0f;
  const cublasStatus_t status = cublasLtMatmul(cublaslt_handle(), p.op, &alpha, w, p.a, x, p.b, &beta, y, p.d, y, p.d,
                                               &p.algo, blas_workspace(), blas_workspace_bytes(), stream());
  if (status == CUBLAS_STATUS_NOT_SUPPORTED) {
    p.usable = false;
    return false;
  }
  DIFFUSE_CUBLAS_CHECK(status);
  return true;
}

void require_cuda(const char* op, const Tensor& t, DType dtype, const char* name) {
  if (!t.defined()) return;
  if (t.device() != Device::cuda || t.dtype() != dtype)
    throw Error(std::string(op) + ": " + name + " is " + t.describe() + ", expected " + dtype_name(dtype) + " cuda");
}

}  // namespace

void set_allow_tf32(bool on) { g_allow_tf32.store(on); }
bool allow_tf32() { return g_allow_tf32.load(); }
void set_linear_use_lt(bool on) { g_linear_use_lt.store(on); }

void gemm(DType dtype, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const void* a,
          int64_t lda, const void* b, int64_t ldb, float beta, void* c, int64_t ldc) {
  const cudaDataType_t type = cuda_type(dtype);
  if (m == 0 || n == 0) return;
  if (k == 0) {
    // An empty sum: only the overwrite the ops need (beta = 0, contiguous c) is supported.
    if (beta != 0.0f || ldc != n) throw Error("cuBLAS gemm: k = 0 needs beta = 0 and a contiguous c");
    zero(c, static_cast<size_t>(m * n) * dtype_size(dtype));
    return;
  }
  DIFFUSE_CUBLAS_CHECK(cublasGemmEx(cublas_handle(), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                    trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, to_int(n, "n"), to_int(m, "m"), to_int(k, "k"),
                                    &alpha, b, type, to_int(ldb, "ldb"), a, type, to_int(lda, "lda"), &beta, c, type,
                                    to_int(ldc, "ldc"), compute_type(dtype), CUBLAS_GEMM_DEFAULT));
}

void add_row_bias(DType dtype, int64_t rows, int64_t cols, const void* bias, void* y) {
  if (rows == 0 || cols == 0) return;
  // y[rows, cols] += ones[rows, 1] · bias[1, cols]
  gemm(dtype, false, false, rows, cols, 1, 1.0f, ones(dtype, rows), 1, bias, cols, 1.0f, y, cols);
}

void column_sum(DType dtype, int64_t rows, int64_t cols, const void* m, void* out) {
  if (cols == 0) return;
  // out[1, cols] = ones[1, rows] · m[rows, cols]  (rows = 0 gives zeros)
  gemm(dtype, false, false, 1, cols, rows, 1.0f, ones(dtype, std::max<int64_t>(rows, 1)), rows, m, cols, 0.0f, out,
       cols);
}

void linear_forward(const kernels::LinearDesc& d, const Tensor& x, const Tensor& w, const Tensor& bias,
                    const Tensor& y) {
  const DType t = x.dtype();
  require_cuda("linear", w, t, "w");
  require_cuda("linear", bias, t, "bias");
  require_cuda("linear", y, t, "y");
  if (d.rows == 0 || d.out == 0) return;
  const void* b = bias.defined() ? bias.raw() : nullptr;
  if (b && d.in > 0 && g_linear_use_lt.load() && linear_forward_lt(d, t, x.raw(), w.raw(), b, y.raw())) return;
  // y[rows, out] = x[rows, in] · w[out, in]ᵀ (+ bias)
  gemm(t, false, true, d.rows, d.out, d.in, 1.0f, x.raw(), d.in, w.raw(), d.in, 0.0f, y.raw(), d.out);
  if (b) add_row_bias(t, d.rows, d.out, b, y.raw());
}

void linear_backward(const kernels::LinearDesc& d, const Tensor& x, const Tensor& w, const Tensor& dy,
                     const Tensor& dx, const Tensor& dw, const Tensor& dbias) {
  const DType t = x.dtype();
  require_cuda("linear backward", w, t, "w");
  require_cuda("linear backward", dy, t, "dy");
  require_cuda("linear backward", dx, t, "dx");
  require_cuda("linear backward", dw, t, "dw");
  require_cuda("linear backward", dbias, t, "dbias");
  // dx[rows, in] = dy[rows, out] · w[out, in]
  if (dx.defined()) gemm(t, false, false, d.rows, d.in, d.out, 1.0f, dy.raw(), d.out, w.raw(), d.in, 0.0f, dx.raw(), d.in);
  // dw[out, in] = dy[rows, out]ᵀ · x[rows, in]
  if (dw.defined()) gemm(t, true, false, d.out, d.in, d.rows, 1.0f, dy.raw(), d.out, x.raw(), d.in, 0.0f, dw.raw(), d.in);
  if (dbias.defined()) column_sum(t, d.rows, d.out, dy.raw(), dbias.raw());
}

}  // namespace diffuse::cuda
