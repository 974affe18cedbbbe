// CPU dropout and MSE kernels (see kernels/loss.h). OpenMP over elements / batch items.
#include "kernels/loss.h"

namespace diffuse::kernels::cpu {

template <typename T>
void dropout_apply(const DropoutDesc& d, const T* x, T* y) {
  const T scale = static_cast<T>(d.scale);
#pragma omp parallel for schedule(static) if (d.n > 8192)
  for (int64_t i = 0; i < d.n; ++i) y[i] = dropout_dropped(d, static_cast<uint64_t>(i)) ? T(0) : x[i] * scale;
}

template <typename T>
double mse_weighted_sum(const MseDesc& d, const T* pred, const T* target, const T* w) {
  double total = 0;
#pragma omp parallel for reduction(+ : total) schedule(static) if (d.batch * d.per_item > 32768)
  for (int64_t n = 0; n < d.batch; ++n) {
    double item = 0;
    const T* p = pred + n * d.per_item;
    const T* t = target + n * d.per_item;
    for (int64_t i = 0; i < d.per_item; ++i) {
      double diff = double(p[i]) - double(t[i]);
      item += diff * diff;
    }
    total += w ? double(w[n]) * item : item;
  }
  return total;
}

template <typename T>
void mse_backward(const MseDesc& d, double coef, const T* pred, const T* target, const T* w, T* gpred) {
#pragma omp parallel for schedule(static) if (d.batch * d.per_item > 32768)
  for (int64_t n = 0; n < d.batch; ++n) {
    const T c = static_cast<T>(w ? coef * double(w[n]) : coef);
    const T* p = pred + n * d.per_item;
    const T* t = target + n * d.per_item;
    T* g = gpred + n * d.per_item;
    for (int64_t i = 0; i < d.per_item; ++i) g[i] = c * (p[i] - t[i]);
  }
}

#define DIFFUSE_INSTANTIATE(T)                                                                   \
  template void dropout_apply<T>(const DropoutDesc&, const T*, T*);                              \
  template double mse_weighted_sum<T>(const MseDesc&, const T*, const T*, const T*);             \
  template void mse_backward<T>(const MseDesc&, double, const T*, const T*, const T*, T*);
DIFFUSE_INSTANTIATE(float)
DIFFUSE_INSTANTIATE(double)
#undef DIFFUSE_INSTANTIATE

}  // namespace diffuse::kernels::cpu
