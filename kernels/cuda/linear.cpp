// The CUDA linear family behind kernels/linear.h: y = x·wᵀ + b forward and backward on cuBLAS
// (kernels/cuda/gemm.cpp) and cuBLASLt. The forward is one cuBLASLt matmul whose epilogue adds the
// bias and whose C operand (beta = 1) is the residual when there is one: y = x·wᵀ + b (+ r) in one
// pass over y, rounded once. Its plan (descriptors + chosen algorithm) is built once per shape,
// dtype, TF32 setting, residual or not and pointer alignment, and kept for the process. Without a
// bias, or where cuBLASLt has no kernel, a GEMM and one add_bias_and_residual pass do the same.
#include <atomic>
#include <map>
#include <tuple>

#include "kernels/cuda/gemm_internal.h"
#include "kernels/cuda/library_handles.h"
#include "kernels/cuda/library_status.h"
#include "kernels/linear.h"

namespace diffuse::kernels::cuda {

namespace {

std::atomic<bool> g_linear_use_lt{true};

// Largest power of two (up to 256) dividing the address: what cuBLASLt may assume about it.
uint32_t alignment_of(const void* p) {
  auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && a % align != 0) align /= 2;
  return align;
}

// ---- cuBLASLt linear forward with the bias epilogue ---------------------------------------------

struct LtPlan {
  bool usable = false;  // false: cuBLASLt has no kernel for this case; use GEMM + add_row_bias
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

using LtKey =
    std::tuple<int64_t, int64_t, int64_t, DenseType, bool, uint32_t, uint32_t, uint32_t, uint32_t, bool, uint32_t>;

// Column-major view: D [out × rows] = op(A)·B with A = w stored [in × out] (TRANSA = T),
// B = x stored [in × rows]; the bias (length out = D's row count) is added to every column; C
// (the residual, beta = 1) has D's layout.
LtPlan& lt_plan(const LinearDesc& d, DenseType t, const void* x, const void* w, const void* bias, const void* y,
                const void* residual, Stream stream) {
  static auto* plans = new std::map<LtKey, LtPlan>();
  const LtKey key{d.rows,           d.in,           d.out,          t,
                  allow_tf32(),     alignment_of(x), alignment_of(w), alignment_of(y),
                  alignment_of(bias), residual != nullptr, residual ? alignment_of(residual) : alignment_of(y)};
  auto found = plans->find(key);
  if (found != plans->end()) return found->second;

  const cudaDataType_t type = cuda_type(t);
  const int rows = cublas_int(d.rows, "rows"), in = cublas_int(d.in, "in"), out = cublas_int(d.out, "out");
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
  const uint32_t align_a = std::get<6>(key), align_b = std::get<5>(key), align_d = std::get<7>(key),
                 align_c = std::get<10>(key);
  DIFFUSE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                            &max_workspace, sizeof(max_workspace)));
  DIFFUSE_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof(align_a)));
  DIFFUSE_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof(align_b)));
  DIFFUSE_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c, sizeof(align_c)));
  DIFFUSE_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_d, sizeof(align_d)));
  cublasLtMatmulHeuristicResult_t result{};
  int count = 0;
  const cublasStatus_t status =
      cublasLtMatmulAlgoGetHeuristic(cublaslt_handle(stream), p.op, p.a, p.b, p.d, p.d, pref, 1, &result, &count);
  cublasLtMatmulPreferenceDestroy(pref);
  if (status == CUBLAS_STATUS_SUCCESS && count > 0 && result.state == CUBLAS_STATUS_SUCCESS) {
    p.usable = true;
    p.algo = result.algo;
  } else if (status != CUBLAS_STATUS_NOT_SUPPORTED && status != CUBLAS_STATUS_SUCCESS) {
    DIFFUSE_CUBLAS_CHECK(status);
  }
  return plans->emplace(key, p).first->second;
}

// True when cuBLASLt computed y = x·wᵀ + bias (+ residual); false when it has no kernel for the case.
bool linear_forward_lt(const LinearDesc& d, DenseType t, const void* x, const void* w, const void* bias, void* y,
                       const void* residual, const DeviceMemory& mem, Stream stream) {
  LtPlan& p = lt_plan(d, t, x, w, bias, y, residual, stream);
  if (!p.usable) return false;
  DIFFUSE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  const float alpha = 1.0f, beta = residual ? 1.0f : 0.0f;
  const void* c = residual ? residual : y;
  const cublasStatus_t status = cublasLtMatmul(cublaslt_handle(stream), p.op, &alpha, w, p.a, x, p.b, &beta, c, p.d, y,
                                               p.d, &p.algo, blas_workspace(mem), blas_workspace_bytes(),
                                               static_cast<cudaStream_t>(stream));
  if (status == CUBLAS_STATUS_NOT_SUPPORTED) {
    p.usable = false;
    return false;
  }
  DIFFUSE_CUBLAS_CHECK(status);
  return true;
}

}  // namespace

void set_linear_use_lt(bool on) { g_linear_use_lt.store(on); }

void linear_forward(const LinearDesc& d, DenseType t, const void* x, const void* w, const void* bias, void* y,
                    const DeviceMemory& mem, Stream stream, const void* residual) {
  if (d.rows == 0 || d.out == 0) return;
  if (bias && d.in > 0 && g_linear_use_lt.load() && linear_forward_lt(d, t, x, w, bias, y, residual, mem, stream))
    return;
  // y[rows, out] = x[rows, in] · w[out, in]ᵀ (+ bias) (+ residual)
  gemm(t, false, true, d.rows, d.out, d.in, 1.0f, x, d.in, w, d.in, 0.0f, y, d.out, mem, stream);
  add_bias_and_residual(t, d.rows, d.out, bias, residual, y, mem, stream);
}

void linear_backward(const LinearDesc& d, DenseType t, const void* x, const void* w, const void* dy, void* dx,
                     void* dw, void* dbias, const DeviceMemory& mem, Stream stream) {
  // dx[rows, in] = dy[rows, out] · w[out, in]
  if (dx) gemm(t, false, false, d.rows, d.in, d.out, 1.0f, dy, d.out, w, d.in, 0.0f, dx, d.in, mem, stream);
  // dw[out, in] = dy[rows, out]ᵀ · x[rows, in]
  if (dw) gemm(t, true, false, d.out, d.in, d.rows, 1.0f, dy, d.out, x, d.in, 0.0f, dw, d.in, mem, stream);
  if (dbias) column_sum(t, d.rows, d.out, dy, dbias, mem, stream);
}

}  // namespace diffuse::kernels::cuda
