// The op table (docs/design.md §11): every public op of nn/ops.h as rows of small cases, each run
// on every backend the test binary has (CPU f32, CPU f64, CUDA f32) against a naive f64 reference
// written in tests/ops/naive_reference.cpp, in the manner of ggml's backend op tests. One row is
// one case: the op, what the case exercises, its inputs, how to call the op, the naive reference,
// and whether it is differentiated. The runner (op_table.cpp) checks per backend: the output's
// device, dtype and shape, its error against the reference (with and without an autograd tape),
// the grads against the CPU f64 backward, and on CPU f64 the backward against central finite
// differences. To add an op: write its naive reference in naive_reference.cpp and its rows in a
// rows_*.cpp file; the test cases "op table: <op> on <backend>" appear by themselves
// (cpu/test_op_table_cpu.cpp, cuda/test_op_table_cuda.cpp register them from the rows).
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "nn/tensor.h"

namespace diffuse::test::op_table {

using Inputs = std::vector<Tensor>;
using Outputs = std::vector<Tensor>;
// Calls the op (or, for a reference, computes its result) on inputs laid out as the row's specs.
using OpFn = std::function<Outputs(const Inputs&)>;

// How one input of a row is made. Float inputs are drawn as f32 values (so the f64 reference
// sees exactly the numbers an f32 backend sees) and converted to the backend's dtype; `fixed`
// integer tensors (indices, timesteps) keep their dtype and only move to the backend's device.
struct InputSpec {
  enum class Kind { normal, positive, fixed, absent };
  Kind kind = Kind::normal;
  Shape shape;
  double scale = 1, shift = 0;  // normal: shift + scale·N(0, 1)
  bool grad = false;            // differentiated (rows with differentiable set)
  // fixed: the values and their dtype. Rows hold no tensors: they are built while test cases are
  // registered, before main, when no tensor may be allocated yet.
  std::vector<double> values;
  DType values_dtype = DType::f32;
};

// shift + scale·N(0, 1), differentiated.
InputSpec normal(const Shape& shape, double scale = 1, double shift = 0);
// The same values, not differentiated (a target, a frozen weight, the data of a non-differentiable op).
InputSpec constant(const Shape& shape, double scale = 1, double shift = 0);
// U(0.5, 1.5), differentiated: for reductions whose sum must not cancel towards zero.
InputSpec positive(const Shape& shape);
// Given values of `shape`: an integer dtype is kept on every backend; f32 follows the backend's dtype.
InputSpec fixed(const std::vector<double>& values, const Shape& shape, DType dtype = DType::f32);
// An undefined tensor (no bias, no add_nc, no weight).
InputSpec absent();

// The forward error bounds of a row. The measures are those of the per-op tests the table
// replaced: CPU f64 the largest absolute error; CPU f32 the largest |got − want| / max(1, |want|);
// CUDA the largest error relative to the reference's peak (support/cuda_compare.h). Grads on f32
// backends are measured relative to the peak of the CPU f64 grad, within cpu_f32 or cuda_f32.
struct Bounds {
  double cpu_f64 = 1e-12;
  double cpu_f32 = 1e-5;
  double cuda_f32 = 1e-3;
};
// One rounding per element (add, scale, silu...): exact up to f64 and f32 rounding.
inline constexpr Bounds kElementRounding{1e-15, 1e-6, 1e-3};
// Copies (concat, upsample, embedding): bit for bit on every backend.
inline constexpr Bounds kExactCopy{0, 0, 0};

struct OpRow {
  std::string op;    // the nn/ops.h function, e.g. "conv2d"
  std::string name;  // what the case exercises, e.g. "3x3 stride 2 pad (0,1,0,1)"
  std::vector<InputSpec> inputs;
  OpFn run;
  OpFn reference;  // on host f64 inputs (fixed integer inputs as given); returns f64 host tensors
  bool differentiable = true;  // one output; its backward is checked
  bool f32_only = false;       // no f64 kernel (q_sample): skipped on CPU f64
  // Sizes that exist for CPU-only paths (OpenMP splits, chunked im2col, split GEMMs): skipped on
  // CUDA, where the emulated device runs each thread in turn.
  bool cpu_only = false;
  // Forward error bounds against the reference, per backend. Ops that only copy or do one
  // rounding per element set tighter ones; a row that widens one says why.
  Bounds bounds;
};

// The rows, grouped by the nn/ops_*.cpp file of the op.
std::vector<OpRow> elementwise_rows();
std::vector<OpRow> conv_linear_rows();
std::vector<OpRow> group_norm_attention_rows();
std::vector<OpRow> shape_embedding_rows();
std::vector<OpRow> loss_diffusion_rows();

// Every row of the table, built once.
const std::vector<OpRow>& all_rows();
// The ops the table has rows for, in table order, each once.
std::vector<std::string> table_ops();

// A place an op runs: a device and the float dtype its inputs are converted to.
struct Backend {
  const char* name;  // "cpu-f32", "cpu-f64", "cuda-f32"
  Device device;
  DType dtype;
};
inline constexpr Backend kCpuF32{"cpu-f32", Device::cpu, DType::f32};
inline constexpr Backend kCpuF64{"cpu-f64", Device::cpu, DType::f64};
inline constexpr Backend kCudaF32{"cuda-f32", Device::cuda, DType::f32};

// Runs every row of `op` on `backend` with Catch CHECKs; each failure names the op, the case,
// the input shapes and dtypes, and the backend.
void run_op(const std::string& op, const Backend& backend);

// The fused residual of conv2d and linear against ops::add(residual, op(...)) on one backend and
// dtype (fused_residual.cpp): forward within forward_bound (relative to the peak), every grad bit
// for bit, the residual's grad dy itself. And its argument errors.
void check_fused_residual(Device device, DType dtype, double forward_bound);
void check_fused_residual_errors(Device device);

// Registers one Catch test case "op table: <op> on <backend>" per op of the table, calling
// `body(op)`; the tags are "[ops][table]" plus `extra_tags`. Call at static initialisation.
void register_tests(const Backend& backend, const char* extra_tags, std::function<void(const std::string&)> body);

}  // namespace diffuse::test::op_table
