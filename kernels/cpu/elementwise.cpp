// CPU element-wise kernels (see kernels/elementwise.h). OpenMP over the outer collapsed dims.
#include <cmath>
#include <string>

#include "kernels/elementwise.h"

namespace diffuse::kernels {

BroadcastDesc make_broadcast(const std::vector<int64_t>& a, const std::vector<int64_t>& b, const char* op) {
  auto str = [](const std::vector<int64_t>& s) {
    std::string o = "[";
    for (size_t i = 0; i < s.size(); ++i) o += (i ? ", " : "") + std::to_string(s[i]);
    return o + "]";
  };
  if (b.size() > a.size())
    throw Error(std::string(op) + ": cannot broadcast " + str(b) + " over " + str(a));
  BroadcastDesc d;
  d.numel = 1;
  d.b_numel = 1;
  size_t off = a.size() - b.size();
  for (size_t i = 0; i < a.size(); ++i) {
    int64_t bd = i < off ? 1 : b[i - off];
    if (bd != a[i] && bd != 1)
      throw Error(std::string(op) + ": cannot broadcast " + str(b) + " over " + str(a));
    d.numel *= a[i];
    d.b_numel *= bd;
    if (a[i] == 1) continue;  // size-1 dims carry no information
    bool has = bd == a[i];
    if (d.rank > 0 && d.b_has[d.rank - 1] == has) {
      d.size[d.rank - 1] *= a[i];
    } else {
      if (d.rank == BroadcastDesc::kMaxRank) throw Error(std::string(op) + ": rank too high");
      d.size[d.rank] = a[i];
      d.b_has[d.rank] = has;
      ++d.rank;
    }
  }
  if (d.rank == 0) {  // every dim is 1
    d.rank = 1;
    d.size[0] = 1;
    d.b_has[0] = true;
  }
  return d;
}

namespace cpu {
namespace {

// Calls fn(a_offset, b_offset, inner_len, b_inner_stride) for every run of the innermost
// collapsed dim. Rows of the outer dims are split across threads.
template <typename Fn>
void for_each_run(const BroadcastDesc& d, Fn fn) {
  int64_t inner = d.size[d.rank - 1];
  int64_t b_inner_stride = d.b_has[d.rank - 1] ? 1 : 0;
  int64_t runs = d.numel / (inner ? inner : 1);
  if (inner == 0) return;
#pragma omp parallel for schedule(static) if (d.numel > 32768)
  for (int64_t r = 0; r < runs; ++r) {
    // Decompose r over the outer dims to find b's offset.
    int64_t rem = r, b_off = 0, b_mul = d.b_has[d.rank - 1] ? inner : 1;
    for (int k = d.rank - 2; k >= 0; --k) {
      int64_t idx = rem % d.size[k];
      rem /= d.size[k];
      if (d.b_has[k]) {
        b_off += idx * b_mul;
        b_mul *= d.size[k];
      }
    }
    fn(r * inner, b_off, inner, b_inner_stride);
  }
}

}  // namespace

template <typename T>
void binary(BinaryOp op, const BroadcastDesc& d, const T* a, const T* b, T* out) {
  for_each_run(d, [&](int64_t ao, int64_t bo, int64_t n, int64_t bs) {
    const T* pa = a + ao;
    const T* pb = b + bo;
    T* po = out + ao;
    switch (op) {
      case BinaryOp::add:
        for (int64_t i = 0; i < n; ++i) po[i] = pa[i] + pb[i * bs];
        break;
      case BinaryOp::sub:
        for (int64_t i = 0; i < n; ++i) po[i] = pa[i] - pb[i * bs];
        break;
      case BinaryOp::mul:
        for (int64_t i = 0; i < n; ++i) po[i] = pa[i] * pb[i * bs];
        break;
    }
  });
}

template <typename T>
void reduce_to_broadcast(const BroadcastDesc& d, const T* g, const T* w, T* out) {
  // Serial over runs (several runs add into the same b entries); parallel only when b is as
  // large as a (a plain copy or product).
  if (d.b_numel == d.numel) {
#pragma omp parallel for schedule(static) if (d.numel > 32768)
    for (int64_t i = 0; i < d.numel; ++i) out[i] = w ? g[i] * w[i] : g[i];
    return;
  }
  for (int64_t i = 0; i < d.b_numel; ++i) out[i] = T(0);
  int64_t inner = d.size[d.rank - 1];
  int64_t runs = inner ? d.numel / inner : 0;
  bool b_inner = d.b_has[d.rank - 1];
  for (int64_t r = 0; r < runs; ++r) {
    int64_t rem = r, b_off = 0, b_mul = b_inner ? inner : 1;
    for (int k = d.rank - 2; k >= 0; --k) {
      int64_t idx = rem % d.size[k];
      rem /= d.size[k];
      if (d.b_has[k]) {
        b_off += idx * b_mul;
        b_mul *= d.size[k];
      }
    }
    const T* pg = g + r * inner;
    const T* pw = w ? w + r * inner : nullptr;
    T* po = out + b_off;
    if (b_inner) {
      for (int64_t i = 0; i < inner; ++i) po[i] += pw ? pg[i] * pw[i] : pg[i];
    } else {
      double acc = 0;
      for (int64_t i = 0; i < inner; ++i) acc += pw ? double(pg[i]) * double(pw[i]) : double(pg[i]);
      po[0] += static_cast<T>(acc);
    }
  }
}

template <typename T>
void scale(int64_t n, T s, const T* x, T* out) {
#pragma omp parallel for schedule(static) if (n > 32768)
  for (int64_t i = 0; i < n; ++i) out[i] = s * x[i];
}

template <typename T>
void silu_forward(int64_t n, const T* x, T* y) {
#pragma omp parallel for schedule(static) if (n > 32768)
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] / (T(1) + std::exp(-x[i]));
}

template <typename T>
void silu_backward(int64_t n, const T* x, const T* gy, T* gx) {
#pragma omp parallel for schedule(static) if (n > 32768)
  for (int64_t i = 0; i < n; ++i) {
    T s = T(1) / (T(1) + std::exp(-x[i]));
    gx[i] = gy[i] * s * (T(1) + x[i] * (T(1) - s));
  }
}

template <typename T>
T sum(int64_t n, const T* x) {
  double total = 0;
#pragma omp parallel for reduction(+ : total) schedule(static) if (n > 32768)
  for (int64_t i = 0; i < n; ++i) total += double(x[i]);
  return static_cast<T>(total);
}

template <typename T>
void fill(int64_t n, T value, T* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = value;
}

#define DIFFUSE_INSTANTIATE(T)                                                        \
  template void binary<T>(BinaryOp, const BroadcastDesc&, const T*, const T*, T*);   \
  template void reduce_to_broadcast<T>(const BroadcastDesc&, const T*, const T*, T*); \
  template void scale<T>(int64_t, T, const T*, T*);                                   \
  template void silu_forward<T>(int64_t, const T*, T*);                               \
  template void silu_backward<T>(int64_t, const T*, const T*, T*);                    \
  template T sum<T>(int64_t, const T*);                                               \
  template void fill<T>(int64_t, T, T*);
DIFFUSE_INSTANTIATE(float)
DIFFUSE_INSTANTIATE(double)
#undef DIFFUSE_INSTANTIATE

}  // namespace cpu
}  // namespace diffuse::kernels
