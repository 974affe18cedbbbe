// The emulated device's cuBLAS: the functions of cublas_v2.h that diffuse calls (kernels/cuda/,
// benchmarks), with the toolkit's own signatures and symbol names (cublas_v2.h maps cublasCreate
// to cublasCreate_v2 and so on), so host code compiles unchanged and links here instead of
// libcublas in the -DDIFFUSE_CUDA=EMULATED build.
//
// Every call checks its arguments as the cuBLAS documentation states them and returns the
// documented status; where a real GPU would silently read garbage or fault later (an operand that
// is not inside a live device allocation for the extent the call touches, a host pointer where a
// device pointer belongs or the reverse) the emulation refuses the call with
// CUBLAS_STATUS_INVALID_VALUE and says why on stderr. The GEMM itself is queued on the handle's
// stream and runs on the CPU only when the host synchronises (gemm_reference.h says how it
// rounds), so a host that reads the result too early sees the old contents, as on a GPU.
#include <cublas_v2.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include <cblas.h>

#include "kernels/bf16.h"
#include "kernels/emulated_device/device.h"
#include "kernels/emulated_device/gemm_reference.h"
#include "kernels/single_threaded_blas.h"

namespace ed = diffuse::emulated_device;
namespace blas = diffuse::emulated_device::blas;

// The handle's state. cublas_api.h declares the struct and leaves it to the library.
struct cublasContext {
  cudaStream_t stream = nullptr;
  void* workspace = nullptr;  // a user workspace from cublasSetWorkspace, else the library's own
  size_t workspace_bytes = 0;
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
  cublasPointerMode_t pointer_mode = CUBLAS_POINTER_MODE_HOST;
};

namespace diffuse::emulated_device::blas {

// ---- shared helpers (gemm_reference.h) ----------------------------------------------------------

size_t element_size(cudaDataType_t t) {
  if (t == CUDA_R_32F) return 4;
  if (t == CUDA_R_16BF) return 2;
  return 0;
}

const char* type_name(cudaDataType_t t) {
  switch (t) {
    case CUDA_R_32F: return "CUDA_R_32F";
    case CUDA_R_16BF: return "CUDA_R_16BF";
    case CUDA_R_16F: return "CUDA_R_16F";
    case CUDA_R_64F: return "CUDA_R_64F";
    case CUDA_R_8I: return "CUDA_R_8I";
    case CUDA_R_32I: return "CUDA_R_32I";
    default: return "an unsupported cudaDataType";
  }
}

size_t extent_bytes(int64_t rows, int64_t cols, int64_t ld, size_t elem) {
  if (rows <= 0 || cols <= 0) return 0;
  return static_cast<size_t>((cols - 1) * ld + rows) * elem;
}

bool spans_overlap(const void* p, size_t p_bytes, const void* q, size_t q_bytes) {
  if (p_bytes == 0 || q_bytes == 0) return false;
  const auto a = reinterpret_cast<uintptr_t>(p), b = reinterpret_cast<uintptr_t>(q);
  return a < b + q_bytes && b < a + p_bytes;
}

uint32_t alignment_of(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 256;
  while (align > 1 && a % align != 0) align /= 2;
  return align;
}

float round_to_tf32(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  if ((bits & 0x7f800000u) == 0x7f800000u) return x;  // Inf, NaN
  bits = (bits + 0x1000u) & 0xffffe000u;                // ties away from zero in magnitude
  std::memcpy(&x, &bits, 4);
  return x;
}

const char* status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

const char* status_string(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "the operation completed successfully";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "an absent device architectural feature is required";
    case CUBLAS_STATUS_MAPPING_ERROR: return "an access to GPU memory space failed";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "an internal operation failed";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    case CUBLAS_STATUS_LICENSE_ERROR: return "error detected trying to check the license";
  }
  return "unknown error";
}

cublasStatus_t fail(const char* function, cublasStatus_t status, const std::string& why) {
  std::fprintf(stderr, "diffuse emulated cuBLAS: %s returns %s: %s\n", function, status_name(status), why.c_str());
  return status;
}

