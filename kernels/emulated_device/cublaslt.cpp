// The emulated device's cuBLASLt: handles, matmul/layout/preference descriptors, the algorithm
// heuristic and cublasLtMatmul, with the toolkit's signatures from cublasLt.h, so kernels/cuda/linear.cpp
// (the linear forward with the bias epilogue) runs unchanged in the -DDIFFUSE_CUDA=EMULATED build.
//
// What is modelled, and why:
//  - Descriptors are heap objects registered while alive; a destroyed or foreign descriptor is
//    refused (CUBLAS_STATUS_INVALID_VALUE) instead of being read.
//  - Attributes are checked for their documented size; every attribute can be set and read back,
//    but a matmul that needs one the emulation does not compute (scale/amax/aux pointers, epilogues
//    other than DEFAULT and BIAS, types other than f32/bf16) is CUBLAS_STATUS_NOT_SUPPORTED.
//  - The heuristic offers three algorithms, best first: a 4-way split-K with 16-byte vector loads,
//    a 2-way split-K with element-aligned loads (both need workspace: the f32 partial sums), and a
//    workspace-free one. Alignment preferences, the bias pointer set in the descriptor and the
//    maximum workspace decide which qualify, as on the real library; none qualifying is
//    CUBLAS_STATUS_NOT_SUPPORTED.
//  - cublasLtMatmul re-checks what the heuristic assumed against the actual call: a workspace
//    smaller than the algorithm needs is CUBLAS_STATUS_INVALID_VALUE (documented), and so is a
//    pointer or leading dimension less aligned than the algorithm's loads (a real GPU may fault
//    with "misaligned address" or return NOT_SUPPORTED; a hard error here cannot be absorbed by a
//    fallback and forgotten). The split-K algorithms really keep their f32 accumulator in the
//    workspace, so a workspace that is not live device memory is caught.
#include <cublasLt.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "kernels/emulated_device/device.h"
#include "kernels/emulated_device/gemm_reference.h"

namespace ed = diffuse::emulated_device;
namespace blas = diffuse::emulated_device::blas;

struct cublasLtContext {};

namespace {

// ---- attribute storage ------------------------------------------------------------------------

// Attribute values zero-extended to 8 bytes, with each attribute's documented size.
struct Attributes {
  std::map<int, uint64_t> values;

