// CUDA element-wise kernels (see kernels/elementwise.h), also run by the SIMT emulator. All are
// memory-bound: 256-thread blocks, grid-stride, four elements at a time when the pointers allow
// (float4 on 16-byte alignment; 8 bytes of bf16 on 8-byte alignment).
// Binary ops pick a path from the collapsed BroadcastDesc: same shape (pure float4 stream, 12 B
// per element), b a trailing vector [C] or a scalar (b's index kept as a running `c`, stepped by
// the grid stride mod C: no per-element division; b as float4 when C % 4 == 0), and any other
// broadcast ([N,1,1,C], [N,1,1,1], ...) through a mixed-radix cursor that also only adds.
// The binary ops, scale and SiLU are templates over the storage type (kernels/cuda/storage.cuh):
// f32, or bf16 with f32 math and one rounding per stored value (6 B per element when b streams).
// add_bias_residual is the conv2d / linear output epilogue (y += bias + residual, one pass).
// The reductions (reduce_to_broadcast, sum) are in elementwise_reduce.cu, f32 only.
#include "kernels/compat.cuh"
#include "kernels/cuda/grid_helpers.cuh"
#include "kernels/cuda/storage.cuh"
#include "kernels/elementwise.h"

#include <cmath>
#include <cstdint>

namespace diffuse::kernels::DIFFUSE_DEVICE_NS {
namespace {

using grid::aligned16;
using grid::blocks_for;
using grid::kThreads;
constexpr int R = BroadcastDesc::kMaxRank;

using storage::aligned4;
using storage::load;
using storage::load4;
using storage::store;
using storage::store4;

template <BinaryOp kOp>
__device__ __forceinline__ float apply(float a, float b) {
  if constexpr (kOp == BinaryOp::add) {
    return a + b;
  } else if constexpr (kOp == BinaryOp::sub) {
    return a - b;
  } else {
    return a * b;
  }
}

// ---- binary: same shape ------------------------------------------------------------------------

template <BinaryOp kOp, typename S>
__global__ void __launch_bounds__(kThreads)
    binary_same(int64_t n, const S* __restrict__ a, const S* __restrict__ b, S* __restrict__ out, bool vector) {
  grid::for_each_element(
      n, vector,
      [&](int64_t q) {
        float x[4], y[4];
        load4(a, q, x);
        load4(b, q, y);
        DIFFUSE_UNROLL
        for (int j = 0; j < 4; ++j) x[j] = apply<kOp>(x[j], y[j]);
        store4(out, q, x);
      },
      [&](int64_t i) { store(out, i, apply<kOp>(load(a, i), load(b, i))); });
}

// ---- binary: b is a trailing vector of length c_len (c_len == 1: a scalar) ------------------------

// Grid-stride over n elements of rows of c_len, as grid::for_each_element, also handing each quad
// (f4(q, c)) or element (f1(i, c)) its column c: a running index stepped by the grid stride mod
// c_len, no per-element division. For a quad c is element 4q's column (a multiple of 4 when c_len is).
template <typename F4, typename F1>
__device__ __forceinline__ void for_each_in_rows(int64_t n, int64_t c_len, bool vector, F4&& f4, F1&& f1) {
  const int64_t stride = grid::grid_threads(), first = grid::global_thread();
  const int64_t n4 = vector ? n / 4 : 0;
  if (first < n4) {
    int64_t c = (4 * first) % c_len;
    const int64_t step = (4 * stride) % c_len;
    for (int64_t q = first; q < n4; q += stride) {
      f4(q, c);
      c += step;
      if (c >= c_len) c -= c_len;
    }
  }
  int64_t i = 4 * n4 + first;
  if (i < n) {
    int64_t c = i % c_len;
    const int64_t step = stride % c_len;
    for (; i < n; i += stride) {
      f1(i, c);
      c += step;
      if (c >= c_len) c -= c_len;
    }
  }
}

// Row vector b's values at columns c..c+3 (wrapping at c_len): one four-wide load when `vector`.
template <typename S>
__device__ __forceinline__ void load_row_quad(const S* b, int64_t c, int64_t c_len, bool vector, float (&y)[4]) {
  if (vector) {
    load4(b, c / 4, y);
    return;
  }
  DIFFUSE_UNROLL
  for (int j = 0; j < 4; ++j) {
    int64_t cj = c + j;
    while (cj >= c_len) cj -= c_len;
    y[j] = load(b, cj);
  }
}

template <BinaryOp kOp, typename S>
__global__ void __launch_bounds__(kThreads)
    binary_rowvec(int64_t n, int64_t c_len, const S* __restrict__ a, const S* __restrict__ b, S* __restrict__ out,
                  bool vector, bool vector_b) {
  for_each_in_rows(
      n, c_len, vector,
      [&](int64_t q, int64_t c) {
        float x[4], y[4];
        load4(a, q, x);
        load_row_quad(b, c, c_len, vector_b, y);
        DIFFUSE_UNROLL
        for (int j = 0; j < 4; ++j) x[j] = apply<kOp>(x[j], y[j]);
        store4(out, q, x);
      },
      [&](int64_t i, int64_t c) { store(out, i, apply<kOp>(load(a, i), load(b, c))); });
}

// ---- binary: any broadcast, through a mixed-radix cursor ---------------------------------------

// The collapsed dims right-aligned in R slots (innermost in slot R-1); unused outer slots have a
// size no index reaches, so carries die there and every loop below unrolls to registers.
struct BroadcastWalk {
  int64_t size[R];
  int64_t b_stride[R];  // b's stride along the dim, 0 where b is broadcast
  int64_t step[R];      // 4 * (grid threads), written in this mixed radix
};

struct Cursor {
  int64_t idx[R];
  int64_t b_off;
};

BroadcastWalk make_walk(const BroadcastDesc& d, int64_t step) {
  BroadcastWalk w;
  for (int k = 0; k < R; ++k) w.size[k] = INT64_MAX / 4, w.b_stride[k] = 0, w.step[k] = 0;
  int64_t bs = 1;
  for (int k = d.rank - 1; k >= 0; --k) {
    const int slot = R - d.rank + k;
    w.size[slot] = d.size[k];
    w.b_stride[slot] = d.b_has[k] ? bs : 0;
    if (d.b_has[k]) bs *= d.size[k];
  }
  for (int slot = R - 1; slot >= R - d.rank; --slot) {
    w.step[slot] = step % w.size[slot];
    step /= w.size[slot];
  }
  if (d.rank < R) w.step[R - d.rank - 1] = step;  // past the last element: never read
  return w;
}

__device__ __forceinline__ void cursor_at(const BroadcastWalk& w, int64_t i, Cursor& c) {
  c.b_off = 0;
  DIFFUSE_UNROLL
  for (int k = R - 1; k >= 0; --k) {
    const int64_t q = i / w.size[k];  // once per thread
    c.idx[k] = i - q * w.size[k];
    c.b_off += c.idx[k] * w.b_stride[k];
    i = q;
  }
}

__device__ __forceinline__ void cursor_next(const BroadcastWalk& w, Cursor& c) {
  DIFFUSE_UNROLL
  for (int k = R - 1; k >= 0; --k) {
    ++c.idx[k];
    c.b_off += w.b_stride[k];
    if (c.idx[k] < w.size[k]) return;
    c.idx[k] = 0;
    c.b_off -= w.size[k] * w.b_stride[k];
  }
}

// Adds w.step (every digit below its radix, so one subtraction fixes each carry).
__device__ __forceinline__ void cursor_advance(const BroadcastWalk& w, Cursor& c) {
  int64_t carry = 0;
  DIFFUSE_UNROLL
  for (int k = R - 1; k >= 0; --k) {
    const int64_t add = w.step[k] + carry;
    c.idx[k] += add;
    c.b_off += add * w.b_stride[k];
    carry = c.idx[k] >= w.size[k] ? 1 : 0;
    if (carry) {
      c.idx[k] -= w.size[k];
      c.b_off -= w.size[k] * w.b_stride[k];
    }
  }
}

// One thread per group of 4 consecutive elements (float4 for a/out when aligned and whole).
template <BinaryOp kOp, typename S>
__global__ void __launch_bounds__(kThreads)
    binary_general(int64_t n, BroadcastWalk w, const S* __restrict__ a, const S* __restrict__ b, S* __restrict__ out,
                   bool vector) {
  const int64_t stride = grid::grid_threads(), first = grid::global_thread();
  const int64_t groups = (n + 3) / 4;
  if (first >= groups) return;
  Cursor cur;
  cursor_at(w, 4 * first, cur);
  for (int64_t q = first; q < groups; q += stride) {
    const int64_t i0 = 4 * q;
    const int count = n - i0 < 4 ? static_cast<int>(n - i0) : 4;
    float x[4], r[4];
    if (vector && count == 4) {
      load4(a, q, x);
    } else {
      DIFFUSE_UNROLL
      for (int j = 0; j < 4; ++j) x[j] = j < count ? load(a, i0 + j) : 0.0f;
    }
    Cursor e = cur;
    DIFFUSE_UNROLL
    for (int j = 0; j < 4; ++j) {
      r[j] = j < count ? apply<kOp>(x[j], load(b, e.b_off)) : 0.0f;
      if (j + 1 < count) cursor_next(w, e);
    }
    if (vector && count == 4) {
      store4(out, q, r);
    } else {
      DIFFUSE_UNROLL
      for (int j = 0; j < 4; ++j)
        if (j < count) store(out, i0 + j, r[j]);
    }
    cursor_advance(w, cur);
  }
}

template <BinaryOp kOp, typename S>
void launch_binary(const BroadcastDesc& d, const S* a, const S* b, S* out, Stream stream) {
  const int64_t n = d.numel;
  const bool vector = aligned4(a) && aligned4(out);
  const int rank = d.rank;
  if (rank == 1 && d.b_has[0]) {
    const bool vec = vector && aligned4(b);
    DIFFUSE_LAUNCH((binary_same<kOp, S>), blocks_for(vec ? (n + 3) / 4 : n), kThreads, 0, stream, n, a, b, out, vec);
  } else if ((rank == 1 && !d.b_has[0]) || (rank == 2 && !d.b_has[0] && d.b_has[1])) {
    const int64_t c_len = rank == 1 ? 1 : d.size[1];
    const bool vector_b = c_len % 4 == 0 && aligned4(b);
    DIFFUSE_LAUNCH((binary_rowvec<kOp, S>), blocks_for(vector ? (n + 3) / 4 : n), kThreads, 0, stream, n, c_len, a,
                   b, out, vector, vector_b);
  } else {
    const int blocks = blocks_for((n + 3) / 4);
    BroadcastWalk w = make_walk(d, 4 * static_cast<int64_t>(blocks) * kThreads);
    DIFFUSE_LAUNCH((binary_general<kOp, S>), blocks, kThreads, 0, stream, n, w, a, b, out, vector);
  }
}

// ---- bias + residual: the GEMM-shaped ops' output epilogue ----------------------------------------

// y[i] = (y[i] + bias[i mod c_len]) + r[i], f32 math and one rounding per stored value: y is the
// conv's or GEMM's output, read and written once (the unfused add_row_bias then add did that twice
// and wrote a third tensor). bias's index is binary_rowvec's running column (for_each_in_rows);
// kBias false: no bias, y + r.
template <typename S, bool kBias>
__global__ void __launch_bounds__(kThreads)
    bias_residual_kernel(int64_t n, int64_t c_len, const S* __restrict__ bias, const S* __restrict__ r,
                         S* __restrict__ y, bool vector, bool vector_b) {
  for_each_in_rows(
      n, c_len, vector,
      [&](int64_t q, int64_t c) {
        float v[4], b[4] = {0.0f, 0.0f, 0.0f, 0.0f}, res[4];
        load4(y, q, v);
        load4(r, q, res);
        if constexpr (kBias) load_row_quad(bias, c, c_len, vector_b, b);
        DIFFUSE_UNROLL
        for (int j = 0; j < 4; ++j) v[j] = (v[j] + b[j]) + res[j];
        store4(y, q, v);
      },
      [&](int64_t i, int64_t c) {
        const float b = kBias ? load(bias, c) : 0.0f;
        store(y, i, (load(y, i) + b) + load(r, i));
      });
}

// ---- unary maps and fill -------------------------------------------------------------------------

template <typename S>
__global__ void __launch_bounds__(kThreads)
    scale_kernel(int64_t n, float s, const S* __restrict__ x, S* __restrict__ out, bool vector) {
  grid::for_each_element(
      n, vector,
      [&](int64_t q) {
        float v[4];
        load4(x, q, v);
        DIFFUSE_UNROLL
        for (int j = 0; j < 4; ++j) v[j] *= s;
        store4(out, q, v);
      },
      [&](int64_t i) { store(out, i, s * load(x, i)); });
}

// The CPU twin's expressions, operation for operation.
__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }
__device__ __forceinline__ float silu_grad(float x, float gy) {
  const float s = 1.0f / (1.0f + expf(-x));
  return gy * s * (1.0f + x * (1.0f - s));
}

template <typename S>
__global__ void __launch_bounds__(kThreads)
    silu_forward_kernel(int64_t n, const S* __restrict__ x, S* __restrict__ y, bool vector) {
  grid::for_each_element(
      n, vector,
      [&](int64_t q) {
        float v[4];
        load4(x, q, v);
        DIFFUSE_UNROLL
        for (int j = 0; j < 4; ++j) v[j] = silu(v[j]);
        store4(y, q, v);
      },
      [&](int64_t i) { store(y, i, silu(load(x, i))); });
}

template <typename S>
__global__ void __launch_bounds__(kThreads)
    silu_backward_kernel(int64_t n, const S* __restrict__ x, const S* __restrict__ gy, S* __restrict__ gx, bool vector) {
  grid::for_each_element(
      n, vector,
      [&](int64_t q) {
        float v[4], g[4];
        load4(x, q, v);
        load4(gy, q, g);
        DIFFUSE_UNROLL
        for (int j = 0; j < 4; ++j) v[j] = silu_grad(v[j], g[j]);
        store4(gx, q, v);
      },
      [&](int64_t i) { store(gx, i, silu_grad(load(x, i), load(gy, i))); });
}

// The value is read from memory once per thread (a device scalar: no host round trip).
__global__ void __launch_bounds__(kThreads)
    fill_kernel(int64_t n, const float* __restrict__ value, float* __restrict__ out, bool vector) {
  const float v = *value;
  grid::for_each_element(
      n, vector, [&](int64_t q) { grid::store4(out, q, make_float4(v, v, v, v)); }, [&](int64_t i) { out[i] = v; });
}

}  // namespace

