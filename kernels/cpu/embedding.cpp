// CPU embedding kernels (see kernels/embedding.h). The backward is serial over indices because
// repeated ids add into the same table row.
#include "kernels/embedding.h"

#include <cmath>
#include <cstring>

namespace diffuse::kernels::cpu {

template <typename I>
int64_t first_out_of_range(int64_t n, int64_t v, const I* index) {
  for (int64_t i = 0; i < n; ++i)
    if (index[i] < 0 || static_cast<int64_t>(index[i]) >= v) return i;
  return -1;
}

template <typename T, typename I>
void embedding_forward(const EmbeddingDesc& d, const T* table, const I* index, T* out) {
  if (d.d == 0) return;
  for (int64_t i = 0; i < d.n; ++i) std::memcpy(out + i * d.d, table + static_cast<int64_t>(index[i]) * d.d, sizeof(T) * d.d);
}

template <typename T, typename I>
void embedding_backward(const EmbeddingDesc& d, const I* index, const T* gout, T* gtable) {
  for (int64_t i = 0; i < d.v * d.d; ++i) gtable[i] = T(0);
  for (int64_t i = 0; i < d.n; ++i) {
    T* row = gtable + static_cast<int64_t>(index[i]) * d.d;
    const T* g = gout + i * d.d;
    for (int64_t j = 0; j < d.d; ++j) row[j] += g[j];
  }
}

template <typename T, typename TIn>
void timestep_embedding(const TimestepEmbeddingDesc& d, const TIn* t, T* out) {
  const int64_t half = d.dim / 2;
  // diffusers: exponent = -ln(max_period) * arange(half) (float32), / (half - shift), exp; the
  // Python scalars enter float32 arithmetic as float32.
  const T neg_log_period = static_cast<T>(-std::log(10000.0));
  const T denom = static_cast<T>(static_cast<double>(half) - d.freq_shift);
  const int64_t sin_at = d.flip_sin_to_cos ? half : 0;
  const int64_t cos_at = d.flip_sin_to_cos ? 0 : half;
  for (int64_t n = 0; n < d.n; ++n) {
    const T tn = static_cast<T>(t[d.broadcast_t ? 0 : n]);
    T* row = out + n * d.dim;
    for (int64_t i = 0; i < half; ++i) {
      T exponent = neg_log_period * static_cast<T>(i);
      exponent = exponent / denom;
      T arg = tn * std::exp(exponent);
      row[sin_at + i] = std::sin(arg);
      row[cos_at + i] = std::cos(arg);
    }
    if (d.dim % 2 == 1) row[d.dim - 1] = T(0);
  }
}

#define DIFFUSE_INSTANTIATE_INDEX(I)                                              \
  template int64_t first_out_of_range<I>(int64_t, int64_t, const I*);              \
  template void embedding_forward<float, I>(const EmbeddingDesc&, const float*, const I*, float*);    \
  template void embedding_forward<double, I>(const EmbeddingDesc&, const double*, const I*, double*); \
  template void embedding_backward<float, I>(const EmbeddingDesc&, const I*, const float*, float*);   \
  template void embedding_backward<double, I>(const EmbeddingDesc&, const I*, const double*, double*);
DIFFUSE_INSTANTIATE_INDEX(int32_t)
DIFFUSE_INSTANTIATE_INDEX(int64_t)
#undef DIFFUSE_INSTANTIATE_INDEX

template void timestep_embedding<float, float>(const TimestepEmbeddingDesc&, const float*, float*);
template void timestep_embedding<float, int32_t>(const TimestepEmbeddingDesc&, const int32_t*, float*);
template void timestep_embedding<float, int64_t>(const TimestepEmbeddingDesc&, const int64_t*, float*);
template void timestep_embedding<double, double>(const TimestepEmbeddingDesc&, const double*, double*);

}  // namespace diffuse::kernels::cpu
