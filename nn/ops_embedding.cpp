// Embedding ops (kernels/embedding.h): a differentiable lookup table for class labels, and the
// sinusoidal timestep embedding (not differentiable: timesteps are data, not parameters). Both go
// through the device seam (nn/dispatch.h), so a forward on CUDA reads its timesteps and labels in
// device memory and can be captured into a CUDA graph.
//
// Label range check: an id outside the table is an error naming it. The ids are checked on the
// host, which for CUDA ids costs a copy of N labels and a wait on the stream — except while the
// stream is being captured into a graph (nn/device_graph.h), when nothing may read device memory
// back. Then the check is the graph owner's: the ids a replay reads must be ones it checked on
// the host before writing them (the sampler replays the labels its eager warm-up steps checked;
// docs/design.md §4). An id that slipped past would give a NaN row (the kernel never reads
// outside the table), never another row's values.
#include "kernels/embedding.h"

#include "nn/autograd.h"
#include "nn/device_graph.h"
#include "nn/dispatch.h"
#include "nn/op_checks.h"
#include "nn/ops.h"

namespace diffuse::ops {

using namespace detail;
using dispatch::backend_for;
namespace k = diffuse::kernels;

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
  if (index.device() == Device::cpu || !device_capture_active()) {
    const Tensor host_index = index.to(Device::cpu);  // the same tensor on the CPU
    const dispatch::BadIndex bad = dispatch::first_index_out_of_range(op, host_index, d.v);
    if (bad.position >= 0)
      fail(op, "index " + std::to_string(bad.value) + " at position " + std::to_string(bad.position) +
                   " is outside a table of " + std::to_string(d.v) + " rows (" + table.describe() + ")");
  }
  backend_for(op, table).embedding_forward(d, table, index, out);
  if (any_requires_grad({&table})) {
    Tensor saved_index = index.detach();
    Shape ts = table.shape();
    record(op, {&table}, {&out}, [d, saved_index, ts](const TensorList& g) {
      Tensor gt = Tensor::empty(ts, g[0].dtype(), g[0].device());
      backend_for("embedding backward", g[0]).embedding_backward(d, saved_index, g[0], gt);
      return TensorList{gt};
    });
  }
  return out;
}

Tensor timestep_embedding(const Tensor& t, int dim, bool flip_sin_to_cos, double freq_shift, int64_t rows) {
  const char* op = "timestep_embedding";
  check_defined(op, t, "t");
  check_rank(op, t, 1, "t [N]");
  if (dim < 1) fail(op, "dim must be positive, got " + std::to_string(dim));
  if (dim / 2 > 0 && static_cast<double>(dim / 2) - freq_shift == 0.0)
    fail(op, "dim " + std::to_string(dim) + " with freq_shift " + std::to_string(freq_shift) +
                 " divides the frequency exponent by zero (dim/2 - freq_shift)");
  if (rows < 0 || (rows > 0 && t.numel() != 1 && t.numel() != rows))
    fail(op, "t " + t.describe() + " must have one value or " + std::to_string(rows) + " for " +
                 std::to_string(rows) + " rows");
  if (t.dtype() != DType::f32 && t.dtype() != DType::f64 && t.dtype() != DType::i32 && t.dtype() != DType::i64)
    fail(op, "t must be f32, f64, i32 or i64, got " + t.describe());
  k::TimestepEmbeddingDesc d{rows > 0 ? rows : t.dim(0), dim, flip_sin_to_cos, freq_shift};
  d.broadcast_t = t.numel() == 1 && d.n != 1;
  const DType out_dtype = t.dtype() == DType::f64 ? DType::f64 : DType::f32;
  Tensor out = Tensor::empty({d.n, dim}, out_dtype, t.device());
  // By device only: t's dtypes are checked above (and an f64 t by the CUDA backend, which has none).
  backend_for(op, t.device()).timestep_embedding(d, t, out);
  return out;
}

}  // namespace diffuse::ops