template <typename S>
void binary_impl(BinaryOp op, const BroadcastDesc& d, const S* a, const S* b, S* out, Stream stream) {
  if (d.numel == 0) return;
  require(a && b && out, "binary: null buffer");
  switch (op) {
    case BinaryOp::add: launch_binary<BinaryOp::add>(d, a, b, out, stream); break;
    case BinaryOp::sub: launch_binary<BinaryOp::sub>(d, a, b, out, stream); break;
    case BinaryOp::mul: launch_binary<BinaryOp::mul>(d, a, b, out, stream); break;
  }
}

template <typename S>
void add_bias_residual_impl(int64_t rows, int64_t cols, const S* bias, const S* residual, S* y, Stream stream) {
  const int64_t n = rows * cols;
  if (n == 0) return;
  require(residual && y, "add_bias_residual: null buffer");
  const bool vector = aligned4(residual) && aligned4(y);
  const bool vector_b = vector && bias && cols % 4 == 0 && aligned4(bias);
  const int blocks = blocks_for(vector ? (n + 3) / 4 : n);
  if (bias) {
    DIFFUSE_LAUNCH((bias_residual_kernel<S, true>), blocks, kThreads, 0, stream, n, cols, bias, residual, y, vector,
                   vector_b);
  } else {
    DIFFUSE_LAUNCH((bias_residual_kernel<S, false>), blocks, kThreads, 0, stream, n, cols, bias, residual, y, vector,
                   false);
  }
}

