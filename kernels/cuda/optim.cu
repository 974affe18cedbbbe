// CUDA multi-tensor optimizer kernels (see kernels/optim.h), also run by the SIMT emulator: AdamW
// fused with the EMA, the global sum of squares for grad-norm clipping, and grad scaling. Each is
// ONE launch over every parameter: block b takes chunk b (16384 elements) of the table entry found
// by a binary search of first_chunk (a few cached loads per block), threads stride the chunk with
// float4 when all of the entry's pointers are 16-byte aligned. A 36M-parameter UNet is ~2200
// chunks, so ~17 blocks per SM on an H100 in a single wave. Traffic per element: AdamW+EMA reads
// p, g, m, v, ema and writes p, m, v, ema (36 B); the sum of squares reads 4 B.
// The sum of squares is deterministic: f64 per thread and per block (products of floats are exact
// in f64), one partial per chunk, then one block adds the partials in a fixed order. A gated
// AdamW (kernels/optim.h) reads lr, the step count and the EMA step in every block and may skip
// the step or scale the grads; train_status then records the step and advances the counts.
#include "kernels/compat.cuh"
#include "kernels/cuda/grid_helpers.cuh"
#include "kernels/optim.h"

#include <cstdint>

namespace diffuse::kernels::DIFFUSE_DEVICE_NS {
namespace {

using grid::aligned16;
using grid::blocks_for;
using grid::kThreads;
using grid::load4;
using grid::store4;

// The entry e with first_chunk[e] <= chunk < first_chunk[e + 1] (entries with no chunks never hold).
template <typename Entry>
__device__ __forceinline__ int64_t entry_of(const MultiTensorTable<Entry>& t, int64_t chunk) {
  int64_t lo = 0, hi = t.count;  // first_chunk[lo] <= chunk < first_chunk[hi]
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (t.first_chunk[mid] <= chunk) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}


// The hyper-parameters rounded to f32 exactly as the CPU twin rounds them.
struct AdamWConsts {
  float decay_factor, b1, one_minus_b1, b2, one_minus_b2, eps, one_minus_decay;
};

// One element, in the CPU twin's order of operations.
__device__ __forceinline__ void adamw_element(const AdamWConsts& k, float neg_step_size, float bc2_sqrt,
                                              bool has_grad, bool has_ema, float& p, float g, float& m, float& v,
                                              float& ema) {
  if (has_grad) {
    p *= k.decay_factor;
    m = k.b1 * m + k.one_minus_b1 * g;
    v = k.b2 * v + k.one_minus_b2 * (g * g);
    const float denom = sqrtf(v) / bc2_sqrt + k.eps;
    p += neg_step_size * (m / denom);
  }
  if (has_ema) ema -= k.one_minus_decay * (ema - p);
}

// The hyper-parameters at lr and the EMA decay, rounded to f32 as the CPU twin rounds them.
DIFFUSE_HD inline AdamWConsts consts_of(const AdamWHyper& h, double lr, double ema_decay) {
  AdamWConsts k;
  k.decay_factor = static_cast<float>(1.0 - lr * h.weight_decay);
  k.b1 = static_cast<float>(h.beta1);
  k.one_minus_b1 = static_cast<float>(1.0 - h.beta1);
  k.b2 = static_cast<float>(h.beta2);
  k.one_minus_b2 = static_cast<float>(1.0 - h.beta2);
  k.eps = static_cast<float>(h.eps);
  k.one_minus_decay = static_cast<float>(1.0 - ema_decay);
  return k;
}

// Ungated: k holds the launch's constants. Gated (h.gate.state): every block reads the step's
// values from device memory, and returns at once when the gate skips the step.
__global__ void __launch_bounds__(kThreads)
    adamw_ema_kernel(AdamWConsts k, AdamWHyper h, MultiTensorTable<OptimEntry<float>> t) {
  const bool gated = h.gate.state != nullptr;
  if (gated && gate_skips(h.gate)) return;
  GatedValues gv{0.0, 0.0, 1.0, 0.0};
  float grad_scale = 1.0f;  // g * 1 is exact: the ungated path's bits
  if (gated) {
    gv = gated_values(h);
    k = consts_of(h, gv.lr, gv.ema_decay);
    grad_scale = gate_grad_scale(h.gate);
  }
  for (int64_t chunk = blockIdx.x; chunk < t.chunks; chunk += gridDim.x) {
    const int64_t e_index = entry_of(t, chunk);
    const OptimEntry<float> e = t.entries[e_index];
    const int64_t begin = (chunk - t.first_chunk[e_index]) * kDeviceChunk;
    const int64_t end = grid::min64(e.n, begin + kDeviceChunk);
    const float neg_step_size = static_cast<float>(-(gated ? gv.step_size : e.step_size));
    const float bc2_sqrt = static_cast<float>(gated ? gv.bias_correction2_sqrt : e.bias_correction2_sqrt);
    const bool has_grad = e.grad != nullptr, has_ema = e.ema != nullptr;
    const bool vector = aligned16(e.param) && (!has_grad || (aligned16(e.grad) && aligned16(e.exp_avg) &&
                                                             aligned16(e.exp_avg_sq))) &&
                        (!has_ema || aligned16(e.ema));
    const int64_t vector_end = vector ? end / 4 * 4 : begin;  // begin is a multiple of 4
    for (int64_t q = begin / 4 + threadIdx.x; q < vector_end / 4; q += blockDim.x) {
      float p[4], g[4] = {}, m[4] = {}, v[4] = {}, a[4] = {};
      load4(e.param, q, p);
      if (has_grad) {
        load4(e.grad, q, g);
        DIFFUSE_UNROLL
        for (int j = 0; j < 4; ++j) g[j] *= grad_scale;
        load4(e.exp_avg, q, m);
        load4(e.exp_avg_sq, q, v);
      }
      if (has_ema) load4(e.ema, q, a);
      DIFFUSE_UNROLL
      for (int j = 0; j < 4; ++j) adamw_element(k, neg_step_size, bc2_sqrt, has_grad, has_ema, p[j], g[j], m[j], v[j], a[j]);
      if (has_grad) {
        store4(e.param, q, p);
        store4(e.exp_avg, q, m);
        store4(e.exp_avg_sq, q, v);
      }
      if (has_ema) store4(e.ema, q, a);
    }
    for (int64_t i = vector_end + threadIdx.x; i < end; i += blockDim.x) {
      float p = e.param[i], g = 0.0f, m = 0.0f, v = 0.0f, a = 0.0f;
      if (has_grad) {
        g = e.grad[i] * grad_scale;
        m = e.exp_avg[i];
        v = e.exp_avg_sq[i];
      }
      if (has_ema) a = e.ema[i];
      adamw_element(k, neg_step_size, bc2_sqrt, has_grad, has_ema, p, g, m, v, a);
      if (has_grad) {
        e.param[i] = p;
        e.exp_avg[i] = m;
        e.exp_avg_sq[i] = v;
      }
      if (has_ema) e.ema[i] = a;
    }
  }
}

__global__ void __launch_bounds__(kThreads)
    sum_of_squares_kernel(MultiTensorTable<Span<const float>> t, double* __restrict__ partials) {
  for (int64_t chunk = blockIdx.x; chunk < t.chunks; chunk += gridDim.x) {  // block-uniform
    const int64_t e_index = entry_of(t, chunk);
    const Span<const float> s = t.entries[e_index];
    const int64_t begin = (chunk - t.first_chunk[e_index]) * kDeviceChunk;
    const int64_t end = grid::min64(s.n, begin + kDeviceChunk);
    const int64_t vector_end = aligned16(s.data) ? end / 4 * 4 : begin;
    double acc = 0.0;
    for (int64_t q = begin / 4 + threadIdx.x; q < vector_end / 4; q += blockDim.x) {
      float x[4];
      load4(s.data, q, x);
      DIFFUSE_UNROLL
      for (int j = 0; j < 4; ++j) acc += static_cast<double>(x[j]) * static_cast<double>(x[j]);
    }
    for (int64_t i = vector_end + threadIdx.x; i < end; i += blockDim.x)
      acc += static_cast<double>(s.data[i]) * static_cast<double>(s.data[i]);
    const double total = grid::block_sum<double, kThreads>(acc);
    if (threadIdx.x == 0) partials[chunk] = total;
  }
}

// One block: out[0] = the partials added in a fixed order.
__global__ void __launch_bounds__(kThreads)
    combine_kernel(int64_t count, const double* __restrict__ partials, double* __restrict__ out) {
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
  const double total = grid::block_sum<double, kThreads>(acc);
  if (threadIdx.x == 0) out[0] = total;
}

__global__ void __launch_bounds__(kThreads) scale_all_kernel(MultiTensorTable<Span<float>> t, float factor) {
  for (int64_t chunk = blockIdx.x; chunk < t.chunks; chunk += gridDim.x) {
    const int64_t e_index = entry_of(t, chunk);
    const Span<float> s = t.entries[e_index];
    const int64_t begin = (chunk - t.first_chunk[e_index]) * kDeviceChunk;
    const int64_t end = grid::min64(s.n, begin + kDeviceChunk);
    const int64_t vector_end = aligned16(s.data) ? end / 4 * 4 : begin;
    for (int64_t q = begin / 4 + threadIdx.x; q < vector_end / 4; q += blockDim.x) {
      float x[4];
      load4(s.data, q, x);
      DIFFUSE_UNROLL
      for (int j = 0; j < 4; ++j) x[j] *= factor;
      store4(s.data, q, x);
    }
    for (int64_t i = vector_end + threadIdx.x; i < end; i += blockDim.x) s.data[i] *= factor;
  }
}

// One thread: the step's status row and the step counts' advance (kernels/optim.h).
__global__ void train_status_kernel(DeviceStepGate g, const int64_t* step, double* ring, int64_t rows,
                                    double* state) {
  if (threadIdx.x == 0 && blockIdx.x == 0) train_status_row(g, step, ring, rows, state);
}

template <typename Entry>
void check_table(const MultiTensorTable<Entry>& t, const char* op) {
  require(t.count >= 0 && t.chunks >= 0 && (t.chunks == 0 || (t.entries && t.first_chunk)), [&] {
    return std::string(op) + ": bad multi-tensor table (" + std::to_string(t.count) + " entries, " +
           std::to_string(t.chunks) + " chunks)";
  });
}

}  // namespace

void adamw_ema_step(const AdamWHyper& h, const MultiTensorTable<OptimEntry<float>>& table, Stream stream) {
  check_table(table, "adamw_ema_step");
  DIFFUSE_LAUNCH(adamw_ema_kernel, blocks_for(table.chunks, 1), kThreads, 0, stream, consts_of(h, h.lr, h.ema_decay),
                 h, table);
}

void train_status(const DeviceStepGate& g, const int64_t* step, double* ring, int64_t rows, double* state,
                  Stream stream) {
  require(g.state == state && step && ring && rows > 0 && state,
          "train_status: needs the gate's state, the step and a status ring of at least one row");
  DIFFUSE_LAUNCH(train_status_kernel, 1, 1, 0, stream, g, step, ring, rows, state);
}

void sum_of_squares(const MultiTensorTable<Span<const float>>& table, double* partials, double* out, Stream stream) {
  check_table(table, "sum_of_squares");
  require(out && (table.chunks == 0 || partials), [&] {
    return "sum_of_squares: needs out and a workspace of " + std::to_string(table.chunks) + " doubles";
  });
  DIFFUSE_LAUNCH(sum_of_squares_kernel, blocks_for(table.chunks, 1), kThreads, 0, stream, table, partials);
  DIFFUSE_LAUNCH(combine_kernel, 1, kThreads, 0, stream, table.chunks, static_cast<const double*>(partials), out);
}

void scale_all(const MultiTensorTable<Span<float>>& table, double factor, Stream stream) {
  check_table(table, "scale_all");
  DIFFUSE_LAUNCH(scale_all_kernel, blocks_for(table.chunks, 1), kThreads, 0, stream, table,
                 static_cast<float>(factor));
}

}  // namespace diffuse::kernels::DIFFUSE_DEVICE_NS