  template <typename T>
  T get(int attr) const {
    T out{};
    const auto it = values.find(attr);
    if (it != values.end()) std::memcpy(&out, &it->second, sizeof(T));
    return out;
  }
  template <typename T>
  void put(int attr, T v) {
    uint64_t raw = 0;
    std::memcpy(&raw, &v, sizeof(T));
    values[attr] = raw;
  }
};

// Documented sizes (cublasLt.h), by attribute; absent: not an attribute.
const std::map<int, size_t> kDescSizes = {
    {CUBLASLT_MATMUL_DESC_COMPUTE_TYPE, 4},
    {CUBLASLT_MATMUL_DESC_SCALE_TYPE, 4},
    {CUBLASLT_MATMUL_DESC_POINTER_MODE, 4},
    {CUBLASLT_MATMUL_DESC_TRANSA, 4},
    {CUBLASLT_MATMUL_DESC_TRANSB, 4},
    {CUBLASLT_MATMUL_DESC_TRANSC, 4},
    {CUBLASLT_MATMUL_DESC_FILL_MODE, 4},
    {CUBLASLT_MATMUL_DESC_EPILOGUE, 4},
    {CUBLASLT_MATMUL_DESC_BIAS_POINTER, sizeof(void*)},
    {CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, 8},
    {CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, sizeof(void*)},
    {CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, 8},
    {CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE, 8},
    {CUBLASLT_MATMUL_DESC_ALPHA_VECTOR_BATCH_STRIDE, 8},
    {CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET, 4},
    {CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, sizeof(void*)},
    {CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, sizeof(void*)},
    {CUBLASLT_MATMUL_DESC_C_SCALE_POINTER, sizeof(void*)},
    {CUBLASLT_MATMUL_DESC_D_SCALE_POINTER, sizeof(void*)},
    {CUBLASLT_MATMUL_DESC_AMAX_D_POINTER, sizeof(void*)},
    {CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE, 4},
    {CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_SCALE_POINTER, sizeof(void*)},
    {CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_AMAX_POINTER, sizeof(void*)},
    {CUBLASLT_MATMUL_DESC_FAST_ACCUM, 1},
    {CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, 4},
    {CUBLASLT_MATMUL_DESC_A_SCALE_MODE, 4},
    {CUBLASLT_MATMUL_DESC_B_SCALE_MODE, 4},
    {CUBLASLT_MATMUL_DESC_C_SCALE_MODE, 4},
    {CUBLASLT_MATMUL_DESC_D_SCALE_MODE, 4},
    {CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_SCALE_MODE, 4},
    {CUBLASLT_MATMUL_DESC_D_OUT_SCALE_POINTER, sizeof(void*)},
    {CUBLASLT_MATMUL_DESC_D_OUT_SCALE_MODE, 4},
    {CUBLASLT_MATMUL_DESC_EMULATION_DESCRIPTOR, sizeof(void*)},
};
const std::map<int, size_t> kLayoutSizes = {
    {CUBLASLT_MATRIX_LAYOUT_TYPE, 4},         {CUBLASLT_MATRIX_LAYOUT_ORDER, 4},
    {CUBLASLT_MATRIX_LAYOUT_ROWS, 8},         {CUBLASLT_MATRIX_LAYOUT_COLS, 8},
    {CUBLASLT_MATRIX_LAYOUT_LD, 8},           {CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, 4},
    {CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, 8}, {CUBLASLT_MATRIX_LAYOUT_PLANE_OFFSET, 8},
    {CUBLASLT_MATRIX_LAYOUT_BATCH_MODE, 4},
};
const std::map<int, size_t> kPrefSizes = {
    {CUBLASLT_MATMUL_PREF_SEARCH_MODE, 4},          {CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, 8},
    {CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, 4}, {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, 4},
    {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, 4}, {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, 4},
    {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, 4}, {CUBLASLT_MATMUL_PREF_MAX_WAVES_COUNT, 4},
    {CUBLASLT_MATMUL_PREF_IMPL_MASK, 8},
};

// Descriptor attributes a matmul may leave at their defaults but the emulation cannot compute
// once they are set to anything else.
const int kUnemulatedDescAttributes[] = {
    CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER,  CUBLASLT_MATMUL_DESC_ALPHA_VECTOR_BATCH_STRIDE,
    CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,       CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
    CUBLASLT_MATMUL_DESC_C_SCALE_POINTER,       CUBLASLT_MATMUL_DESC_D_SCALE_POINTER,
    CUBLASLT_MATMUL_DESC_AMAX_D_POINTER,        CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_SCALE_POINTER,
    CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_AMAX_POINTER, CUBLASLT_MATMUL_DESC_FAST_ACCUM,
    CUBLASLT_MATMUL_DESC_A_SCALE_MODE,          CUBLASLT_MATMUL_DESC_B_SCALE_MODE,
    CUBLASLT_MATMUL_DESC_C_SCALE_MODE,          CUBLASLT_MATMUL_DESC_D_SCALE_MODE,
    CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_SCALE_MODE, CUBLASLT_MATMUL_DESC_D_OUT_SCALE_POINTER,
    CUBLASLT_MATMUL_DESC_D_OUT_SCALE_MODE,      CUBLASLT_MATMUL_DESC_EMULATION_DESCRIPTOR,
};

// ---- live objects ---------------------------------------------------------------------------------

std::mutex g_mutex;
struct Registry {
  std::unordered_set<const cublasLtContext*> handles;
  std::unordered_map<const void*, Attributes> descs, layouts, prefs;
};
Registry& registry() {
  static auto* r = new Registry();
  return *r;
}

bool live_handle(cublasLtHandle_t h) {
  std::lock_guard<std::mutex> lock(g_mutex);
  return h && registry().handles.count(h) != 0;
}

// A copy of a live object's attributes; false when the object is not live.
bool snapshot(std::unordered_map<const void*, Attributes>& map, const void* object, Attributes* out) {
  std::lock_guard<std::mutex> lock(g_mutex);
  const auto it = map.find(object);
  if (it == map.end()) return false;
  *out = it->second;
  return true;
}

std::string str(int64_t v) { return std::to_string(v); }

cublasStatus_t set_attribute(const char* fn, std::unordered_map<const void*, Attributes>& map,
                             const std::map<int, size_t>& sizes, const void* object, int attr, const void* buf,
                             size_t bytes) {
  const auto size = sizes.find(attr);
  if (size == sizes.end()) return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE, "attribute " + str(attr) + " does not exist");
  if (!buf) return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE, "buf is NULL");
  if (bytes != size->second)
    return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE,
                      "attribute " + str(attr) + " is " + str(static_cast<int64_t>(size->second)) + " bytes, sizeInBytes = " +
                          str(static_cast<int64_t>(bytes)));
  std::lock_guard<std::mutex> lock(g_mutex);
  const auto it = map.find(object);
  if (it == map.end()) return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE, "the descriptor is not live");
  uint64_t raw = 0;
  std::memcpy(&raw, buf, bytes);
  it->second.values[attr] = raw;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t get_attribute(const char* fn, std::unordered_map<const void*, Attributes>& map,
                             const std::map<int, size_t>& sizes, const void* object, int attr, void* buf, size_t bytes,
                             size_t* written) {
  const auto size = sizes.find(attr);
  if (size == sizes.end()) return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE, "attribute " + str(attr) + " does not exist");
  if (bytes == 0) {
    if (!written) return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE, "sizeInBytes is 0 and sizeWritten is NULL");
    *written = size->second;
    return CUBLAS_STATUS_SUCCESS;
  }
  if (!buf || bytes != size->second)
    return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE, "buf is NULL or sizeInBytes does not match the attribute's size");
  Attributes a;
  if (!snapshot(map, object, &a)) return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE, "the descriptor is not live");
  const uint64_t raw = a.get<uint64_t>(attr);
  std::memcpy(buf, &raw, bytes);
  if (written) *written = bytes;
  return CUBLAS_STATUS_SUCCESS;
}

template <typename Opaque>
cublasStatus_t create(const char* fn, std::unordered_map<const void*, Attributes>& map, Opaque** out,
                      const Attributes& initial) {
  if (!out) return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE, "the output pointer is NULL");
  auto* object = new Opaque();
  std::lock_guard<std::mutex> lock(g_mutex);
  map.emplace(object, initial);
  *out = object;
  return CUBLAS_STATUS_SUCCESS;
}