namespace {

// Element (i, j) of a stored matrix as f32.
inline float load(const Matrix& x, int64_t i, int64_t j) {
  const int64_t at = j * x.ld + i;
  if (x.type == CUDA_R_16BF) return kernels::bf16_to_float(static_cast<const uint16_t*>(x.data)[at]);
  return static_cast<const float*>(x.data)[at];
}

// A stored operand as a dense f32 copy (ld = rows), rounded to TF32 when asked.
std::vector<float> to_f32(const Matrix& x, bool tf32) {
  std::vector<float> out(static_cast<size_t>(x.rows * x.cols));
  for (int64_t j = 0; j < x.cols; ++j)
    for (int64_t i = 0; i < x.rows; ++i) {
      const float v = load(x, i, j);
      out[static_cast<size_t>(j * x.rows + i)] = tf32 ? round_to_tf32(v) : v;
    }
  return out;
}

}  // namespace

void run_gemm(const GemmCall& g) {
  if (g.m <= 0 || g.n <= 0) return;
  const size_t mn = static_cast<size_t>(g.m * g.n);
  // Device memory is touched only here, on the thread running the queued work: OpenBLAS multiplies
  // host copies (on this thread, kernels/single_threaded_blas.h, though nothing here relies on it),
  // and the emulated device's fault handling (first touch, out-of-bounds reports) sees every
  // access from the thread it expects.
  std::vector<float> t(mn, 0.0f);
  if (g.k > 0) {
    const std::vector<float> a32 = to_f32(g.a, g.tf32), b32 = to_f32(g.b, g.tf32);
    kernels::single_threaded_blas();
    cblas_sgemm(CblasColMajor, g.trans_a ? CblasTrans : CblasNoTrans, g.trans_b ? CblasTrans : CblasNoTrans,
                static_cast<int>(g.m), static_cast<int>(g.n), static_cast<int>(g.k), g.alpha, a32.data(),
                static_cast<int>(std::max<int64_t>(1, g.a.rows)), b32.data(),
                static_cast<int>(std::max<int64_t>(1, g.b.rows)), 0.0f, t.data(), static_cast<int>(g.m));
  }
  // cuBLASLt's split-K algorithms keep their f32 partial sums in the workspace: store them there
  // and read them back, so a workspace that is not writable device memory fails here as on a GPU.
  const float* sums = t.data();
  if (g.scratch) {
    std::memcpy(g.scratch, t.data(), mn * sizeof(float));
    sums = g.scratch;
  }
  // The epilogue in f32: beta·C (only when beta != 0: 0·NaN must not reach D), then the bias.
  const bool bf16_out = g.d.type == CUDA_R_16BF;
  for (int64_t j = 0; j < g.n; ++j) {
    for (int64_t i = 0; i < g.m; ++i) {
      float v = sums[j * g.m + i];
      if (g.beta != 0.0f) v += g.beta * load(g.c, i, j);
      if (g.bias)
        v += bf16_out ? kernels::bf16_to_float(static_cast<const uint16_t*>(g.bias)[i])
                      : static_cast<const float*>(g.bias)[i];
      const int64_t at = j * g.d.ld + i;
      if (bf16_out)
        static_cast<uint16_t*>(const_cast<void*>(g.d.data))[at] = kernels::float_to_bf16(v);
      else
        static_cast<float*>(const_cast<void*>(g.d.data))[at] = v;
    }
  }
}

cudaError_t enqueue_batched_gemm(cudaStream_t stream, const char* what, const GemmCall& call, int batch,
                                 const BatchStrides& strides, const float* alpha_device, const float* beta_device) {
  return enqueue(stream, what, [call, batch, strides, alpha_device, beta_device] {
    GemmCall one = call;
    if (alpha_device) {  // pointer mode DEVICE: the scalars are read when the work runs
      one.alpha = *alpha_device;
      one.beta = *beta_device;
    }
    auto moved = [](const void* p, int64_t stride, int i) {
      return p ? static_cast<const void*>(static_cast<const char*>(p) + i * stride) : nullptr;
    };
    for (int i = 0; i < batch; ++i) {
      one.a.data = moved(call.a.data, strides.a, i);
      one.b.data = moved(call.b.data, strides.b, i);
      one.c.data = moved(call.c.data, strides.c, i);
      one.d.data = moved(call.d.data, strides.d, i);
      one.bias = moved(call.bias, strides.bias, i);
      run_gemm(one);
    }
  });
}

}  // namespace diffuse::emulated_device::blas

