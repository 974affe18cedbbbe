// Embedding ops (kernels/embedding.h): a differentiable lookup table for class labels, and the
// sinusoidal timestep embedding (not differentiable: timesteps are data, not parameters). On CUDA
// the lookup and its backward are kernels/cuda/embedding.cu; the ids are validated on the host (a
// copy of N labels), and the timestep embedding is computed on the host and uploaded (it is tiny).
#include "kernels/embedding.h"

#include "nn/autograd.h"
#include "nn/cuda_dispatch.h"
#include "nn/op_checks.h"
#include "nn/ops.h"

namespace diffuse::ops {

using namespace detail;
namespace k = diffuse::kernels;

namespace {

// Calls fn(I{}) with I = int32_t or int64_t for an index tensor's dtype (on either device).
template <typename Fn>
void dispatch_index(const char* op, const Tensor& index, Fn&& fn) {
  if (index.dtype() == DType::i32) {
    fn(int32_t{});
  } else if (index.dtype() == DType::i64) {
    fn(int64_t{});
  } else {
    fail(op, "index must be i32 or i64, got " + index.describe());
  }
}

}  // namespace

Tensor embedding(const Tensor& table, const Tensor& index) {
  const char* op = "embedding";
  check_defined(op, table, "table");
  check_defined(op, index, "index");
  check_rank(op, table, 2, "table [V, D]");
  check_rank(op, index, 1, "index [N]");
  if (table.device() != index.device())
    fail(op, "table and index on different devices: " + table.describe() + " and " + index.describe());
  k::EmbeddingDesc d{index.dim(0), table.dim(0), table.dim(1)};
  Tensor out = Tensor::empty({d.n, d.d}, table.dtype(), table.device());
  const Tensor host_index = index.to(Device::cpu);  // the same tensor on the CPU
  dispatch_index(op, index, [&](auto i) {
    using I = decltype(i);
    const I* host_idx = host_index.data<I>();
    int64_t bad = k::cpu::first_out_of_range<I>(d.n, d.v, host_idx);
    if (bad >= 0)
      fail(op, "index " + std::to_string(static_cast<int64_t>(host_idx[bad])) + " at position " +
                   std::to_string(bad) + " is outside a table of " + std::to_string(d.v) + " rows (" +
                   table.describe() + ")");
    if (!on_cuda(op, table, [&] {
          k::cuda::embedding_forward(d, table.data<float>(), index.data<I>(), out.data<float>(), current_stream());
        }))
      dispatch_cpu_float(op, table, [&](auto t) {
        using T = decltype(t);
        k::cpu::embedding_forward<T, I>(d, table.data<T>(), host_idx, out.data<T>());
      });
  });
  if (any_requires_grad({&table})) {
    Tensor saved_index = index.detach();
    Shape ts = table.shape();
    record(op, {&table}, {&out}, [d, saved_index, ts](const std::vector<Tensor>& g) {
      Tensor gt = Tensor::empty(ts, g[0].dtype(), g[0].device());
      dispatch_index("embedding backward", saved_index, [&](auto i) {
        using I = decltype(i);
        if (!on_cuda("embedding backward", g[0], [&] {
              k::cuda::embedding_backward(d, saved_index.data<I>(), g[0].data<float>(), gt.data<float>(),
                                          current_stream());
            }))
          dispatch_cpu_float("embedding backward", g[0], [&](auto t) {
            using T = decltype(t);
            k::cpu::embedding_backward<T, I>(d, saved_index.data<I>(), g[0].data<T>(), gt.data<T>());
          });
      });
      return std::vector<Tensor>{gt};
    });
  }
  return out;
}

Tensor timestep_embedding(const Tensor& t, int dim, bool flip_sin_to_cos, double freq_shift) {
  const char* op = "timestep_embedding";
  check_defined(op, t, "t");
  check_rank(op, t, 1, "t [N]");
  if (dim < 1) fail(op, "dim must be positive, got " + std::to_string(dim));
  if (dim / 2 > 0 && static_cast<double>(dim / 2) - freq_shift == 0.0)
    fail(op, "dim " + std::to_string(dim) + " with freq_shift " + std::to_string(freq_shift) +
                 " divides the frequency exponent by zero (dim/2 - freq_shift)");
  if (t.device() == Device::cuda)  // [N, dim] for N timesteps: computed on the host, then uploaded
    return timestep_embedding(t.to(Device::cpu), dim, flip_sin_to_cos, freq_shift).to(Device::cuda);
  k::TimestepEmbeddingDesc d{t.dim(0), dim, flip_sin_to_cos, freq_shift};
  DType out_dtype = t.dtype() == DType::f64 ? DType::f64 : DType::f32;
  Tensor out = Tensor::empty({d.n, dim}, out_dtype, t.device());
  switch (t.dtype()) {
    case DType::f32: k::cpu::timestep_embedding<float, float>(d, t.data<float>(), out.data<float>()); break;
    case DType::f64: k::cpu::timestep_embedding<double, double>(d, t.data<double>(), out.data<double>()); break;
    case DType::i32: k::cpu::timestep_embedding<float, int32_t>(d, t.data<int32_t>(), out.data<float>()); break;
    case DType::i64: k::cpu::timestep_embedding<float, int64_t>(d, t.data<int64_t>(), out.data<float>()); break;
    default: fail(op, "t must be f32, f64, i32 or i64, got " + t.describe());
  }
  return out;
}

}  // namespace diffuse::ops