template <typename Opaque>
cublasStatus_t destroy(std::unordered_map<const void*, Attributes>& map, Opaque* object) {
  if (!object) return CUBLAS_STATUS_SUCCESS;  // as free(NULL)
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (map.erase(object) == 0)
      return blas::fail("cublasLt*Destroy", CUBLAS_STATUS_INVALID_VALUE, "the descriptor is not live (destroyed twice?)");
  }
  delete object;
  return CUBLAS_STATUS_SUCCESS;
}

// ---- the problem a descriptor set describes -------------------------------------------------------

struct Layout {
  cudaDataType_t type;
  int64_t rows, cols, ld, batch_stride;
  int32_t batch;
};

struct Problem {
  bool ta = false, tb = false, tf32 = false;
  int64_t m = 0, n = 0, k = 0;
  int32_t batch = 1;
  Layout a{}, b{}, c{}, d{};
  bool bias_epilogue = false;
  const void* bias = nullptr;
  int64_t bias_batch_stride = 0;
  bool device_scalars = false;
  uint64_t fingerprint = 0;  // what an algorithm's validity depends on: types, compute, transposes, epilogue
};

bool valid_op(int32_t op) { return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C; }

cublasStatus_t resolve(const char* fn, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t Adesc,
                       cublasLtMatrixLayout_t Bdesc, cublasLtMatrixLayout_t Cdesc, cublasLtMatrixLayout_t Ddesc,
                       Problem* p) {
  Attributes op;
  if (!desc || !snapshot(registry().descs, desc, &op))
    return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE, "the matmul descriptor is not live");
  Attributes lay[4];
  const cublasLtMatrixLayout_t layouts[4] = {Adesc, Bdesc, Cdesc, Ddesc};
  const char* names[4] = {"A", "B", "C", "D"};
  Layout l[4];
  for (int i = 0; i < 4; ++i) {
    if (!layouts[i] || !snapshot(registry().layouts, layouts[i], &lay[i]))
      return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE, std::string("the layout of ") + names[i] + " is not live");
    if (lay[i].get<int32_t>(CUBLASLT_MATRIX_LAYOUT_ORDER) != CUBLASLT_ORDER_COL ||
        lay[i].get<int64_t>(CUBLASLT_MATRIX_LAYOUT_PLANE_OFFSET) != 0 ||
        lay[i].get<uint32_t>(CUBLASLT_MATRIX_LAYOUT_BATCH_MODE) != 0)
      return blas::fail(fn, CUBLAS_STATUS_NOT_SUPPORTED,
                        std::string("layout of ") + names[i] +
                            ": only column order, no planar complex and strided batches are emulated");
    l[i].type = static_cast<cudaDataType_t>(lay[i].get<uint32_t>(CUBLASLT_MATRIX_LAYOUT_TYPE));
    const uint64_t rows = lay[i].get<uint64_t>(CUBLASLT_MATRIX_LAYOUT_ROWS);
    const uint64_t cols = lay[i].get<uint64_t>(CUBLASLT_MATRIX_LAYOUT_COLS);
    if (rows > INT_MAX || cols > INT_MAX)
      return blas::fail(fn, CUBLAS_STATUS_NOT_SUPPORTED, std::string("layout of ") + names[i] + " exceeds 32-bit sizes");
    l[i].rows = static_cast<int64_t>(rows);
    l[i].cols = static_cast<int64_t>(cols);
    l[i].ld = lay[i].get<int64_t>(CUBLASLT_MATRIX_LAYOUT_LD);
    l[i].batch = lay[i].get<int32_t>(CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT);
    l[i].batch_stride = lay[i].get<int64_t>(CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET);
    if (l[i].ld < std::max<int64_t>(1, l[i].rows))
      return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE,
                        std::string("layout of ") + names[i] + ": ld = " + str(l[i].ld) + " < max(1, rows = " +
                            str(l[i].rows) + ")");
    if (l[i].batch < 1 || l[i].batch_stride < 0)
      return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE,
                        std::string("layout of ") + names[i] + ": batch count " + str(l[i].batch) + ", stride " +
                            str(l[i].batch_stride));
  }

  const auto compute = static_cast<cublasComputeType_t>(op.get<int32_t>(CUBLASLT_MATMUL_DESC_COMPUTE_TYPE));
  const auto scale = static_cast<cudaDataType_t>(op.get<int32_t>(CUBLASLT_MATMUL_DESC_SCALE_TYPE));
  if (compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_PEDANTIC && compute != CUBLAS_COMPUTE_32F_FAST_TF32)
    return blas::fail(fn, CUBLAS_STATUS_NOT_SUPPORTED, "compute type " + str(compute) + " is not emulated");
  if (scale != CUDA_R_32F)
    return blas::fail(fn, CUBLAS_STATUS_NOT_SUPPORTED,
                      std::string("scale type ") + blas::type_name(scale) + " with CUBLAS_COMPUTE_32F* (CUDA_R_32F is)");
  const int32_t pointer_mode = op.get<int32_t>(CUBLASLT_MATMUL_DESC_POINTER_MODE);
  if (pointer_mode != CUBLASLT_POINTER_MODE_HOST && pointer_mode != CUBLASLT_POINTER_MODE_DEVICE)
    return blas::fail(fn, CUBLAS_STATUS_NOT_SUPPORTED, "pointer mode " + str(pointer_mode) + " is not emulated");
  const int32_t ta = op.get<int32_t>(CUBLASLT_MATMUL_DESC_TRANSA), tb = op.get<int32_t>(CUBLASLT_MATMUL_DESC_TRANSB);
  if (!valid_op(ta) || !valid_op(tb))
    return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE, "TRANSA/TRANSB is not a cublasOperation_t");
  if (op.get<int32_t>(CUBLASLT_MATMUL_DESC_TRANSC) != CUBLAS_OP_N)
    return blas::fail(fn, CUBLAS_STATUS_NOT_SUPPORTED, "TRANSC must be CUBLAS_OP_N");
  if (op.get<int32_t>(CUBLASLT_MATMUL_DESC_FILL_MODE) != CUBLAS_FILL_MODE_FULL)
    return blas::fail(fn, CUBLAS_STATUS_NOT_SUPPORTED, "FILL_MODE other than FULL is not emulated");
  const uint32_t epilogue = op.get<uint32_t>(CUBLASLT_MATMUL_DESC_EPILOGUE);
  if (epilogue != CUBLASLT_EPILOGUE_DEFAULT && epilogue != CUBLASLT_EPILOGUE_BIAS)
    return blas::fail(fn, CUBLAS_STATUS_NOT_SUPPORTED,
                      "epilogue " + str(epilogue) + " is not emulated (DEFAULT and BIAS are)");
  for (const int attr : kUnemulatedDescAttributes)
    if (op.get<uint64_t>(attr) != 0)
      return blas::fail(fn, CUBLAS_STATUS_NOT_SUPPORTED, "matmul descriptor attribute " + str(attr) + " is not emulated");
  if (op.get<int32_t>(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE) != -1)
    return blas::fail(fn, CUBLAS_STATUS_NOT_SUPPORTED, "EPILOGUE_AUX_DATA_TYPE is not emulated");

  // Types: A and B alike, C and D alike; f32 → f32, bf16 → bf16 or f32.
  const Layout &A = l[0], &B = l[1], &C = l[2], &D = l[3];
  const bool types_ok = A.type == B.type && C.type == D.type && (A.type == CUDA_R_32F || A.type == CUDA_R_16BF) &&
                        (D.type == CUDA_R_32F || (D.type == CUDA_R_16BF && A.type == CUDA_R_16BF));
  if (!types_ok)
    return blas::fail(fn, CUBLAS_STATUS_NOT_SUPPORTED,
                      std::string("A/B/C/D types ") + blas::type_name(A.type) + "/" + blas::type_name(B.type) + "/" +
                          blas::type_name(C.type) + "/" + blas::type_name(D.type) + " are not an emulated combination");
  if (compute == CUBLAS_COMPUTE_32F_FAST_TF32 && A.type != CUDA_R_32F)
    return blas::fail(fn, CUBLAS_STATUS_NOT_SUPPORTED, "CUBLAS_COMPUTE_32F_FAST_TF32 takes CUDA_R_32F operands only");

  // Shapes: D is m × n; op(A) is m × k; op(B) is k × n; C is D's shape.
  p->ta = ta != CUBLAS_OP_N;
  p->tb = tb != CUBLAS_OP_N;
  p->m = D.rows;
  p->n = D.cols;
  p->k = p->ta ? A.rows : A.cols;
  const int64_t a_m = p->ta ? A.cols : A.rows;
  const int64_t b_k = p->tb ? B.cols : B.rows, b_n = p->tb ? B.rows : B.cols;
  if (a_m != p->m || b_k != p->k || b_n != p->n || C.rows != D.rows || C.cols != D.cols)
    return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE,
                      "layouts disagree: D is " + str(D.rows) + " x " + str(D.cols) + ", C " + str(C.rows) + " x " +
                          str(C.cols) + ", op(A) " + str(a_m) + " x " + str(p->k) + ", op(B) " + str(b_k) + " x " +
                          str(b_n) + " (TRANSA " + str(ta) + ", TRANSB " + str(tb) + ")");
  if (A.batch != D.batch || B.batch != D.batch || C.batch != D.batch)
    return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE, "the layouts' batch counts differ");
  p->batch = D.batch;
  p->a = A;
  p->b = B;
  p->c = C;
  p->d = D;
  p->tf32 = compute == CUBLAS_COMPUTE_32F_FAST_TF32;
  p->device_scalars = pointer_mode == CUBLASLT_POINTER_MODE_DEVICE;
  p->bias_epilogue = epilogue == CUBLASLT_EPILOGUE_BIAS;
  if (p->bias_epilogue) {
    const int32_t bias_type = op.get<int32_t>(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE);
    if (bias_type != -1 && bias_type != D.type)
      return blas::fail(fn, CUBLAS_STATUS_NOT_SUPPORTED,
                        std::string("BIAS_DATA_TYPE ") + blas::type_name(static_cast<cudaDataType_t>(bias_type)) +
                            " differs from D's type (only D's type is emulated)");
    p->bias = op.get<const void*>(CUBLASLT_MATMUL_DESC_BIAS_POINTER);
    p->bias_batch_stride = op.get<int64_t>(CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE);
  }
  p->fingerprint = (uint64_t(compute) << 48) ^ (uint64_t(A.type) << 40) ^ (uint64_t(D.type) << 32) ^
                   (uint64_t(ta) << 24) ^ (uint64_t(tb) << 16) ^ uint64_t(epilogue);
  return CUBLAS_STATUS_SUCCESS;
}

