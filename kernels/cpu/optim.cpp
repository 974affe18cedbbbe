// CPU optimizer kernels (see kernels/optim.h). Every list is cut into chunks of at most kChunk
// elements (the blocks of a multi-tensor launch); chunks run in parallel, and reductions keep one
// partial per chunk summed in order so the result does not depend on the thread count. f32 runs
// the vector loops of kernels/cpu/simd/ (AdamW + EMA in one pass per chunk, the sum of squares
// and the scaling); f64 keeps the scalar ones. The chunk list and the partials live in grow-only
// buffers of the calling thread: a steady-state step allocates nothing here. A gated update
// (kernels/optim.h) reads its lr, step count and EMA step from `state` (host memory here).
#include "kernels/optim.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd/elementwise.h"
#include "kernels/cpu/simd/optim.h"
#include "kernels/gemm.h"  // thread_scratch

namespace diffuse::kernels::cpu {
namespace {

constexpr int64_t kChunk = 1 << 16;

struct Chunk {
  int64_t entry, begin, end;
  int64_t first;  // the chunk's first element in the concatenation of every entry
};

// The chunks of every entry in order, in this thread's buffer (valid until the next call).
template <typename Sized>
const std::vector<Chunk>& make_chunks(const Sized* list, int64_t count) {
  thread_local std::vector<Chunk> chunks;
  chunks.clear();
  int64_t first = 0;
  for (int64_t e = 0; e < count; ++e)
    for (int64_t b = 0; b < list[e].n; b += kChunk) {
      const int64_t end = std::min(list[e].n, b + kChunk);
      chunks.push_back({e, b, end, first});
      first += end - b;
    }
  return chunks;
}

// fn(chunk index) for every chunk, in one parallel region (none for little work). The region
// hands out ranges of elements, not of chunks, so that a run of small tensors (biases, norms) and
// one large weight weigh what their sizes say: a range runs the chunks that start inside it.
template <typename Fn>
void for_each_chunk(const std::vector<Chunk>& chunks, double cost_per_element, Fn fn) {
  if (chunks.empty()) return;
  const int64_t total = chunks.back().first + (chunks.back().end - chunks.back().begin);
  parallel_for(total, cost_per_element, [&](int64_t begin, int64_t end) {
    auto it = std::lower_bound(chunks.begin(), chunks.end(), begin,
                               [](const Chunk& c, int64_t at) { return c.first < at; });
    for (; it != chunks.end() && it->first < end; ++it) fn(static_cast<int64_t>(it - chunks.begin()));
  });
}

}  // namespace

template <typename T>
void adamw_ema_step(const AdamWHyper& h, const OptimEntry<T>* entries, int64_t count) {
  const bool gated = h.gate.state != nullptr;
  if (gated && gate_skips(h.gate)) return;  // a non-finite loss or grad norm: no update at all
  const GatedValues gv = gated ? gated_values(h) : GatedValues{h.lr, 0.0, 1.0, h.ema_decay};
  const T grad_scale = static_cast<T>(gated ? gate_grad_scale(h.gate) : 1.0f);  // x * 1 is exact
  const T decay_factor = static_cast<T>(1.0 - gv.lr * h.weight_decay);
  const T b1 = static_cast<T>(h.beta1), one_minus_b1 = static_cast<T>(1.0 - h.beta1);
  const T b2 = static_cast<T>(h.beta2), one_minus_b2 = static_cast<T>(1.0 - h.beta2);
  const T eps = static_cast<T>(h.eps);
  const T one_minus_decay = static_cast<T>(1.0 - gv.ema_decay);
  const std::vector<Chunk>& chunks = make_chunks(entries, count);
  for_each_chunk(chunks, 16.0, [&](int64_t c) {
    const OptimEntry<T>& e = entries[chunks[c].entry];
    const T neg_step_size = static_cast<T>(-(gated ? gv.step_size : e.step_size));
    const T bc2_sqrt = static_cast<T>(gated ? gv.bias_correction2_sqrt : e.bias_correction2_sqrt);
    const int64_t i0 = chunks[c].begin, n = chunks[c].end - i0;
    if constexpr (std::is_same_v<T, float>) {
      simd::AdamWChunk k;
      k.param = e.param + i0;
      k.grad = e.grad ? e.grad + i0 : nullptr;
      k.exp_avg = e.grad ? e.exp_avg + i0 : nullptr;
      k.exp_avg_sq = e.grad ? e.exp_avg_sq + i0 : nullptr;
      k.ema = e.ema ? e.ema + i0 : nullptr;
      k.n = n;
      k.decay_factor = decay_factor;
      k.beta1 = b1;
      k.one_minus_beta1 = one_minus_b1;
      k.beta2 = b2;
      k.one_minus_beta2 = one_minus_b2;
      k.eps = eps;
      k.neg_step_size = neg_step_size;
      k.bias_correction2_sqrt = bc2_sqrt;
      k.one_minus_ema_decay = one_minus_decay;
      k.grad_scale = grad_scale;
      simd::adamw_ema_chunk(k);
      return;
    }
    for (int64_t i = i0; i < i0 + n; ++i) {
      T p = e.param[i];
      if (e.grad) {
        const T g = e.grad[i] * grad_scale;
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
  });
}

template <typename T>
double sum_of_squares(const Span<const T>* spans, int64_t count) {
  const std::vector<Chunk>& chunks = make_chunks(spans, count);
  double* sums = thread_scratch_of<double>(0, chunks.size());  // taken on the calling thread
  for_each_chunk(chunks, 2.0, [&](int64_t c) {
    const T* x = spans[chunks[c].entry].data;
    const int64_t i0 = chunks[c].begin, n = chunks[c].end - i0;
    if constexpr (std::is_same_v<T, float>) {
      sums[c] = simd::sum_run(x + i0, x + i0, n);
    } else {
      double acc = 0;
      for (int64_t i = i0; i < i0 + n; ++i) acc += double(x[i]) * double(x[i]);
      sums[c] = acc;
    }
  });
  double total = 0;
  for (size_t c = 0; c < chunks.size(); ++c) total += sums[c];
  return total;
}

template <typename T>
void scale_all(const Span<T>* spans, int64_t count, double factor) {
  const T f = static_cast<T>(factor);
  const std::vector<Chunk>& chunks = make_chunks(spans, count);
  for_each_chunk(chunks, 1.0, [&](int64_t c) {
    T* x = spans[chunks[c].entry].data;
    const int64_t i0 = chunks[c].begin, n = chunks[c].end - i0;
    if constexpr (std::is_same_v<T, float>)
      simd::scale_run(f, x + i0, x + i0, n);
    else
      for (int64_t i = i0; i < i0 + n; ++i) x[i] *= f;
  });
}

void train_status(const DeviceStepGate& g, const int64_t* step, double* ring, int64_t rows, double* state) {
  require(g.state == state && step && ring && rows > 0 && state,
          "train_status: needs the gate's state, the step and a status ring of at least one row");
  train_status_row(g, step, ring, rows, state);
}

#define DIFFUSE_INSTANTIATE(T)                                                    \
  template void adamw_ema_step<T>(const AdamWHyper&, const OptimEntry<T>*, int64_t); \
  template double sum_of_squares<T>(const Span<const T>*, int64_t);                \
  template void scale_all<T>(const Span<T>*, int64_t, double);
DIFFUSE_INSTANTIATE(float)
DIFFUSE_INSTANTIATE(double)
#undef DIFFUSE_INSTANTIATE

}  // namespace diffuse::kernels::cpu
