// Embedding kernels: a lookup table [V, D] indexed by integer ids [N] (class labels), its
// backward (scatter-add into a [V, D] grad; ids may repeat), and the sinusoidal timestep
// embedding of diffusers' get_timestep_embedding (docs/design.md §7). The f32 timestep path repeats
// diffusers' float32 arithmetic step by step, because a 1-ulp change in a frequency becomes a
// visible change of sin(t·freq) once t is in the hundreds.
#pragma once
#include <cstdint>

#include "kernels/common.h"

namespace diffuse::kernels {

struct EmbeddingDesc {
  int64_t n = 0;  // number of indices
  int64_t v = 0;  // table rows
  int64_t d = 0;  // table width
};

struct TimestepEmbeddingDesc {
  int64_t n = 0;               // number of timesteps
  int64_t dim = 0;             // output width; an odd width gets a zero last column
  bool flip_sin_to_cos = false;  // [cos, sin] instead of [sin, cos]
  double freq_shift = 1.0;     // diffusers' downscale_freq_shift
  bool broadcast_t = false;    // t holds one timestep, shared by all n rows
};

namespace cpu {
// Position of the first index outside [0, v), or -1 when all are valid.
template <typename I>
int64_t first_out_of_range(int64_t n, int64_t v, const I* index);
// out[i, :] = table[index[i], :]. Indices must have been validated.
template <typename T, typename I>
void embedding_forward(const EmbeddingDesc& d, const T* table, const I* index, T* out);
// gtable = 0, then gtable[index[i], :] += gout[i, :].
template <typename T, typename I>
void embedding_backward(const EmbeddingDesc& d, const I* index, const T* gout, T* gtable);
// out [n, dim] from timesteps t [n]; T (float or double) is the arithmetic and output type.
template <typename T, typename TIn>
void timestep_embedding(const TimestepEmbeddingDesc& d, const TIn* t, T* out);
}  // namespace cpu

// Device launchers (kernels/cuda/embedding.cu), f32 tables with i32 or i64 indices: cuda:: takes
// device pointers, emu:: host pointers. Indices must have been validated (an index outside the
// table gives a NaN row forward and is skipped backward). The backward adds each table row's
// grads in index order with no atomics, so it is deterministic and equals the CPU twin exactly.
// The timestep embedding runs the CPU twin's f32 arithmetic operation by operation (no contraction
// into FMAs), with the device's expf/sinf/cosf: under the emulator those are the host's, so it
// equals the CPU bit for bit; on a GPU they are CUDA's (within 2 ulp), as for diffusers on CUDA.
#define DIFFUSE_EMBEDDING_LAUNCHERS                                                                      \
  void embedding_forward(const EmbeddingDesc& d, const float* table, const int32_t* index, float* out,  \
                         Stream stream);                                                                \
  void embedding_forward(const EmbeddingDesc& d, const float* table, const int64_t* index, float* out,  \
                         Stream stream);                                                                \
  void embedding_backward(const EmbeddingDesc& d, const int32_t* index, const float* gout, float* gtable, \
                          Stream stream);                                                               \
  void embedding_backward(const EmbeddingDesc& d, const int64_t* index, const float* gout, float* gtable, \
                          Stream stream);                                                               \
  void timestep_embedding(const TimestepEmbeddingDesc& d, const float* t, float* out, Stream stream);      \
  void timestep_embedding(const TimestepEmbeddingDesc& d, const int32_t* t, float* out, Stream stream);    \
  void timestep_embedding(const TimestepEmbeddingDesc& d, const int64_t* t, float* out, Stream stream);
namespace cuda {
DIFFUSE_EMBEDDING_LAUNCHERS
}
namespace emu {
DIFFUSE_EMBEDDING_LAUNCHERS
}
#undef DIFFUSE_EMBEDDING_LAUNCHERS

}  // namespace diffuse::kernels