// ---- the algorithms -----------------------------------------------------------------------------

constexpr uint64_t kAlgoMagic = 0x646966667573ull << 16;  // "diffus"

struct Candidate {
  int id;
  int splits;          // split-K factor: workspace = splits · m · n f32 partial sums (0: none)
  bool vector_loads;   // 16-byte loads: pointers and column strides 16-byte aligned
};
const Candidate kCandidates[] = {{0, 4, true}, {1, 2, false}, {2, 0, false}};

size_t workspace_for(int splits, const Problem& p) {
  if (splits == 0) return 0;
  const size_t bytes = static_cast<size_t>(splits) * static_cast<size_t>(std::max<int64_t>(p.m * p.n, 1)) * sizeof(float);
  return (bytes + 255) / 256 * 256;
}

uint32_t required_alignment(const Candidate& c, const Problem& p) {
  return c.vector_loads ? 16u : static_cast<uint32_t>(blas::element_size(p.a.type));
}

// Why the candidate cannot serve the problem with these alignments ("" when it can).
std::string misfit(const Candidate& c, const Problem& p, const uint32_t align[4], uint32_t bias_align) {
  const uint32_t need_ab = required_alignment(c, p);
  const uint32_t need_cd = c.vector_loads ? 16u : static_cast<uint32_t>(blas::element_size(p.d.type));
  const char* names[4] = {"A", "B", "C", "D"};
  const Layout* l[4] = {&p.a, &p.b, &p.c, &p.d};
  for (int i = 0; i < 4; ++i) {
    const uint32_t need = i < 2 ? need_ab : need_cd;
    if (align[i] < need)
      return std::string(names[i]) + " is " + str(align[i]) + "-byte aligned, the algorithm loads " + str(need) +
             "-byte vectors";
    const size_t column_bytes = static_cast<size_t>(l[i]->ld) * blas::element_size(l[i]->type);
    if (c.vector_loads && (column_bytes % 16 != 0 || (l[i]->batch_stride * blas::element_size(l[i]->type)) % 16 != 0))
      return std::string(names[i]) + "'s column or batch stride is not a multiple of 16 bytes";
  }
  if (p.bias_epilogue && bias_align < need_cd)
    return "the bias is " + str(bias_align) + "-byte aligned, the algorithm loads " + str(need_cd) + "-byte vectors";
  return "";
}

