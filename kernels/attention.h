// Multi-head self-attention: q, k, v [N, L, heads * d] read as [N, L, heads, d] (no transpose:
// a head is a strided GEMM operand with leading dimension heads * d, or 3 · heads * d when q, k
// and v are packed in one tensor: AttentionDesc::packed); out = softmax(q kᵀ / √d) v in the
// [N, L, heads * d] layout. The CPU path works on tiles of query rows (a backward of L <= 256 on one
// pair's whole transposed L×L tile), holding the probabilities of one tile per thread at a time
// (kernels/cpu/attention.cpp), and its backward recomputes them. CUDA has two paths,
// both writing the per-row log-sum-exp [N, heads, L] f32 in the forward, from which their backward
// rebuilds P: flash-style kernels that never store the L×L scores (attention_forward.cu,
// attention_backward.cu; SIMT f32, head dims 32..256), and batched cuBLAS GEMMs on tensor cores
// around a softmax kernel, with the scores of a chunk of images in scratch (attention_gemm.cpp,
// attention_softmax.cu; any head dim). attention_device_path is the one rule between them.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>

#include "kernels/common.h"
#include "kernels/gemm.h"

namespace diffuse::kernels {

struct AttentionDesc {
  int64_t n = 0, len = 0, heads = 1, head_dim = 0;
  // q, k and v (and their grads) as one packed tensor qkv [N, L, 3W] (the attention block's fused
  // projection, ops::attention_packed): q, k and v side by side in each row, k at column W and v at
  // 2W, so their row stride is 3W; out and dout stay [N, L, W]. The launchers take the q, k and v
  // pointers already offset (part_offset); only the row stride changes inside.
  bool packed = false;
  int64_t width() const { return heads * head_dim; }
  int64_t qkv_ld() const { return packed ? 3 * width() : width(); }  // row stride of q, k, v, dq, dk, dv
  // Elements from the start of the tensor given for part (0 q, 1 k, 2 v) to the part's first column.
  int64_t part_offset(int part) const { return packed ? part * width() : 0; }
};

// Part `part` (0 q, 1 k, 2 v) of the buffer given for it (a grad's too), or null for null; `bytes`
// per element for untyped storage.
template <typename T>
T* attention_part(const AttentionDesc& d, T* base, int part) {
  return base ? base + d.part_offset(part) : nullptr;
}
inline const void* attention_part(const AttentionDesc& d, const void* base, int part, size_t bytes) {
  return base ? static_cast<const char*>(base) + d.part_offset(part) * static_cast<int64_t>(bytes) : nullptr;
}
inline void* attention_part(const AttentionDesc& d, void* base, int part, size_t bytes) {
  return base ? static_cast<char*>(base) + d.part_offset(part) * static_cast<int64_t>(bytes) : nullptr;
}

namespace cpu {
template <typename T>
void attention_forward(const AttentionDesc& d, const T* q, const T* k, const T* v, T* out);
// out is the forward's output; dout its grad. Any of dq, dk, dv may be null (not wanted).
template <typename T>
void attention_backward(const AttentionDesc& d, const T* q, const T* k, const T* v, const T* out, const T* dout,
                        T* dq, T* dk, T* dv);
}  // namespace cpu

// What the device kernels accept (kernels/cuda/attention_*.cu): head dims 32, 64, 128, 256 (tiles
// are compiled per dim), grid limits, and 16-byte aligned buffers (the tile loads are vectorised).
inline bool attention_device_head_dim(int64_t head_dim) {
  return head_dim == 32 || head_dim == 64 || head_dim == 128 || head_dim == 256;
}
inline void check_attention_device(const AttentionDesc& d, std::initializer_list<const void*> buffers) {
  auto what = [&](const char* problem) {
    return "attention: N " + std::to_string(d.n) + ", L " + std::to_string(d.len) + ", heads " +
           std::to_string(d.heads) + ", head dim " + std::to_string(d.head_dim) + ": " + problem;
  };
  require(attention_device_head_dim(d.head_dim), [&] { return what("the CUDA kernels support head dims 32, 64, 128 and 256"); });
  require(d.n >= 0 && d.n <= 65535 && d.heads >= 1 && d.heads <= 65535 && d.len >= 0 && d.len <= (int64_t{1} << 30),
          [&] { return what("outside the kernels' grid limits (N and heads at most 65535, L at most 2^30)"); });
  for (const void* p : buffers)
    require(reinterpret_cast<uintptr_t>(p) % 16 == 0, [&] { return what("device buffers must be 16-byte aligned"); });
}

// Device launchers: cuda:: takes device pointers, emu:: host pointers (the SIMT emulator). bf16
// tensors are passed as their uint16_t bit patterns; arithmetic is f32 either way.
//  forward: out [N, L, heads*d] in the input type; lse [N, heads, L] f32 = log Σ_j exp(s_ij), or
//    null when no backward will run.
//  backward: out and lse from the forward, dout the output's grad; delta is f32 scratch
//    [N, heads, L] (it receives rowsum(dout ∘ out)). Any of dq, dk, dv may be null (not wanted).
//    Deterministic: no atomics; dq comes from its own pass over the keys.
#define DIFFUSE_ATTENTION_LAUNCHERS_FOR(T)                                                                    \
  void attention_forward(const AttentionDesc& d, const T* q, const T* k, const T* v, T* out, float* lse,     \
                         Stream stream);                                                                     \
  void attention_backward(const AttentionDesc& d, const T* q, const T* k, const T* v, const T* out,          \
                          const T* dout, const float* lse, float* delta, T* dq, T* dk, T* dv, Stream stream);
#define DIFFUSE_ATTENTION_LAUNCHERS         \
  DIFFUSE_ATTENTION_LAUNCHERS_FOR(float)    \
  DIFFUSE_ATTENTION_LAUNCHERS_FOR(uint16_t)
namespace cuda {
DIFFUSE_ATTENTION_LAUNCHERS
}
namespace emu {
DIFFUSE_ATTENTION_LAUNCHERS
}
#undef DIFFUSE_ATTENTION_LAUNCHERS
#undef DIFFUSE_ATTENTION_LAUNCHERS_FOR

// The GEMM path's kernels (attention_softmax.cu), between the cuBLAS calls of attention_gemm.cpp.
// Scores are f32 rows of `len` (row r at s + r·len: [images, heads, L, L]); P and dS are written in
// the storage type `p_type` IN PLACE over the rows they come from (row r's P starts where its
// scores start, so P has a leading dimension of len·4/sizeof(storage) elements), which needs no
// second L×L buffer. One warp per row; all statistics f32.
//  softmax_rows: P = exp(s − max) / Σ exp(s − max) per row, and lse[r] = max + log Σ (may be null).
//  softmax_grad: P = exp(s − lse[r]) over s, and, when dp is not null, dS = P ∘ (dp − delta_r)
//    over dp, with delta_r = Σ_j P_rj dp_rj in f32 (attention_softmax.cu says why not rowsum(dout ∘ out)).
#define DIFFUSE_ATTENTION_GEMM_KERNELS                                                                        \
  void attention_softmax_rows(int64_t rows, int64_t len, DenseType p_type, float* s, float* lse, Stream stream); \
  void attention_softmax_grad(int64_t rows, int64_t len, DenseType p_type, float* s, float* dp, const float* lse, \
                              Stream stream);
namespace cuda {
DIFFUSE_ATTENTION_GEMM_KERNELS
}
namespace emu {
DIFFUSE_ATTENTION_GEMM_KERNELS
}
#undef DIFFUSE_ATTENTION_GEMM_KERNELS

namespace cuda {

// Which CUDA path an attention call takes. THE rule (attention_device_path, attention_gemm.cpp):
//  - the GEMM path when the flash kernels cannot take the call: a head dim other than 32, 64, 128,
//    256, or N or heads past their grid limit. It then runs in chunks of images whose scratch fits
//    the budget, kAttentionGemmScratchBudget unless a test lowers it (at least one image);
//  - else the GEMM path when the backward's scratch for the whole batch, N·heads·L²·8 bytes (the
//    f32 scores and dP, P and dS written over them), fits the budget: one chunk, a handful of
//    launches, tensor-core GEMMs (bf16 in, f32 accumulation), where the SIMT f32 flash kernels
//    measured 0.23 ms forward / 0.86 ms backward per call at ddpm-cifar10's shape (batch 64, H200),
//    0.25-0.5x the speed of cuBLAS + cuDNN softmax (`diffuse bench kernels` has both paths' rows);
//  - else flash: memory linear in L where the L×L scores would not fit the budget at once.
// The forward and backward decide independently (both paths' lse mean the same thing).
enum class AttentionPath { flash, gemm };
// 512 MiB: ddpm-cifar10's 16×16 attention (L = 256, one head) at batch 128 needs 64 MiB, fmnist-small's
// (four heads) 256 MiB; a 32×32 map (L = 1024) at batch 64 would need 512 MiB.
constexpr int64_t kAttentionGemmScratchBudget = int64_t{512} << 20;
// The GEMM path's scratch for `images` images: f32 scores, plus f32 dP in a backward that wants dq or dk.
inline int64_t attention_gemm_scratch_bytes(const AttentionDesc& d, int64_t images, bool with_dp) {
  return images * d.heads * d.len * d.len * 4 * (with_dp ? 2 : 1);
}
AttentionPath attention_device_path(const AttentionDesc& d);
// Tests and benchmarks: force a path for every later call (`automatic`: the rule), and lower the
// scratch budget (so tiny shapes run the GEMM path in chunks), process-wide. A forced flash falls
// back to the GEMM path where the flash kernels cannot take the call.
enum class AttentionPathChoice { automatic, flash, gemm };
struct AttentionPathSetting {
  AttentionPathChoice choice = AttentionPathChoice::automatic;
  int64_t gemm_scratch_budget = kAttentionGemmScratchBudget;
};
void set_attention_path_setting(const AttentionPathSetting& setting);
AttentionPathSetting attention_path_setting();
class ScopedAttentionPath {  // a setting for a scope, the previous one restored after it
 public:
  explicit ScopedAttentionPath(AttentionPathChoice choice, int64_t gemm_scratch_budget = kAttentionGemmScratchBudget)
      : saved_(attention_path_setting()) {
    set_attention_path_setting({choice, gemm_scratch_budget});
  }
  ~ScopedAttentionPath() { set_attention_path_setting(saved_); }
  ScopedAttentionPath(const ScopedAttentionPath&) = delete;
  ScopedAttentionPath& operator=(const ScopedAttentionPath&) = delete;

 private:
  AttentionPathSetting saved_;
};

// The GEMM path (attention_gemm.cpp): the same contract as attention_forward/backward above, in
// `type` storage, any head dim >= 1, no alignment demand; scratch from `mem`.
//  forward: S = scale·q kᵀ (f32), softmax_rows, out = P v, per chunk of images.
//  backward, per chunk: S again, dP = dout vᵀ (when dq or dk is wanted), softmax_grad, dv = Pᵀ dout,
//  dq = scale·dS k, dk = scale·dSᵀ q (out is not read). cuBLAS GEMMs and these kernels only:
//  deterministic, no atomics.
void attention_gemm_forward(const AttentionDesc& d, DenseType type, const void* q, const void* k, const void* v,
                            void* out, float* lse, const DeviceMemory& mem, Stream stream);
void attention_gemm_backward(const AttentionDesc& d, DenseType type, const void* q, const void* k, const void* v,
                             const void* out, const void* dout, const float* lse, void* dq, void* dk, void* dv,
                             const DeviceMemory& mem, Stream stream);

}  // namespace cuda

}  // namespace diffuse::kernels
