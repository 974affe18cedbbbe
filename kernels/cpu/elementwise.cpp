// CPU element-wise kernels (see kernels/elementwise.h). f32 runs the vector loops of
// kernels/cpu/simd/elementwise.h over contiguous runs, in at most one parallel region per call and
// none for small tensors (kernels/cpu/parallel.h); f64 (gradient checks) keeps the scalar loops.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/simd/elementwise.h"
#include "kernels/cpu/simd/vector_math.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"  // thread_scratch

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

// b's offset at the start of run r (runs are the innermost collapsed dim's stretches of a).
int64_t b_offset_of_run(const BroadcastDesc& d, int64_t r) {
  const int64_t inner = d.size[d.rank - 1];
  int64_t rem = r, b_off = 0, b_mul = d.b_has[d.rank - 1] ? inner : 1;
  for (int k = d.rank - 2; k >= 0; --k) {
    const int64_t idx = rem % d.size[k];
    rem /= d.size[k];
    if (d.b_has[k]) {
      b_off += idx * b_mul;
      b_mul *= d.size[k];
    }
  }
  return b_off;
}

// Runs shorter than this stay whole; longer ones (a same-shape op is one run) are cut into pieces
// of about this many elements so that a few long runs still spread over the threads.
constexpr int64_t kPiece = 1 << 14;

// Calls fn(a_offset, b_offset, len, b_inner_stride) for every piece of every run of the innermost
// collapsed dim, all of them in one parallel region (none for small tensors).
template <typename Fn>
void for_each_run(const BroadcastDesc& d, double cost_per_element, Fn fn) {
  const int64_t inner = d.size[d.rank - 1];
  if (inner == 0) return;
  const int64_t b_inner_stride = d.b_has[d.rank - 1] ? 1 : 0;
  const int64_t runs = d.numel / inner;
  const int64_t pieces = std::max<int64_t>(1, inner / kPiece);
  parallel_for(runs * pieces, cost_per_element * double(inner / pieces), [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t r = item / pieces, p = item % pieces;
      const int64_t lo = inner * p / pieces, hi = inner * (p + 1) / pieces;
      fn(r * inner + lo, b_offset_of_run(d, r) + lo * b_inner_stride, hi - lo, b_inner_stride);
    }
  });
}

// fn(begin, end) over [0, n) element chunks in one region (none when small).
template <typename Fn>
void for_each_chunk(int64_t n, double cost_per_element, Fn fn) {
  parallel_for(n, cost_per_element, [&](int64_t begin, int64_t end) { fn(begin, end - begin); });
}

}  // namespace

template <typename T>
void binary(BinaryOp op, const BroadcastDesc& d, const T* a, const T* b, T* out) {
  for_each_run(d, 1.0, [&](int64_t ao, int64_t bo, int64_t n, int64_t bs) {
    const T* pa = a + ao;
    const T* pb = b + bo;
    T* po = out + ao;
    if constexpr (std::is_same_v<T, float>) {
      simd::binary_run(static_cast<int>(op), pa, pb, bs, po, n);
      return;
    }
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
  // Parallel only when b is as large as a (a plain copy or product); otherwise serial over runs,
  // since several runs add into the same b entries.
  if (d.b_numel == d.numel) {
    for_each_chunk(d.numel, 1.0, [&](int64_t i0, int64_t n) {
      if (!w) {
        std::memcpy(out + i0, g + i0, sizeof(T) * static_cast<size_t>(n));
      } else if constexpr (std::is_same_v<T, float>) {
        simd::binary_run(static_cast<int>(BinaryOp::mul), g + i0, w + i0, 1, out + i0, n);
      } else {
        for (int64_t i = i0; i < i0 + n; ++i) out[i] = g[i] * w[i];
      }
    });
    return;
  }
  for (int64_t i = 0; i < d.b_numel; ++i) out[i] = T(0);
  const int64_t inner = d.size[d.rank - 1];
  const int64_t runs = inner ? d.numel / inner : 0;
  const bool b_inner = d.b_has[d.rank - 1];
  for (int64_t r = 0; r < runs; ++r) {
    const T* pg = g + r * inner;
    const T* pw = w ? w + r * inner : nullptr;
    T* po = out + b_offset_of_run(d, r);
    if constexpr (std::is_same_v<T, float>) {
      if (b_inner)
        simd::accumulate_run(pg, pw, po, inner);
      else
        po[0] += static_cast<float>(simd::sum_run(pg, pw, inner));
    } else if (b_inner) {
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
  for_each_chunk(n, 1.0, [&](int64_t i0, int64_t m) {
    if constexpr (std::is_same_v<T, float>)
      simd::scale_run(s, x + i0, out + i0, m);
    else
      for (int64_t i = i0; i < i0 + m; ++i) out[i] = s * x[i];
  });
}

// SiLU's exp makes an element cost about this many simple operations.
constexpr double kSiluCost = 16;

template <typename T>
void silu_forward(int64_t n, const T* x, T* y) {
  for_each_chunk(n, kSiluCost, [&](int64_t i0, int64_t m) {
    if constexpr (std::is_same_v<T, float>)
      simd::silu_array(x + i0, y + i0, m);
    else
      for (int64_t i = i0; i < i0 + m; ++i) y[i] = x[i] / (T(1) + std::exp(-x[i]));
  });
}

template <typename T>
void silu_backward(int64_t n, const T* x, const T* gy, T* gx) {
  for_each_chunk(n, kSiluCost, [&](int64_t i0, int64_t m) {
    if constexpr (std::is_same_v<T, float>) {
      simd::silu_backward_run(x + i0, gy + i0, gx + i0, m);
    } else {
      for (int64_t i = i0; i < i0 + m; ++i) {
        T s = T(1) / (T(1) + std::exp(-x[i]));
        gx[i] = gy[i] * s * (T(1) + x[i] * (T(1) - s));
      }
    }
  });
}

// The sum's fixed chunks: one f64 partial each, added in order, so the result does not depend on
// the thread count.
constexpr int64_t kSumChunk = 1 << 15;

template <typename T>
T sum(int64_t n, const T* x) {
  auto chunk_sum = [&](int64_t c) {
    const int64_t i0 = c * kSumChunk, m = std::min(kSumChunk, n - i0);
    if constexpr (std::is_same_v<T, float>) {
      return simd::sum_run(x + i0, nullptr, m);
    } else {
      double acc = 0;
      for (int64_t i = i0; i < i0 + m; ++i) acc += double(x[i]);
      return acc;
    }
  };
  const int64_t chunks = (n + kSumChunk - 1) / kSumChunk;
  if (chunks <= 1) return static_cast<T>(chunks ? chunk_sum(0) : 0.0);
  double* parts = thread_scratch_of<double>(0, static_cast<size_t>(chunks));
  parallel_for(chunks, double(kSumChunk), [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) parts[c] = chunk_sum(c);
  });
  double total = 0;
  for (int64_t c = 0; c < chunks; ++c) total += parts[c];
  return static_cast<T>(total);
}

template <typename T>
void fill(int64_t n, T value, T* out) {
  for_each_chunk(n, 0.25, [&](int64_t i0, int64_t m) { std::fill_n(out + i0, m, value); });
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
