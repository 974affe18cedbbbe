// Attention's GEMM path on CUDA (kernels/attention.h): the L×L products as cuBLAS strided-batched
// GEMMs, which run on tensor cores in bf16 (f32 accumulation) where the flash kernels are SIMT f32
// arithmetic, around the row kernels of attention_softmax.cu; and attention_device_path, the one
// rule that chooses between this path and the flash kernels.
//
// Layout. q, k, v, out are [N, L, heads·d]; head h of image n is the L×d matrix at element
// n·L·heads·d + h·d with row stride heads·d, so one strided-batched call covers one head of every
// image of a chunk (batch stride L·heads·d) and the heads are a loop. The scores of a chunk are
// f32 [images, heads, L, L] in scratch; P (and dS over dP) is written in the storage type over the
// scores it comes from (attention_softmax.cu), a matrix with row stride L·4/sizeof(storage).
// Row-major products reach column-major cuBLAS as their transposes (kernels/cuda/gemm.cpp says how).
// Scratch comes from the caller's DeviceMemory (nn's caching allocator: graph-capture safe, no
// cudaMalloc per call once the blocks are cached).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>

#include "kernels/attention.h"
#include "kernels/cuda/gemm_internal.h"
#include "kernels/cuda/library_handles.h"
#include "kernels/cuda/library_status.h"

namespace diffuse::kernels::cuda {

namespace {

std::atomic<AttentionPathChoice> g_choice{AttentionPathChoice::automatic};
std::atomic<int64_t> g_budget{kAttentionGemmScratchBudget};

// Whether the flash kernels can take the call at all (check_attention_device's limits).
bool flash_takes(const AttentionDesc& d) {
  return attention_device_head_dim(d.head_dim) && d.n <= 65535 && d.heads <= 65535 && d.len <= (int64_t{1} << 30);
}

// A row-major operand of one head: its first element (bytes), row stride and per-image stride
// (elements), and storage type.
struct Operand {
  const void* p;
  int64_t ld, stride;
  DenseType type;
};

const void* at(const void* base, int64_t elements, DenseType type) {
  return static_cast<const char*>(base) + elements * static_cast<int64_t>(dense_type_size(type));
}
void* at(void* base, int64_t elements, DenseType type) {
  return static_cast<char*>(base) + elements * static_cast<int64_t>(dense_type_size(type));
}

// c = alpha · op(a) · op(b) for `batch` images, row-major: op(a) [m, k], op(b) [k, n], c [m, n]
// (overwritten: beta 0). a and b share a storage type; c may be f32 while they are bf16.
void batched_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const Operand& a,
                  const Operand& b, const Operand& c, int64_t batch, const DeviceMemory& mem, Stream stream) {
  const float beta = 0.0f;
  DIFFUSE_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      cublas_handle(mem, stream), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
      cublas_int(n, "n"), cublas_int(m, "m"), cublas_int(k, "k"), &alpha, b.p, cuda_type(b.type),
      cublas_int(b.ld, "ldb"), b.stride, a.p, cuda_type(a.type), cublas_int(a.ld, "lda"), a.stride, &beta,
      const_cast<void*>(c.p), cuda_type(c.type), cublas_int(c.ld, "ldc"), c.stride, cublas_int(batch, "batchCount"),
      compute_type(a.type), CUBLAS_GEMM_DEFAULT));
}

// The shapes of one call, for the loops below.
struct Geometry {
  int64_t len, heads, d, width, token_stride;  // token_stride: one image of out/dout, in elements
  int64_t qkv_ld, qkv_stride;                  // q, k, v and their grads: row and image strides
  int64_t score_stride, p_ld, p_stride;        // f32 scores per image; P's row and image strides
  float scale;
  DenseType type;
  Geometry(const AttentionDesc& desc, DenseType t)
      : len(desc.len),
        heads(desc.heads),
        d(desc.head_dim),
        width(desc.width()),
        token_stride(desc.len * desc.width()),
        qkv_ld(desc.qkv_ld()),
        qkv_stride(desc.len * desc.qkv_ld()),
        score_stride(desc.heads * desc.len * desc.len),
        p_ld(desc.len * 4 / static_cast<int64_t>(dense_type_size(t))),
        p_stride(score_stride * 4 / static_cast<int64_t>(dense_type_size(t))),
        scale(static_cast<float>(1.0 / std::sqrt(static_cast<double>(desc.head_dim)))),  // as the CPU twin
        type(t) {}
  // Head h of the chunk starting at image n0 of out or dout, and of q, k, v or a grad of theirs.
  Operand head(const void* base, int64_t n0, int64_t h) const {
    return {at(base, n0 * token_stride + h * d, type), width, token_stride, type};
  }
  Operand input_head(const void* base, int64_t n0, int64_t h) const {
    return {at(base, n0 * qkv_stride + h * d, type), qkv_ld, qkv_stride, type};
  }
  // Head h's f32 scores (or dP) in a chunk's scratch, and the same rows read as P (or dS).
  Operand scores(float* s, int64_t h) const { return {s + h * len * len, len, score_stride, DenseType::f32}; }
  Operand probs(float* s, int64_t h) const { return {s + h * len * len, p_ld, p_stride, type}; }
};

void check_gemm_path(const AttentionDesc& d) {
  require(d.n >= 0 && d.len >= 0 && d.heads >= 1 && d.head_dim >= 0, [&] {
    return "attention (GEMM path): bad shape N " + std::to_string(d.n) + ", L " + std::to_string(d.len) + ", heads " +
           std::to_string(d.heads) + ", head dim " + std::to_string(d.head_dim);
  });
}