namespace {

std::mutex g_mutex;
// Live handles: a destroyed or never-created handle is CUBLAS_STATUS_NOT_INITIALIZED, not a crash.
std::unordered_set<const cublasContext*>& live_handles() {
  static auto* set = new std::unordered_set<const cublasContext*>();
  return *set;
}

bool live(const cublasContext* h) {
  std::lock_guard<std::mutex> lock(g_mutex);
  return h && live_handles().count(h) != 0;
}

const char* op_name(cublasOperation_t op) {
  switch (op) {
    case CUBLAS_OP_N: return "N";
    case CUBLAS_OP_T: return "T";
    case CUBLAS_OP_C: return "C";
    default: return "invalid";
  }
}

std::string str(int64_t v) { return std::to_string(v); }

std::string describe(const void* p) { return ed::describe_address(p); }

// One GEMM or strided batch of them, checked and queued: what cublasGemmEx, cublasSgemm,
// cublasSgemmStridedBatched and cublasGemmStridedBatchedEx share.
struct GemmArgs {
  const char* function;
  cublasHandle_t handle;
  cublasOperation_t transa, transb;
  int m, n, k;
  const void *alpha, *a;
  cudaDataType_t atype;
  int lda;
  long long stride_a;
  const void* b;
  cudaDataType_t btype;
  int ldb;
  long long stride_b;
  const void* beta;
  void* c;
  cudaDataType_t ctype;
  int ldc;
  long long stride_c;
  int batch;
  cublasComputeType_t compute;
  cublasGemmAlgo_t algo;
};

bool valid_algo(cublasGemmAlgo_t algo) {
  const int a = static_cast<int>(algo);
  return a == CUBLAS_GEMM_DEFAULT || (a >= CUBLAS_GEMM_ALGO0 && a <= CUBLAS_GEMM_ALGO23) ||
         (a >= CUBLAS_GEMM_DEFAULT_TENSOR_OP && a <= CUBLAS_GEMM_ALGO15_TENSOR_OP);
}

cublasStatus_t gemm(const GemmArgs& g) {
  const char* fn = g.function;
  if (!live(g.handle)) return blas::fail(fn, CUBLAS_STATUS_NOT_INITIALIZED, "the handle is not a live cublasCreate handle");
  const cublasContext h = *g.handle;  // the call's view of the handle's settings

  // Arguments, in the order the documentation lists them (INVALID_VALUE).
  for (const auto op : {g.transa, g.transb})
    if (op != CUBLAS_OP_N && op != CUBLAS_OP_T && op != CUBLAS_OP_C)
      return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE, "transa/transb = " + str(op) + " is not N, T or C");
  if (g.m < 0 || g.n < 0 || g.k < 0)
    return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE,
                      "m = " + str(g.m) + ", n = " + str(g.n) + ", k = " + str(g.k) + ": sizes must be >= 0");
  if (g.batch < 0) return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE, "batchCount = " + str(g.batch) + " < 0");
  const bool ta = g.transa != CUBLAS_OP_N, tb = g.transb != CUBLAS_OP_N;
  // A is stored m × k (N) or k × m (T); B is stored k × n (N) or n × k (T).
  const int a_rows = ta ? g.k : g.m, a_cols = ta ? g.m : g.k;
  const int b_rows = tb ? g.n : g.k, b_cols = tb ? g.k : g.n;
  if (g.lda < std::max(1, a_rows))
    return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE,
                      "lda = " + str(g.lda) + " < max(1, " + (ta ? "k = " : "m = ") + str(a_rows) + ") with transa = " +
                          op_name(g.transa));
  if (g.ldb < std::max(1, b_rows))
    return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE,
                      "ldb = " + str(g.ldb) + " < max(1, " + (tb ? "n = " : "k = ") + str(b_rows) + ") with transb = " +
                          op_name(g.transb));
  if (g.ldc < std::max(1, g.m))
    return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE, "ldc = " + str(g.ldc) + " < max(1, m = " + str(g.m) + ")");
  if (!g.alpha || !g.beta) return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE, "alpha or beta is NULL");

  // Types, compute type and algorithm (NOT_SUPPORTED). The emulation computes the combinations
  // diffuse uses: f32 in/out, bf16 in with bf16 or f32 out, f32 accumulation, TF32 for f32.
  const bool compute_32f = g.compute == CUBLAS_COMPUTE_32F || g.compute == CUBLAS_COMPUTE_32F_PEDANTIC ||
                           g.compute == CUBLAS_COMPUTE_32F_FAST_TF32;
  if (!compute_32f)
    return blas::fail(fn, CUBLAS_STATUS_NOT_SUPPORTED,
                      "computeType " + str(g.compute) +
                          " is not emulated (CUBLAS_COMPUTE_32F, _32F_PEDANTIC and _32F_FAST_TF32 are)");
  const bool types_ok = g.atype == g.btype && (g.atype == CUDA_R_32F || g.atype == CUDA_R_16BF) &&
                        (g.ctype == CUDA_R_32F || (g.ctype == CUDA_R_16BF && g.atype == CUDA_R_16BF));
  if (!types_ok)
    return blas::fail(fn, CUBLAS_STATUS_NOT_SUPPORTED,
                      std::string("Atype/Btype/Ctype ") + blas::type_name(g.atype) + "/" + blas::type_name(g.btype) + "/" +
                          blas::type_name(g.ctype) + " is not a supported combination for CUBLAS_COMPUTE_32F*");
  if (g.compute == CUBLAS_COMPUTE_32F_FAST_TF32 && g.atype != CUDA_R_32F)
    return blas::fail(fn, CUBLAS_STATUS_NOT_SUPPORTED, "CUBLAS_COMPUTE_32F_FAST_TF32 takes CUDA_R_32F operands only");
  if (!valid_algo(g.algo)) return blas::fail(fn, CUBLAS_STATUS_NOT_SUPPORTED, "algo " + str(g.algo) + " is not an algorithm");
  const int math = static_cast<int>(h.math) & 0xf;
  if (g.compute == CUBLAS_COMPUTE_32F && g.atype == CUDA_R_32F &&
      (math == CUBLAS_TENSOR_OP_MATH || math == CUBLAS_FP32_EMULATED_BF16X9_MATH))
    return blas::fail(fn, CUBLAS_STATUS_NOT_SUPPORTED,
                      "the handle's math mode " + str(h.math) + " down-converts f32 in a way the emulation does not model");
  const bool tf32 = g.compute == CUBLAS_COMPUTE_32F_FAST_TF32 ||
                    (g.compute == CUBLAS_COMPUTE_32F && g.atype == CUDA_R_32F && math == CUBLAS_TF32_TENSOR_OP_MATH);

  // Scalars, as the handle's pointer mode says (stricter than real: the wrong side is refused).
  const bool device_scalars = h.pointer_mode == CUBLAS_POINTER_MODE_DEVICE;
  for (const void* s : {g.alpha, g.beta}) {
    if (device_scalars && !ed::is_device_range(s, sizeof(float)))
      return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE,
                        "pointer mode DEVICE but alpha/beta is not in a live device allocation (" + describe(s) + ")");
    if (!device_scalars && ed::in_device_region(s))
      return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE,
                        "pointer mode HOST but alpha/beta points into device memory (" + describe(s) + ")");
  }
  float alpha = 0.0f, beta = 0.0f;
  if (!device_scalars) {
    std::memcpy(&alpha, g.alpha, sizeof(float));
    std::memcpy(&beta, g.beta, sizeof(float));
  }

  if (g.m == 0 || g.n == 0 || g.batch == 0) return CUBLAS_STATUS_SUCCESS;  // nothing to touch

  // The workspace must still be what cublasSetWorkspace was given (a freed one would be
  // overwritten by the GPU).
  if (h.workspace && !ed::is_device_range(h.workspace, h.workspace_bytes))
    return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE,
                      "the workspace set by cublasSetWorkspace is no longer a live device allocation (" +
                          describe(h.workspace) + ")");

  // Operands: every byte the call touches must lie inside one live device allocation. The
  // strides are per batch entry; a real GPU would fault or read a neighbour's memory instead.
  const size_t ab_size = blas::element_size(g.atype), c_size = blas::element_size(g.ctype);
  struct Operand {
    const char* name;
    const void* p;
    int64_t rows, cols, ld;
    long long stride;
    size_t elem;
  };
  const Operand operands[] = {{"A", g.a, a_rows, a_cols, g.lda, g.stride_a, ab_size},
                              {"B", g.b, b_rows, b_cols, g.ldb, g.stride_b, ab_size},
                              {"C", g.c, g.m, g.n, g.ldc, g.stride_c, c_size}};
  for (const Operand& o : operands) {
    const size_t one = blas::extent_bytes(o.rows, o.cols, o.ld, o.elem);
    if (one == 0) continue;  // k == 0: A and B are not read
    if (o.stride < 0)
      return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE, std::string("stride") + o.name + " = " + str(o.stride) + " < 0");
    const size_t bytes = static_cast<size_t>(g.batch - 1) * static_cast<size_t>(o.stride) * o.elem + one;
    if (!ed::is_device_range(o.p, bytes))
      return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE,
                        std::string(o.name) + " (" + str(o.rows) + " x " + str(o.cols) + ", ld " + str(o.ld) +
                            (g.batch > 1 ? ", " + str(g.batch) + " batches" : std::string()) + ", " + str(bytes) +
                            " bytes) is not inside one live device allocation: " + describe(o.p));
  }
  // C may not overlap A or B (per batch entry: entries of one buffer may interleave).
  for (int i = 0; i < g.batch; ++i) {
    const size_t c_bytes = blas::extent_bytes(g.m, g.n, g.ldc, c_size);
    const char* c_i = static_cast<const char*>(g.c) + static_cast<size_t>(i) * g.stride_c * c_size;
    for (const Operand* o : {&operands[0], &operands[1]}) {
      const char* o_i = static_cast<const char*>(o->p) + static_cast<size_t>(i) * o->stride * o->elem;
      if (blas::spans_overlap(c_i, c_bytes, o_i, blas::extent_bytes(o->rows, o->cols, o->ld, o->elem)))
        return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE,
                          std::string("C overlaps ") + o->name + (g.batch > 1 ? " in batch entry " + str(i) : "") +
                              ": the output would overwrite an input other blocks still read");
    }
  }
  if (g.batch > 1 && g.stride_c < static_cast<long long>(g.ldc) * (g.n - 1) + g.m)
    return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE,
                      "strideC = " + str(g.stride_c) + " makes the batch's C matrices overlap (their writes race)");

  blas::GemmCall call;
  call.trans_a = ta;
  call.trans_b = tb;
  call.m = g.m;
  call.n = g.n;
  call.k = g.k;
  call.tf32 = tf32;
  call.alpha = alpha;
  call.beta = beta;
  call.a = {g.a, g.atype, a_rows, a_cols, g.lda};
  call.b = {g.b, g.btype, b_rows, b_cols, g.ldb};
  call.c = {g.c, g.ctype, g.m, g.n, g.ldc};
  call.d = call.c;
  const float* alpha_device = device_scalars ? static_cast<const float*>(g.alpha) : nullptr;
  const float* beta_device = device_scalars ? static_cast<const float*>(g.beta) : nullptr;
  const blas::BatchStrides strides{g.stride_a * static_cast<int64_t>(ab_size), g.stride_b * static_cast<int64_t>(ab_size),
                                   g.stride_c * static_cast<int64_t>(c_size), g.stride_c * static_cast<int64_t>(c_size)};
  const cudaError_t queued =
      blas::enqueue_batched_gemm(h.stream, fn, call, g.batch, strides, alpha_device, beta_device);
  if (queued != cudaSuccess)
    return blas::fail(fn, CUBLAS_STATUS_EXECUTION_FAILED,
                      std::string("the work could not be queued on the handle's stream: ") + cudaGetErrorName(queued));
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