template <typename S>
void scale_impl(int64_t n, float s, const S* x, S* out, Stream stream) {
  const bool vector = aligned4(x) && aligned4(out);
  DIFFUSE_LAUNCH(scale_kernel<S>, blocks_for(vector ? (n + 3) / 4 : n), kThreads, 0, stream, n, s, x, out, vector);
}

template <typename S>
void silu_forward_impl(int64_t n, const S* x, S* y, Stream stream) {
  const bool vector = aligned4(x) && aligned4(y);
  DIFFUSE_LAUNCH(silu_forward_kernel<S>, blocks_for(vector ? (n + 3) / 4 : n), kThreads, 0, stream, n, x, y, vector);
}

template <typename S>
void silu_backward_impl(int64_t n, const S* x, const S* gy, S* gx, Stream stream) {
  const bool vector = aligned4(x) && aligned4(gy) && aligned4(gx);
  DIFFUSE_LAUNCH(silu_backward_kernel<S>, blocks_for(vector ? (n + 3) / 4 : n), kThreads, 0, stream, n, x, gy, gx,
                 vector);
}

void binary(BinaryOp op, const BroadcastDesc& d, const float* a, const float* b, float* out, Stream stream) {
  binary_impl(op, d, a, b, out, stream);
}
void binary(BinaryOp op, const BroadcastDesc& d, const uint16_t* a, const uint16_t* b, uint16_t* out,
            Stream stream) {
  binary_impl(op, d, storage::dev(a), storage::dev(b), storage::dev(out), stream);
}

