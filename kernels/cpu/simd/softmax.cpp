// See kernels/cpu/simd/softmax.h; compiled once per path (kernels/cpu/simd/isa_begin.h).
#include <cstdint>

#include "kernels/cpu/simd/isa_begin.h"
#include "kernels/cpu/simd/vec.h"
#include "kernels/cpu/simd/softmax.h"

namespace diffuse::kernels::cpu::simd::DIFFUSE_ISA_NS {

void softmax_rows(float* s, int64_t rows, int64_t len, int64_t ld, float* inv_out) {
  if (len <= 0) return;
  const int64_t whole = len / kLanes * kLanes;
  const int tail = int(len - whole);
  for (int64_t r = 0; r < rows; ++r) {
    float* row = s + r * ld;
    // The max subtraction keeps e^x finite for large scores; the tail's padding lanes are
    // excluded from the max by starting from the row's first element.
    // Four running maxima: one chain of vmaxps waited out its latency on every vector (a max is
    // exact, so the order does not matter).
    Vec mx0 = set1(row[0]), mx1 = mx0, mx2 = mx0, mx3 = mx0;
    int64_t j0 = 0;
    for (; j0 + 4 * kLanes <= whole; j0 += 4 * kLanes) {
      mx0 = max(mx0, load(row + j0));
      mx1 = max(mx1, load(row + j0 + kLanes));
      mx2 = max(mx2, load(row + j0 + 2 * kLanes));
      mx3 = max(mx3, load(row + j0 + 3 * kLanes));
    }
    for (; j0 < whole; j0 += kLanes) mx0 = max(mx0, load(row + j0));
    float row_max = hmax(max(max(mx0, mx1), max(mx2, mx3)));
    for (int64_t j = whole; j < len; ++j) row_max = row[j] > row_max ? row[j] : row_max;
    const Vec m = set1(row_max);
    Vec total = zero();
    for (int64_t j = 0; j < whole; j += kLanes) {
      const Vec e = exp_nonpositive(load(row + j) - m);
      store(row + j, e);
      total = total + e;
    }
    float sum = hsum(total);
    if (tail) {
      const Vec e = exp_nonpositive(load_n(row + whole, tail) - m);
      store_n(row + whole, e, tail);
      float t[kLanes];
      store(t, e);
      for (int i = 0; i < tail; ++i) sum += t[i];
    }
    if (inv_out) {
      inv_out[r] = 1.0f / sum;
      continue;
    }
    const Vec inv = set1(1.0f / sum);
    for (int64_t j = 0; j < whole; j += kLanes) store(row + j, load(row + j) * inv);
    if (tail) store_n(row + whole, load_n(row + whole, tail) * inv, tail);
  }
}

void row_dots(const float* a, const float* b, int64_t rows, int64_t len, int64_t ld, float* dot) {
  const int64_t whole = len / kLanes * kLanes;
  const int tail = int(len - whole);
  for (int64_t r = 0; r < rows; ++r) {
    const float* ar = a + r * ld;
    const float* br = b + r * ld;
    Vec acc = zero();
    for (int64_t c = 0; c < whole; c += kLanes) acc = fma(load(ar + c), load(br + c), acc);
    if (tail) acc = fma(load_n(ar + whole, tail), load_n(br + whole, tail), acc);
    dot[r] = hsum(acc);
  }
}

namespace {
// dp = p · (dp − dot(r, j, n)) over `rows` rows of `len`, where dot gives the n lanes (kLanes, or a
// tail's count) to subtract at row r from column j on.
template <class Dot>
void softmax_backward(const float* p, float* dp, int64_t rows, int64_t len, int64_t ld, Dot dot) {
  const int64_t whole = len / kLanes * kLanes;
  const int tail = int(len - whole);
  for (int64_t r = 0; r < rows; ++r) {
    const float* pr = p + r * ld;
    float* dr = dp + r * ld;
    for (int64_t j = 0; j < whole; j += kLanes) store(dr + j, load(pr + j) * (load(dr + j) - dot(r, j, kLanes)));
    if (tail) store_n(dr + whole, load_n(pr + whole, tail) * (load_n(dr + whole, tail) - dot(r, whole, tail)), tail);
  }
}
}  // namespace

void softmax_backward_rows(const float* p, float* dp, const float* dot, int64_t rows, int64_t len, int64_t ld) {
  softmax_backward(p, dp, rows, len, ld, [dot](int64_t r, int64_t, int) { return set1(dot[r]); });
}

void softmax_columns(float* s, int64_t rows, int64_t cols, int64_t ld, float* work) {
  if (rows <= 0 || cols <= 0) return;
  const int64_t whole = cols / kLanes * kLanes;
  const int tail = int(cols - whole);
  float* mx = work;
  float* total = work + cols;
  // Per column: the max over the rows (the first row starts it), then e^(x − max) and its sum,
  // then the scaling by 1 / sum. A column's sum runs down the rows in order.
  for (int64_t j = 0; j < cols; ++j) mx[j] = s[j], total[j] = 0.0f;
  for (int64_t r = 1; r < rows; ++r) {
    const float* row = s + r * ld;
    for (int64_t j = 0; j < whole; j += kLanes) store(mx + j, max(load(mx + j), load(row + j)));
    if (tail) store_n(mx + whole, max(load_n(mx + whole, tail), load_n(row + whole, tail)), tail);
  }
  for (int64_t r = 0; r < rows; ++r) {
    float* row = s + r * ld;
    for (int64_t j = 0; j < whole; j += kLanes) {
      const Vec e = exp_nonpositive(load(row + j) - load(mx + j));
      store(row + j, e);
      store(total + j, load(total + j) + e);
    }
    if (tail) {
      const Vec e = exp_nonpositive(load_n(row + whole, tail) - load_n(mx + whole, tail));
      store_n(row + whole, e, tail);
      store_n(total + whole, load_n(total + whole, tail) + e, tail);
    }
  }
  for (int64_t j = 0; j < cols; ++j) mx[j] = 1.0f / total[j];  // mx now holds the inverses
  for (int64_t r = 0; r < rows; ++r) {
    float* row = s + r * ld;
    for (int64_t j = 0; j < whole; j += kLanes) store(row + j, load(row + j) * load(mx + j));
    if (tail) store_n(row + whole, load_n(row + whole, tail) * load_n(mx + whole, tail), tail);
  }
}

void softmax_backward_columns(const float* p, float* dp, const float* dot, int64_t rows, int64_t cols, int64_t ld) {
  softmax_backward(p, dp, rows, cols, ld,
                   [dot](int64_t, int64_t j, int n) { return n == kLanes ? load(dot + j) : load_n(dot + j, n); });
}

}  // namespace diffuse::kernels::cpu::simd::DIFFUSE_ISA_NS