cublasLtMatmulAlgo_t encode(const Candidate& c, const Problem& p) {
  cublasLtMatmulAlgo_t algo{};
  algo.data[0] = kAlgoMagic | static_cast<uint64_t>(c.id);
  algo.data[1] = p.fingerprint;
  return algo;
}

const Candidate* decode(const cublasLtMatmulAlgo_t& algo) {
  if ((algo.data[0] & ~uint64_t(0xffff)) != kAlgoMagic) return nullptr;
  const uint64_t id = algo.data[0] & 0xffff;
  for (const Candidate& c : kCandidates)
    if (static_cast<uint64_t>(c.id) == id) return &c;
  return nullptr;
}

}  // namespace

extern "C" {

const char* CUBLASWINAPI cublasLtGetStatusName(cublasStatus_t status) { return blas::status_name(status); }
const char* CUBLASWINAPI cublasLtGetStatusString(cublasStatus_t status) { return blas::status_string(status); }
size_t CUBLASWINAPI cublasLtGetVersion(void) { return CUBLAS_VERSION; }

cublasStatus_t CUBLASWINAPI cublasLtCreate(cublasLtHandle_t* handle) {
  if (!handle) return blas::fail("cublasLtCreate", CUBLAS_STATUS_INVALID_VALUE, "lightHandle is NULL");
  if (ed::sticky_error() != cudaSuccess)
    return blas::fail("cublasLtCreate", CUBLAS_STATUS_NOT_INITIALIZED,
                      std::string("the device has failed: ") + cudaGetErrorName(ed::sticky_error()));
  auto* h = new cublasLtContext();
  std::lock_guard<std::mutex> lock(g_mutex);
  registry().handles.insert(h);
  *handle = h;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtDestroy(cublasLtHandle_t handle) {
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (!handle || registry().handles.erase(handle) == 0)
      return blas::fail("cublasLtDestroy", CUBLAS_STATUS_NOT_INITIALIZED, "not a live cublasLtCreate handle");
  }
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t computeType,
                                                     cudaDataType_t scaleType) {
  Attributes a;
  a.put<int32_t>(CUBLASLT_MATMUL_DESC_COMPUTE_TYPE, computeType);
  a.put<int32_t>(CUBLASLT_MATMUL_DESC_SCALE_TYPE, scaleType);
  a.put<int32_t>(CUBLASLT_MATMUL_DESC_FILL_MODE, CUBLAS_FILL_MODE_FULL);
  a.put<uint32_t>(CUBLASLT_MATMUL_DESC_EPILOGUE, CUBLASLT_EPILOGUE_DEFAULT);
  a.put<int32_t>(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE, -1);
  a.put<int32_t>(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, -1);
  return create("cublasLtMatmulDescCreate", registry().descs, desc, a);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  return destroy(registry().descs, desc);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                                           cublasLtMatmulDescAttributes_t attr, const void* buf,
                                                           size_t sizeInBytes) {
  return set_attribute("cublasLtMatmulDescSetAttribute", registry().descs, kDescSizes, desc, attr, buf, sizeInBytes);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescGetAttribute(cublasLtMatmulDesc_t desc,
                                                           cublasLtMatmulDescAttributes_t attr, void* buf,
                                                           size_t sizeInBytes, size_t* sizeWritten) {
  return get_attribute("cublasLtMatmulDescGetAttribute", registry().descs, kDescSizes, desc, attr, buf, sizeInBytes,
                       sizeWritten);
}

cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type,
                                                       uint64_t rows, uint64_t cols, int64_t ld) {
  Attributes a;
  a.put<uint32_t>(CUBLASLT_MATRIX_LAYOUT_TYPE, static_cast<uint32_t>(type));
  a.put<int32_t>(CUBLASLT_MATRIX_LAYOUT_ORDER, CUBLASLT_ORDER_COL);
  a.put<uint64_t>(CUBLASLT_MATRIX_LAYOUT_ROWS, rows);
  a.put<uint64_t>(CUBLASLT_MATRIX_LAYOUT_COLS, cols);
  a.put<int64_t>(CUBLASLT_MATRIX_LAYOUT_LD, ld);
  a.put<int32_t>(CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, 1);
  return create("cublasLtMatrixLayoutCreate", registry().layouts, layout, a);
}

cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  return destroy(registry().layouts, layout);
}

cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t layout,
                                                             cublasLtMatrixLayoutAttribute_t attr, const void* buf,
                                                             size_t sizeInBytes) {
  return set_attribute("cublasLtMatrixLayoutSetAttribute", registry().layouts, kLayoutSizes, layout, attr, buf,
                       sizeInBytes);
}

cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutGetAttribute(cublasLtMatrixLayout_t layout,
                                                             cublasLtMatrixLayoutAttribute_t attr, void* buf,
                                                             size_t sizeInBytes, size_t* sizeWritten) {
  return get_attribute("cublasLtMatrixLayoutGetAttribute", registry().layouts, kLayoutSizes, layout, attr, buf,
                       sizeInBytes, sizeWritten);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  Attributes a;
  a.put<uint32_t>(CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, CUBLASLT_REDUCTION_SCHEME_MASK);
  for (const int attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                         CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
    a.put<uint32_t>(attr, 256);  // documented default
  a.put<uint64_t>(CUBLASLT_MATMUL_PREF_IMPL_MASK, ~uint64_t(0));
  return create("cublasLtMatmulPreferenceCreate", registry().prefs, pref, a);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  return destroy(registry().prefs, pref);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                                 cublasLtMatmulPreferenceAttributes_t attr,
                                                                 const void* buf, size_t sizeInBytes) {
  return set_attribute("cublasLtMatmulPreferenceSetAttribute", registry().prefs, kPrefSizes, pref, attr, buf,
                       sizeInBytes);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceGetAttribute(cublasLtMatmulPreference_t pref,
                                                                 cublasLtMatmulPreferenceAttributes_t attr, void* buf,
                                                                 size_t sizeInBytes, size_t* sizeWritten) {
  return get_attribute("cublasLtMatmulPreferenceGetAttribute", registry().prefs, kPrefSizes, pref, attr, buf,
                       sizeInBytes, sizeWritten);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                                           cublasLtMatrixLayout_t Adesc, cublasLtMatrixLayout_t Bdesc,
                                                           cublasLtMatrixLayout_t Cdesc, cublasLtMatrixLayout_t Ddesc,
                                                           cublasLtMatmulPreference_t preference,
                                                           int requestedAlgoCount,
                                                           cublasLtMatmulHeuristicResult_t heuristicResultsArray[],
                                                           int* returnAlgoCount) {
  const char* fn = "cublasLtMatmulAlgoGetHeuristic";
  if (!live_handle(handle)) return blas::fail(fn, CUBLAS_STATUS_NOT_INITIALIZED, "not a live cublasLtCreate handle");
  if (requestedAlgoCount <= 0)
    return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE, "requestedAlgoCount = " + str(requestedAlgoCount) + " <= 0");
  if (!heuristicResultsArray || !returnAlgoCount)
    return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE, "heuristicResultsArray or returnAlgoCount is NULL");
  *returnAlgoCount = 0;
  Attributes pref;
  if (!preference || !snapshot(registry().prefs, preference, &pref))
    return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE, "the preference descriptor is not live");
  Problem p;
  if (const cublasStatus_t s = resolve(fn, desc, Adesc, Bdesc, Cdesc, Ddesc, &p); s != CUBLAS_STATUS_SUCCESS) return s;
  if (pref.get<uint32_t>(CUBLASLT_MATMUL_PREF_SEARCH_MODE) != CUBLASLT_SEARCH_BEST_FIT)
    return blas::fail(fn, CUBLAS_STATUS_NOT_SUPPORTED, "only CUBLASLT_SEARCH_BEST_FIT is emulated");
  const uint64_t max_workspace = pref.get<uint64_t>(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES);
  const uint32_t reductions = pref.get<uint32_t>(CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK);
  const uint32_t align[4] = {pref.get<uint32_t>(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES),
                             pref.get<uint32_t>(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES),
                             pref.get<uint32_t>(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES),
                             pref.get<uint32_t>(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES)};
  // The documentation: the heuristic reads the bias pointer's value for its alignment.
  const uint32_t bias_align = blas::alignment_of(p.bias);
  std::string why_not;
  for (const Candidate& c : kCandidates) {
    if (*returnAlgoCount >= requestedAlgoCount) break;
    const size_t workspace = workspace_for(c.splits, p);
    std::string reason = misfit(c, p, align, bias_align);
    if (reason.empty() && workspace > max_workspace)
      reason = "needs " + str(static_cast<int64_t>(workspace)) + " bytes of workspace, the preference allows " +
               str(static_cast<int64_t>(max_workspace));
    if (reason.empty() && c.splits > 0 && !(reductions & CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE))
      reason = "split-K reduces in the compute type, which the reduction scheme mask excludes";
    if (!reason.empty()) {
      why_not += (why_not.empty() ? "" : "; ") + std::string("algo ") + str(c.id) + ": " + reason;
      continue;
    }
    cublasLtMatmulHeuristicResult_t& r = heuristicResultsArray[*returnAlgoCount];
    std::memset(&r, 0, sizeof(r));
    r.algo = encode(c, p);
    r.workspaceSize = workspace;
    r.state = CUBLAS_STATUS_SUCCESS;
    // Waves on the virtual card (132 SMs) of 128 × 128 output tiles.
    const double tiles = double((p.m + 127) / 128) * double((p.n + 127) / 128) * p.batch * std::max(c.splits, 1);
    r.wavesCount = static_cast<float>(tiles / 132.0);
    ++*returnAlgoCount;
  }
  if (*returnAlgoCount == 0) return blas::fail(fn, CUBLAS_STATUS_NOT_SUPPORTED, "no algorithm fits: " + why_not);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void* alpha,
                                           const void* A, cublasLtMatrixLayout_t Adesc, const void* B,
                                           cublasLtMatrixLayout_t Bdesc, const void* beta, const void* C,
                                           cublasLtMatrixLayout_t Cdesc, void* D, cublasLtMatrixLayout_t Ddesc,
                                           const cublasLtMatmulAlgo_t* algo, void* workspace,
                                           size_t workspaceSizeInBytes, cudaStream_t stream) {
  const char* fn = "cublasLtMatmul";
  if (!live_handle(handle)) return blas::fail(fn, CUBLAS_STATUS_NOT_INITIALIZED, "not a live cublasLtCreate handle");
  Problem p;
  if (const cublasStatus_t s = resolve(fn, desc, Adesc, Bdesc, Cdesc, Ddesc, &p); s != CUBLAS_STATUS_SUCCESS) return s;
  if (!alpha || !beta) return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE, "alpha or beta is NULL");

  // Scalars, by the descriptor's pointer mode (the wrong side is refused: stricter than real).
  for (const void* s : {alpha, beta}) {
    if (p.device_scalars && !ed::is_device_range(s, sizeof(float)))
      return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE,
                        "pointer mode DEVICE but alpha/beta is not in a live device allocation (" +
                            ed::describe_address(s) + ")");
    if (!p.device_scalars && ed::in_device_region(s))
      return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE,
                        "pointer mode HOST but alpha/beta points into device memory (" + ed::describe_address(s) + ")");
  }
  float host_alpha = 0.0f, host_beta = 0.0f;
  if (!p.device_scalars) {
    std::memcpy(&host_alpha, alpha, sizeof(float));
    std::memcpy(&host_beta, beta, sizeof(float));
  }

  // In place (C == D) needs identical layouts; out of place may differ only in ld.
  if (C == D && (p.c.ld != p.d.ld || p.c.batch_stride != p.d.batch_stride))
    return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE, "C == D (in place) but Cdesc and Ddesc differ");

  // The algorithm: the caller's, or (algo == NULL) the heuristic's first choice for the actual
  // pointers within the given workspace, as the documentation says.
  const uint32_t actual[4] = {blas::alignment_of(A), blas::alignment_of(B), blas::alignment_of(C),
                              blas::alignment_of(D)};
  const uint32_t bias_align = blas::alignment_of(p.bias);
  const Candidate* chosen = nullptr;
  if (algo) {
    chosen = decode(*algo);
    if (!chosen)
      return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE, "algo was not returned by cublasLtMatmulAlgoGetHeuristic");
    if (algo->data[1] != p.fingerprint)
      return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE,
                        "algo was chosen for other types, compute type, transposes or epilogue");
  } else {
    for (const Candidate& c : kCandidates)
      if (misfit(c, p, actual, bias_align).empty() && workspace_for(c.splits, p) <= workspaceSizeInBytes) {
        chosen = &c;
        break;
      }
    if (!chosen) return blas::fail(fn, CUBLAS_STATUS_NOT_SUPPORTED, "no algorithm fits the call (algo == NULL)");
  }
  const size_t needed = workspace_for(chosen->splits, p);
  if (workspaceSizeInBytes < needed)
    return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE,
                      "workspaceSizeInBytes = " + str(static_cast<int64_t>(workspaceSizeInBytes)) + " < " +
                          str(static_cast<int64_t>(needed)) + " bytes the algorithm needs");
  if (workspaceSizeInBytes > 0) {
    if (!workspace)
      return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE, "workspace is NULL but workspaceSizeInBytes is not 0");
    if (reinterpret_cast<uintptr_t>(workspace) % 256 != 0)
      return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE, "the workspace is not 256-byte aligned");
    if (!ed::is_device_range(workspace, workspaceSizeInBytes))
      return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE,
                        "the workspace (" + str(static_cast<int64_t>(workspaceSizeInBytes)) +
                            " bytes) is not inside one live device allocation: " + ed::describe_address(workspace));
  }
  if (const std::string reason = misfit(*chosen, p, actual, bias_align); !reason.empty())
    return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE, "the algorithm does not fit this call's pointers: " + reason);

  if (p.m == 0 || p.n == 0) return CUBLAS_STATUS_SUCCESS;

  // Operands: every byte the call touches inside one live allocation. C is read only when beta
  // may be non-zero.
  const size_t ab = blas::element_size(p.a.type), cd = blas::element_size(p.d.type);
  const bool reads_c = p.device_scalars || host_beta != 0.0f;
  struct Operand {
    const char* name;
    const void* ptr;
    const Layout* l;
    size_t elem;
    bool used;
  };
  const Operand operands[] = {{"A", A, &p.a, ab, p.k > 0}, {"B", B, &p.b, ab, p.k > 0},
                              {"C", C, &p.c, cd, reads_c}, {"D", D, &p.d, cd, true}};
  for (const Operand& o : operands) {
    if (!o.used) continue;
    const size_t bytes = static_cast<size_t>(p.batch - 1) * static_cast<size_t>(o.l->batch_stride) * o.elem +
                         blas::extent_bytes(o.l->rows, o.l->cols, o.l->ld, o.elem);
    if (!ed::is_device_range(o.ptr, bytes))
      return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE,
                        std::string(o.name) + " (" + str(o.l->rows) + " x " + str(o.l->cols) + ", ld " + str(o.l->ld) +
                            ", " + str(static_cast<int64_t>(bytes)) + " bytes) is not inside one live device allocation: " +
                            ed::describe_address(o.ptr));
  }
  if (p.bias_epilogue) {
    const size_t bytes = (static_cast<size_t>(p.batch - 1) * static_cast<size_t>(p.bias_batch_stride) + p.m) * cd;
    if (!p.bias || !ed::is_device_range(p.bias, bytes))
      return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE,
                        "CUBLASLT_EPILOGUE_BIAS but the bias pointer (" + str(static_cast<int64_t>(bytes)) +
                            " bytes) is not inside one live device allocation: " + ed::describe_address(p.bias));
  }

  // D may not overlap A, B or the bias; C only as exactly D (in place).
  for (int i = 0; i < p.batch; ++i) {
    auto span = [&](const void* base, const Layout& l, size_t elem) {
      return std::pair{static_cast<const char*>(base) + static_cast<size_t>(i) * static_cast<size_t>(l.batch_stride) * elem,
                       blas::extent_bytes(l.rows, l.cols, l.ld, elem)};
    };
    const auto [d_at, d_bytes] = span(D, p.d, cd);
    const auto [a_at, a_bytes] = span(A, p.a, ab);
    const auto [b_at, b_bytes] = span(B, p.b, ab);
    const auto [c_at, c_bytes] = span(C, p.c, cd);
    const bool c_overlaps = C != D && reads_c && blas::spans_overlap(d_at, d_bytes, c_at, c_bytes);
    if ((p.k > 0 && (blas::spans_overlap(d_at, d_bytes, a_at, a_bytes) || blas::spans_overlap(d_at, d_bytes, b_at, b_bytes))) ||
        c_overlaps ||
        (p.bias_epilogue && blas::spans_overlap(d_at, d_bytes,
                                                static_cast<const char*>(p.bias) + i * p.bias_batch_stride * int64_t(cd),
                                                static_cast<size_t>(p.m) * cd)))
      return blas::fail(fn, CUBLAS_STATUS_INVALID_VALUE,
                        "D overlaps A, B, the bias or (out of place) C: the output would overwrite an input other "
                        "blocks still read");
  }

  blas::GemmCall call;
  call.trans_a = p.ta;
  call.trans_b = p.tb;
  call.m = p.m;
  call.n = p.n;
  call.k = p.k;
  call.tf32 = p.tf32;
  call.alpha = host_alpha;
  call.beta = host_beta;
  call.a = {A, p.a.type, p.a.rows, p.a.cols, p.a.ld};
  call.b = {B, p.b.type, p.b.rows, p.b.cols, p.b.ld};
  call.c = {C, p.c.type, p.c.rows, p.c.cols, p.c.ld};
  call.d = {D, p.d.type, p.d.rows, p.d.cols, p.d.ld};
  call.bias = p.bias_epilogue ? p.bias : nullptr;
  // Split-K algorithms keep the f32 accumulator in the workspace.
  call.scratch = chosen->splits > 0 ? static_cast<float*>(workspace) : nullptr;
  const float* alpha_device = p.device_scalars ? static_cast<const float*>(alpha) : nullptr;
  const float* beta_device = p.device_scalars ? static_cast<const float*>(beta) : nullptr;
  const blas::BatchStrides strides{p.a.batch_stride * int64_t(ab), p.b.batch_stride * int64_t(ab),
                                   p.c.batch_stride * int64_t(cd), p.d.batch_stride * int64_t(cd),
                                   p.bias_batch_stride * int64_t(cd)};
  const cudaError_t queued = blas::enqueue_batched_gemm(stream, fn, call, p.batch, strides, alpha_device, beta_device);
  if (queued != cudaSuccess)
    return blas::fail(fn, CUBLAS_STATUS_EXECUTION_FAILED,
                      std::string("the work could not be queued on the stream: ") + cudaGetErrorName(queued));
  return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
