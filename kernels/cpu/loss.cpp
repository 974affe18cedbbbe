// CPU dropout and MSE kernels (see kernels/loss.h): one parallel_for region each (kernels/cpu/
// parallel.h) over elements or batch items, none for small tensors. They cost next to nothing in a
// training step (well under 0.1% of a tiny step), so they stay scalar code.
#include "kernels/loss.h"

#include "kernels/cpu/parallel.h"
#include "kernels/gemm.h"

namespace diffuse::kernels::cpu {

template <typename T>
void dropout_apply(const DropoutDesc& desc, const T* x, T* y) {
  DropoutDesc d = desc;  // the position read once
  d.offset = dropout_first_block(desc);
  d.base = nullptr;
  const T scale = static_cast<T>(d.scale);
  // Cost 8 per element: a region from 8192 elements up, each drawing a Philox uniform.
  parallel_for(d.n, 8, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) y[i] = dropout_dropped(d, static_cast<uint64_t>(i)) ? T(0) : x[i] * scale;
  });
}

template <typename T>
double mse_weighted_sum(const MseDesc& d, const T* pred, const T* target, const T* w) {
  // Each item's sum lands in its own slot (the calling thread's scratch), added up in item order
  // afterwards: the total does not depend on how the items were split over threads.
  double* item_sums = thread_scratch_of<double>(0, size_t(d.batch));
  parallel_for(d.batch, 2.0 * double(d.per_item), [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      double item = 0;
      const T* p = pred + n * d.per_item;
      const T* t = target + n * d.per_item;
      for (int64_t i = 0; i < d.per_item; ++i) {
        double diff = double(p[i]) - double(t[i]);
        item += diff * diff;
      }
      item_sums[n] = w ? double(w[n]) * item : item;
    }
  });
  double total = 0;
  for (int64_t n = 0; n < d.batch; ++n) total += item_sums[n];
  return total;
}

template <typename T>
void mse_backward(const MseDesc& d, double coef, const T* pred, const T* target, const T* w, T* gpred) {
  parallel_for(d.batch, 2.0 * double(d.per_item), [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const T c = static_cast<T>(w ? coef * double(w[n]) : coef);
      const T* p = pred + n * d.per_item;
      const T* t = target + n * d.per_item;
      T* g = gpred + n * d.per_item;
      for (int64_t i = 0; i < d.per_item; ++i) g[i] = c * (p[i] - t[i]);
    }
  });
}

#define DIFFUSE_INSTANTIATE(T)                                                                   \
  template void dropout_apply<T>(const DropoutDesc&, const T*, T*);                              \
  template double mse_weighted_sum<T>(const MseDesc&, const T*, const T*, const T*);             \
  template void mse_backward<T>(const MseDesc&, double, const T*, const T*, const T*, T*);
DIFFUSE_INSTANTIATE(float)
DIFFUSE_INSTANTIATE(double)
#undef DIFFUSE_INSTANTIATE

}  // namespace diffuse::kernels::cpu
