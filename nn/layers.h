// The UNet's building blocks with diffusers' parameter names: Conv2d, Linear, GroupNorm,
// ResnetBlock2D, AttentionBlock, TimestepEmbedding. Each holds its parameters as Tensors and lists
// them under a name prefix; initialisation follows PyTorch's defaults, drawn from Philox (kInit).
// Forward passes are compositions of nn/ops.h, so autograd comes for free.
//
// bf16 autocast: while an AutocastBf16 is alive on the thread, the layers whose work is GEMM-shaped
// (Conv2d, Linear, the attention core) run on CUDA in bf16 storage with f32 accumulation and hand
// on bf16 activations: the f32 master weight and bias are cast to bf16 on the fly (ops::cast, whose
// backward casts the grad back, so gradients reach the master weights in f32), an f32 input is
// cast once (the UNet's sample), and the output stays bf16. The custom kernels between those
// layers take bf16 storage with f32 math (group norm with f32 statistics, gamma, beta and add_nc;
// SiLU, residual adds, concat, upsampling, dropout), so activations stay bf16 from conv_in to
// conv_out and UNet2D::forward casts only its output back to f32. The timestep embedding, its MLP
// and every time_emb_proj stay f32 (they are [N, C], and feed group norm's f32 add_nc), and so does
// the loss. Weights are cast per forward rather than kept as a bf16 copy refreshed after each
// optimizer step: a training step reads each f32 weight once either way (6 bytes moved per
// parameter for the cast, the same as a refresh), and no second copy can go stale after a load,
// an EMA swap or a resume. Sampling, whose weights do not change while its loop runs, keeps the
// copies for the loop instead (KeepBf16Weights). The CPU has no bf16 kernels: a layer on a CPU
// tensor under autocast is an error.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "nn/ops.h"
#include "nn/tensor.h"

namespace diffuse {

using ParamList = std::vector<std::pair<std::string, Tensor*>>;

// Draws initial values; each parameter takes the next stretch of the kInit stream.
struct InitRng {
  uint64_t seed = 0;
  uint64_t offset = 0;
  Tensor uniform(const Shape& shape, double bound);  // U(-bound, bound)
  Tensor normal(const Shape& shape);                 // N(0, 1)
};

// What a forward pass needs besides its inputs: training mode and the dropout stream position.
struct ForwardContext {
  bool training = false;
  uint64_t dropout_seed = 0;
  uint64_t dropout_offset = 0;  // advanced by every dropout that draws
  // Optional: i64 [1] in the model's device memory holding the position at the forward's start
  // (dropout_start). The draws then read it when they run, at block base + (dropout_offset −
  // dropout_start): the same blocks, but a replayed CUDA graph takes them from memory written
  // before each replay (the training step, docs/design.md §4). The host position still advances.
  Tensor dropout_base;
  uint64_t dropout_start = 0;
};

// bf16 autocast for this thread while alive (on = false suspends it); nests, restoring the
// previous state.
class AutocastBf16 {
 public:
  explicit AutocastBf16(bool on = true);
  ~AutocastBf16();
  AutocastBf16(const AutocastBf16&) = delete;
  AutocastBf16& operator=(const AutocastBf16&) = delete;

 private:
  bool previous_;
};
bool autocast_bf16();

// While one is alive on the thread and autograd is not recording, autocast's bf16 copies of the
// Conv2d and Linear weights and biases are made once and reused by later forwards (keyed by the
// f32 tensor's memory), so a forward casts only its sample and output. For a loop whose weights
// cannot change while it lasts: Sampler::sample holds one around its steps, so a step after the
// first makes no weight cast and a replayed CUDA graph has no cast nodes. Never hold one across
// anything that writes weights (an optimizer step, a load, an EMA swap): its copies would be stale.
// Nests: an inner one keeps its own copies.
class KeepBf16Weights {
 public:
  KeepBf16Weights();
  ~KeepBf16Weights();
  KeepBf16Weights(const KeepBf16Weights&) = delete;
  KeepBf16Weights& operator=(const KeepBf16Weights&) = delete;
  struct Copies;

 private:
  std::unique_ptr<Copies> copies_;
  Copies* previous_;
};

struct Conv2d {
  Tensor weight;  // [out, kh, kw, in] (OHWI)
  Tensor bias;    // [out]
  ops::Conv2dOptions options;
  Conv2d() = default;
  Conv2d(int in, int out, int kernel, const ops::Conv2dOptions& opt, InitRng& rng);
  // x's dtype out; bf16 out under autocast. residual (the output's shape, or undefined) is cast to
  // the output's dtype and added in the conv's output pass (ops::conv2d).
  Tensor forward(const Tensor& x, const Tensor& residual = Tensor()) const;
  void collect(const std::string& prefix, ParamList& out);
};

struct Linear {
  Tensor weight;  // [out, in]
  Tensor bias;    // [out]
  Linear() = default;
  Linear(int in, int out, InitRng& rng);
  // x's dtype out; bf16 out under autocast. residual as Conv2d's (ops::linear).
  Tensor forward(const Tensor& x, const Tensor& residual = Tensor()) const;
  // x (and residual) cast to bf16, weights cast on the fly; bf16 out
  Tensor forward_bf16(const Tensor& x, const Tensor& residual = Tensor()) const;
  void collect(const std::string& prefix, ParamList& out);
};

struct GroupNorm {
  Tensor weight, bias;  // [C]: ones and zeros
  int groups = 32;
  double eps = 1e-5;
  GroupNorm() = default;
  GroupNorm(int groups, int channels, double eps);
  // x's dtype out (bf16 x under autocast; gamma, beta and add_nc f32 either way).
  Tensor forward(const Tensor& x, bool silu, const Tensor& add_nc = Tensor()) const;
  void collect(const std::string& prefix, ParamList& out);
};

struct ResnetBlock2D {
  GroupNorm norm1, norm2;
  Conv2d conv1, conv2;
  Linear time_emb_proj;
  bool has_shortcut = false;
  Conv2d conv_shortcut;  // 1x1, when in != out
  double dropout = 0;
  ResnetBlock2D() = default;
  ResnetBlock2D(int in, int out, int temb, int groups, double eps, double dropout, InitRng& rng);
  // temb_act: SiLU(time embedding) [N, temb], shared by every block.
  Tensor forward(const Tensor& x, const Tensor& temb_act, ForwardContext& ctx) const;
  void collect(const std::string& prefix, ParamList& out);
};

// diffusers' Attention as UNet2DModel uses it: group norm, q/k/v projections, softmax(q kᵀ/√d) v,
// output projection, residual. NHWC in and out. to_q, to_k and to_v stay three Linears (their
// names and tensors are diffusers'), but forward runs them as one linear over their stacked
// weights into ops::attention_packed (nn/layers.cpp says why).
struct AttentionBlock {
  GroupNorm group_norm;
  Linear to_q, to_k, to_v, to_out;
  int heads = 1;
  AttentionBlock() = default;
  AttentionBlock(int channels, int head_dim, int groups, double eps, InitRng& rng);
  Tensor forward(const Tensor& x) const;
  void collect(const std::string& prefix, ParamList& out);
};

struct TimestepEmbedding {
  Linear linear_1, linear_2;
  TimestepEmbedding() = default;
  TimestepEmbedding(int in, int dim, InitRng& rng);
  Tensor forward(const Tensor& t_emb) const;  // f32 even under autocast
  void collect(const std::string& prefix, ParamList& out);
};

}  // namespace diffuse