// Images per chunk: as many as fit the budget, at least one.
int64_t chunk_images(const AttentionDesc& d, bool with_dp) {
  const int64_t per_image = attention_gemm_scratch_bytes(d, 1, with_dp);
  return std::clamp<int64_t>(g_budget.load() / std::max<int64_t>(per_image, 1), 1, d.n);
}

}  // namespace

AttentionPath attention_device_path(const AttentionDesc& d) {
  const AttentionPathChoice choice = g_choice.load();
  if (!flash_takes(d) || choice == AttentionPathChoice::gemm) return AttentionPath::gemm;
  if (choice == AttentionPathChoice::flash) return AttentionPath::flash;
  return attention_gemm_scratch_bytes(d, d.n, true) <= g_budget.load() ? AttentionPath::gemm : AttentionPath::flash;
}

void set_attention_path_setting(const AttentionPathSetting& setting) {
  require(setting.gemm_scratch_budget >= 0, "attention: the GEMM path's scratch budget must be >= 0 bytes");
  g_choice.store(setting.choice);
  g_budget.store(setting.gemm_scratch_budget);
}
AttentionPathSetting attention_path_setting() { return {g_choice.load(), g_budget.load()}; }

void attention_gemm_forward(const AttentionDesc& d, DenseType type, const void* q, const void* k, const void* v,
                            void* out, float* lse, const DeviceMemory& mem, Stream stream) {
  check_gemm_path(d);
  if (d.n * d.len * d.head_dim == 0) return;  // out is empty (d = 0: so are the grads)
  require(q && k && v && out, "attention_gemm_forward: null buffer");
  const Geometry g(d, type);
  const int64_t chunk = chunk_images(d, false);
  ScratchBuffer scores(mem, static_cast<size_t>(attention_gemm_scratch_bytes(d, chunk, false)));
  float* s = static_cast<float*>(scores.data());
  for (int64_t n0 = 0; n0 < d.n; n0 += chunk) {
    const int64_t images = std::min(chunk, d.n - n0);
    for (int64_t h = 0; h < d.heads; ++h)  // S = scale · q kᵀ
      batched_gemm(false, true, d.len, d.len, d.head_dim, g.scale, g.input_head(q, n0, h), g.input_head(k, n0, h),
                   g.scores(s, h), images, mem, stream);
    attention_softmax_rows(images * d.heads * d.len, d.len, type, s, lse ? lse + n0 * d.heads * d.len : nullptr,
                           stream);
    for (int64_t h = 0; h < d.heads; ++h)  // out = P v
      batched_gemm(false, false, d.len, d.head_dim, d.len, 1.0f, g.probs(s, h), g.input_head(v, n0, h),
                   g.head(out, n0, h), images, mem, stream);
  }
}

void attention_gemm_backward(const AttentionDesc& d, DenseType type, const void* q, const void* k, const void* v,
                             const void* /*out: not read (delta comes from P and dP)*/, const void* dout,
                             const float* lse, void* dq, void* dk, void* dv,
                             const DeviceMemory& mem, Stream stream) {
  check_gemm_path(d);
  if (d.n * d.len * d.head_dim == 0 || (!dq && !dk && !dv)) return;
  require(q && k && v && dout && lse, "attention_gemm_backward: null buffer");
  const Geometry g(d, type);
  const bool with_dp = dq || dk;
  const int64_t chunk = chunk_images(d, with_dp);
  ScratchBuffer scratch(mem, static_cast<size_t>(attention_gemm_scratch_bytes(d, chunk, with_dp)));
  float* s = static_cast<float*>(scratch.data());
  float* dp = with_dp ? s + chunk * g.score_stride : nullptr;
  for (int64_t n0 = 0; n0 < d.n; n0 += chunk) {
    const int64_t images = std::min(chunk, d.n - n0), stat = n0 * d.heads * d.len;
    for (int64_t h = 0; h < d.heads; ++h) {
      // S = scale · q kᵀ (the forward's call: the same bits), dP = dout vᵀ
      batched_gemm(false, true, d.len, d.len, d.head_dim, g.scale, g.input_head(q, n0, h), g.input_head(k, n0, h),
                   g.scores(s, h), images, mem, stream);
      if (with_dp)
        batched_gemm(false, true, d.len, d.len, d.head_dim, 1.0f, g.head(dout, n0, h), g.input_head(v, n0, h),
                     g.scores(dp, h), images, mem, stream);
    }
    attention_softmax_grad(images * d.heads * d.len, d.len, type, s, dp, lse + stat, stream);
    for (int64_t h = 0; h < d.heads; ++h) {
      if (dv)  // dv = Pᵀ dout
        batched_gemm(true, false, d.len, d.head_dim, d.len, 1.0f, g.probs(s, h), g.head(dout, n0, h),
                     g.input_head(dv, n0, h), images, mem, stream);
      if (dq)  // dq = scale · dS k
        batched_gemm(false, false, d.len, d.head_dim, d.len, g.scale, g.probs(dp, h), g.input_head(k, n0, h),
                     g.input_head(dq, n0, h), images, mem, stream);
      if (dk)  // dk = scale · dSᵀ q
        batched_gemm(true, false, d.len, d.head_dim, d.len, g.scale, g.probs(dp, h), g.input_head(q, n0, h),
                     g.input_head(dk, n0, h), images, mem, stream);
    }
  }
}

}  // namespace diffuse::kernels::cuda