extern "C" {

const char* CUBLASWINAPI cublasGetStatusName(cublasStatus_t status) { return blas::status_name(status); }
const char* CUBLASWINAPI cublasGetStatusString(cublasStatus_t status) { return blas::status_string(status); }

cublasStatus_t CUBLASWINAPI cublasCreate_v2(cublasHandle_t* handle) {
  if (!handle) return blas::fail("cublasCreate", CUBLAS_STATUS_INVALID_VALUE, "handle is NULL");
  if (ed::sticky_error() != cudaSuccess)
    return blas::fail("cublasCreate", CUBLAS_STATUS_NOT_INITIALIZED,
                      std::string("the device has failed: ") + cudaGetErrorName(ed::sticky_error()));
  auto* h = new cublasContext();
  std::lock_guard<std::mutex> lock(g_mutex);
  live_handles().insert(h);
  *handle = h;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasDestroy_v2(cublasHandle_t handle) {
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (!handle || live_handles().erase(handle) == 0)
      return blas::fail("cublasDestroy", CUBLAS_STATUS_NOT_INITIALIZED, "the handle is not a live cublasCreate handle");
  }
  // The documentation: releasing the handle implicitly synchronises the device.
  ed::synchronize_all();
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasGetVersion_v2(cublasHandle_t handle, int* version) {
  if (!live(handle)) return blas::fail("cublasGetVersion", CUBLAS_STATUS_NOT_INITIALIZED, "not a live handle");
  if (!version) return blas::fail("cublasGetVersion", CUBLAS_STATUS_INVALID_VALUE, "version is NULL");
  *version = CUBLAS_VERSION;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream) {
  if (!live(handle)) return blas::fail("cublasSetStream", CUBLAS_STATUS_NOT_INITIALIZED, "not a live handle");
  if (!ed::valid_stream(stream))
    return blas::fail("cublasSetStream", CUBLAS_STATUS_INVALID_VALUE, "the stream is not a live stream");
  handle->stream = stream;
  // The documentation: setting the stream resets the workspace to the library's default pool.
  handle->workspace = nullptr;
  handle->workspace_bytes = 0;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasGetStream_v2(cublasHandle_t handle, cudaStream_t* stream) {
  if (!live(handle)) return blas::fail("cublasGetStream", CUBLAS_STATUS_NOT_INITIALIZED, "not a live handle");
  if (!stream) return blas::fail("cublasGetStream", CUBLAS_STATUS_INVALID_VALUE, "streamId is NULL");
  *stream = handle->stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasSetWorkspace_v2(cublasHandle_t handle, void* workspace, size_t bytes) {
  const char* fn = "cublasSetWorkspace";
  if (!live(handle)) return blas::fail(fn, CUBLAS_STATUS_NOT_INITIALIZED, "not a live handle");
  if (!workspace && bytes != 0)
    return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE, "workspace is NULL but its size is " + str(static_cast<int64_t>(bytes)));
  if (workspace) {
    // The documentation: the workspace pointer must be aligned to at least 256 bytes.
    if (reinterpret_cast<uintptr_t>(workspace) % 256 != 0)
      return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE, "the workspace pointer is not aligned to 256 bytes");
    // Stricter than real: the workspace must be device memory, all of it.
    if (!ed::is_device_range(workspace, bytes))
      return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE,
                        "the workspace (" + str(static_cast<int64_t>(bytes)) +
                            " bytes) is not inside one live device allocation: " + describe(workspace));
  }
  handle->workspace = workspace;
  handle->workspace_bytes = bytes;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasGetMathMode(cublasHandle_t handle, cublasMath_t* mode) {
  if (!live(handle)) return blas::fail("cublasGetMathMode", CUBLAS_STATUS_NOT_INITIALIZED, "not a live handle");
  if (!mode) return blas::fail("cublasGetMathMode", CUBLAS_STATUS_INVALID_VALUE, "mode is NULL");
  *mode = handle->math;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (!live(handle)) return blas::fail("cublasSetMathMode", CUBLAS_STATUS_NOT_INITIALIZED, "not a live handle");
  const int base = static_cast<int>(mode) & ~static_cast<int>(CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
  const bool known = base == CUBLAS_DEFAULT_MATH || base == CUBLAS_TENSOR_OP_MATH || base == CUBLAS_PEDANTIC_MATH ||
                     base == CUBLAS_TF32_TENSOR_OP_MATH || base == CUBLAS_FP32_EMULATED_BF16X9_MATH ||
                     base == CUBLAS_FP64_EMULATED_FIXEDPOINT_MATH;
  if (!known) return blas::fail("cublasSetMathMode", CUBLAS_STATUS_INVALID_VALUE, "mode " + str(mode) + " is not a cublasMath_t");
  handle->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasGetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t* mode) {
  if (!live(handle)) return blas::fail("cublasGetPointerMode", CUBLAS_STATUS_NOT_INITIALIZED, "not a live handle");
  if (!mode) return blas::fail("cublasGetPointerMode", CUBLAS_STATUS_INVALID_VALUE, "mode is NULL");
  *mode = handle->pointer_mode;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasSetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t mode) {
  if (!live(handle)) return blas::fail("cublasSetPointerMode", CUBLAS_STATUS_NOT_INITIALIZED, "not a live handle");
  if (mode != CUBLAS_POINTER_MODE_HOST && mode != CUBLAS_POINTER_MODE_DEVICE)
    return blas::fail("cublasSetPointerMode", CUBLAS_STATUS_INVALID_VALUE, "mode " + str(mode) + " is not HOST or DEVICE");
  handle->pointer_mode = mode;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                         int m, int n, int k, const void* alpha, const void* A, cudaDataType Atype,
                                         int lda, const void* B, cudaDataType Btype, int ldb, const void* beta, void* C,
                                         cudaDataType Ctype, int ldc, cublasComputeType_t computeType,
                                         cublasGemmAlgo_t algo) {
  return gemm({"cublasGemmEx", handle, transa, transb, m, n, k, alpha, A, Atype, lda, 0, B, Btype, ldb, 0, beta, C,
               Ctype, ldc, 0, 1, computeType, algo});
}

cublasStatus_t CUBLASWINAPI cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                           int m, int n, int k, const float* alpha, const float* A, int lda,
                                           const float* B, int ldb, const float* beta, float* C, int ldc) {
  return gemm({"cublasSgemm", handle, transa, transb, m, n, k, alpha, A, CUDA_R_32F, lda, 0, B, CUDA_R_32F, ldb, 0,
               beta, C, CUDA_R_32F, ldc, 0, 1, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT});
}

cublasStatus_t CUBLASWINAPI cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa,
                                                      cublasOperation_t transb, int m, int n, int k, const float* alpha,
                                                      const float* A, int lda, long long int strideA, const float* B,
                                                      int ldb, long long int strideB, const float* beta, float* C,
                                                      int ldc, long long int strideC, int batchCount) {
  return gemm({"cublasSgemmStridedBatched", handle, transa, transb, m, n, k, alpha, A, CUDA_R_32F, lda, strideA, B,
               CUDA_R_32F, ldb, strideB, beta, C, CUDA_R_32F, ldc, strideC, batchCount, CUBLAS_COMPUTE_32F,
               CUBLAS_GEMM_DEFAULT});
}

cublasStatus_t CUBLASWINAPI cublasGemmStridedBatchedEx(cublasHandle_t handle, cublasOperation_t transa,
                                                       cublasOperation_t transb, int m, int n, int k, const void* alpha,
                                                       const void* A, cudaDataType Atype, int lda, long long int strideA,
                                                       const void* B, cudaDataType Btype, int ldb, long long int strideB,
                                                       const void* beta, void* C, cudaDataType Ctype, int ldc,
                                                       long long int strideC, int batchCount,
                                                       cublasComputeType_t computeType, cublasGemmAlgo_t algo) {
  return gemm({"cublasGemmStridedBatchedEx", handle, transa, transb, m, n, k, alpha, A, Atype, lda, strideA, B, Btype,
               ldb, strideB, beta, C, Ctype, ldc, strideC, batchCount, computeType, algo});
}

}  // extern "C"
