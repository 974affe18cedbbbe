// CPU optimizer kernels (see kernels/optim.h). Every list is cut into chunks of at most kChunk
// elements (the blocks of a multi-tensor launch); chunks run in parallel, and reductions keep one
// partial per chunk summed in order so the result does not depend on the thread count.
#include "kernels/optim.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace diffuse::kernels::cpu {
namespace {

constexpr int64_t kChunk = 1 << 16;

struct Chunk {
  int64_t entry, begin, end;
};

template <typename Sized>
std::vector<Chunk> make_chunks(const Sized* list, int64_t count) {
  std::vector<Chunk> chunks;
  for (int64_t e = 0; e < count; ++e)
    for (int64_t b = 0; b < list[e].n; b += kChunk) chunks.push_back({e, b, std::min(list[e].n, b + kChunk)});
  return chunks;
}

}  // namespace

template <typename T>
void adamw_ema_step(const AdamWHyper& h, const OptimEntry<T>* entries, int64_t count) {
  const T decay_factor = static_cast<T>(1.0 - h.lr * h.weight_decay);
  const T b1 = static_cast<T>(h.beta1), one_minus_b1 = static_cast<T>(1.0 - h.beta1);
  const T b2 = static_cast<T>(h.beta2), one_minus_b2 = static_cast<T>(1.0 - h.beta2);
  const T eps = static_cast<T>(h.eps);
  const T one_minus_decay = static_cast<T>(1.0 - h.ema_decay);
  std::vector<Chunk> chunks = make_chunks(entries, count);
  const int64_t nchunks = static_cast<int64_t>(chunks.size());
#pragma omp parallel for schedule(dynamic, 1) if (nchunks > 1)
  for (int64_t c = 0; c < nchunks; ++c) {
    const OptimEntry<T>& e = entries[chunks[c].entry];
    const T neg_step_size = static_cast<T>(-e.step_size);
    const T bc2_sqrt = static_cast<T>(e.bias_correction2_sqrt);
    for (int64_t i = chunks[c].begin; i < chunks[c].end; ++i) {
      T p = e.param[i];
      if (e.grad) {
        const T g = e.grad[i];
        p *= decay_factor;
        const T m = b1 * e.exp_avg[i] + one_minus_b1 * g;
        const T v = b2 * e.exp_avg_sq[i] + one_minus_b2 * (g * g);
        e.exp_avg[i] = m;
        e.exp_avg_sq[i] = v;
        const T denom = std::sqrt(v) / bc2_sqrt + eps;
        p += neg_step_size * (m / denom);
        e.param[i] = p;
      }
      if (e.ema) e.ema[i] -= one_minus_decay * (e.ema[i] - p);
    }
  }
}

template <typename T>
double sum_of_squares(const Span<const T>* spans, int64_t count) {
  std::vector<Chunk> chunks = make_chunks(spans, count);
  const int64_t nchunks = static_cast<int64_t>(chunks.size());
  std::vector<double> partial(chunks.size(), 0.0);
#pragma omp parallel for schedule(dynamic, 1) if (nchunks > 1)
  for (int64_t c = 0; c < nchunks; ++c) {
    const T* x = spans[chunks[c].entry].data;
    double acc = 0;
    for (int64_t i = chunks[c].begin; i < chunks[c].end; ++i) acc += double(x[i]) * double(x[i]);
    partial[c] = acc;
  }
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

template <typename T>
void scale_all(const Span<T>* spans, int64_t count, double factor) {
  const T f = static_cast<T>(factor);
  std::vector<Chunk> chunks = make_chunks(spans, count);
  const int64_t nchunks = static_cast<int64_t>(chunks.size());
#pragma omp parallel for schedule(dynamic, 1) if (nchunks > 1)
  for (int64_t c = 0; c < nchunks; ++c) {
    T* x = spans[chunks[c].entry].data;
    for (int64_t i = chunks[c].begin; i < chunks[c].end; ++i) x[i] *= f;
  }
}

#define DIFFUSE_INSTANTIATE(T)                                                    \
  template void adamw_ema_step<T>(const AdamWHyper&, const OptimEntry<T>*, int64_t); \
  template double sum_of_squares<T>(const Span<const T>*, int64_t);                \
  template void scale_all<T>(const Span<T>*, int64_t, double);
DIFFUSE_INSTANTIATE(float)
DIFFUSE_INSTANTIATE(double)
#undef DIFFUSE_INSTANTIATE

}  // namespace diffuse::kernels::cpu