void scale(int64_t n, float s, const float* x, float* out, Stream stream) { scale_impl(n, s, x, out, stream); }
void scale(int64_t n, float s, const uint16_t* x, uint16_t* out, Stream stream) {
  scale_impl(n, s, storage::dev(x), storage::dev(out), stream);
}

void silu_forward(int64_t n, const float* x, float* y, Stream stream) { silu_forward_impl(n, x, y, stream); }
void silu_forward(int64_t n, const uint16_t* x, uint16_t* y, Stream stream) {
  silu_forward_impl(n, storage::dev(x), storage::dev(y), stream);
}

void silu_backward(int64_t n, const float* x, const float* gy, float* gx, Stream stream) {
  silu_backward_impl(n, x, gy, gx, stream);
}
void silu_backward(int64_t n, const uint16_t* x, const uint16_t* gy, uint16_t* gx, Stream stream) {
  silu_backward_impl(n, storage::dev(x), storage::dev(gy), storage::dev(gx), stream);
}

void fill(int64_t n, const float* value, float* out, Stream stream) {
  require(value != nullptr, "fill: null value");
  const bool vector = aligned16(out);
  DIFFUSE_LAUNCH(fill_kernel, blocks_for(vector ? (n + 3) / 4 : n), kThreads, 0, stream, n, value, out, vector);
}

void add_bias_residual(int64_t rows, int64_t cols, const float* bias, const float* residual, float* y,
                       Stream stream) {
  add_bias_residual_impl(rows, cols, bias, residual, y, stream);
}
void add_bias_residual(int64_t rows, int64_t cols, const uint16_t* bias, const uint16_t* residual, uint16_t* y,
                       Stream stream) {
  add_bias_residual_impl(rows, cols, storage::dev(bias), storage::dev(residual), storage::dev(y), stream);
}

}  // namespace diffuse::kernels::DIFFUSE_DEVICE_NS
