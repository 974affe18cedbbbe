// See kernels/cpu/simd/elementwise.h; compiled once per path (kernels/cpu/simd/isa_begin.h).
#include <cstdint>

#include "kernels/cpu/simd/isa_begin.h"
#include "kernels/cpu/simd/vec.h"
#include "kernels/cpu/simd/elementwise_lanes.h"
#include "kernels/cpu/simd/elementwise.h"

namespace diffuse::kernels::cpu::simd::DIFFUSE_ISA_NS {

namespace {

template <typename Op>
void binary_with(const float* a, const float* b, int64_t b_stride, float* out, int64_t n, Op op) {
  if (b_stride == 0) {
    const Vec bv = set1(b[0]);
    over_lanes(n, [&](int64_t i, int m) { store_part(out + i, op(load_part(a + i, m), bv), m); });
  } else {
    over_lanes(n, [&](int64_t i, int m) { store_part(out + i, op(load_part(a + i, m), load_part(b + i, m)), m); });
  }
}

}  // namespace

void binary_run(int op, const float* a, const float* b, int64_t b_stride, float* out, int64_t n) {
  switch (op) {
    case 0: binary_with(a, b, b_stride, out, n, [](Vec x, Vec y) { return x + y; }); break;
    case 1: binary_with(a, b, b_stride, out, n, [](Vec x, Vec y) { return x - y; }); break;
    default: binary_with(a, b, b_stride, out, n, [](Vec x, Vec y) { return x * y; }); break;
  }
}

void accumulate_run(const float* g, const float* w, float* out, int64_t n) {
  if (w)
    over_lanes(n, [&](int64_t i, int m) {
      store_part(out + i, fma(load_part(g + i, m), load_part(w + i, m), load_part(out + i, m)), m);
    });
  else
    over_lanes(n, [&](int64_t i, int m) { store_part(out + i, load_part(out + i, m) + load_part(g + i, m), m); });
}

double sum_run(const float* g, const float* w, int64_t n) {
  double lanes[kLanes] = {};
  float part[kLanes];
  auto term = [&](int64_t i) { return w ? load(g + i) * load(w + i) : load(g + i); };
  int64_t i = 0;
  for (; i + 4 * kLanes <= n; i += 4 * kLanes) {
    store(part, (term(i) + term(i + kLanes)) + (term(i + 2 * kLanes) + term(i + 3 * kLanes)));
    for (int l = 0; l < kLanes; ++l) lanes[l] += double(part[l]);
  }
  double total = 0;
  for (int l = 0; l < kLanes; ++l) total += lanes[l];
  for (; i < n; ++i) total += w ? double(g[i]) * double(w[i]) : double(g[i]);
  return total;
}

void column_sum_rows(const float* m, int64_t rows, int64_t cols, double* acc) {
  constexpr int64_t kRows = 8;
  for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
    const int64_t r1 = r0 + kRows < rows ? r0 + kRows : rows;
    over_lanes(cols, [&](int64_t c, int lanes) {
      Vec s = load_part(m + r0 * cols + c, lanes);
      for (int64_t r = r0 + 1; r < r1; ++r) s = s + load_part(m + r * cols + c, lanes);
      add_to_doubles(s, acc + c, lanes);
    });
  }
}

void scale_run(float s, const float* x, float* out, int64_t n) {
  const Vec sv = set1(s);
  over_lanes(n, [&](int64_t i, int m) { store_part(out + i, sv * load_part(x + i, m), m); });
}

void silu_backward_run(const float* x, const float* gy, float* gx, int64_t n) {
  const Vec one = set1(1.0f);
  over_lanes(n, [&](int64_t i, int m) {
    const Vec xv = load_part(x + i, m);
    const Vec s = sigmoid(xv);
    store_part(gx + i, load_part(gy + i, m) * s * (one + xv * (one - s)), m);
  });
}

}  // namespace diffuse::kernels::cpu::simd::DIFFUSE_ISA_NS
