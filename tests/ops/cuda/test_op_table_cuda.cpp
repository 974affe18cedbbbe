// The op table on the CUDA backend, f32 (tests/ops/op_table.h): one test case
// "op table: <op> on cuda-f32" per op, with device allocations NaN-poisoned so an element an op
// never writes fails. Linked into test_cuda: a GPU in a CUDA build, the emulated device in a
// -DDIFFUSE_CUDA=EMULATED build. Without a device each case says so and returns. Attention's rows
// (attention's and attention_packed's) run on each CUDA path: the rule's choice (the GEMM path in
// one chunk at these sizes, checked in test_ops_cuda.cpp), the flash kernels forced (rows at other
// head dims stay on the GEMM path), and the GEMM path in chunks of one image (its scratch budget
// lowered to one byte).
#include <catch2/catch.hpp>

#include "kernels/attention.h"
#include "kernels/linear.h"
#include "ops/op_table.h"
#include "support/cuda_guard.h"

namespace diffuse::test::op_table {
namespace {

const bool registered = [] {
  register_tests(kCudaF32, "[cuda]", [](const std::string& op) {
    DIFFUSE_CUDA_TEST_GUARD();
    PoisonDeviceAllocations poison;
    run_op(op, kCudaF32);
  });
  return true;
}();

}  // namespace

TEST_CASE("op table: attention on cuda-f32, flash kernels forced", "[ops][table][cuda]") {
  DIFFUSE_CUDA_TEST_GUARD();
  PoisonDeviceAllocations poison;
  const kernels::cuda::ScopedAttentionPath flash(kernels::cuda::AttentionPathChoice::flash);
  run_op("attention", kCudaF32);
  run_op("attention_packed", kCudaF32);
}

TEST_CASE("op table: attention on cuda-f32, GEMM path in chunks of one image", "[ops][table][cuda]") {
  DIFFUSE_CUDA_TEST_GUARD();
  PoisonDeviceAllocations poison;
  const kernels::cuda::ScopedAttentionPath chunked(kernels::cuda::AttentionPathChoice::gemm, 1);
  run_op("attention", kCudaF32);
  run_op("attention_packed", kCudaF32);
}

// Linear: one cuBLASLt matmul, y = x·wᵀ + bias + residual (C, beta = 1) rounded once, or (without
// cuBLASLt, and for conv2d) the GEMM then the epilogue kernel adding (y + bias) + residual. f32:
// the unfused composition up to the order of float adds. bf16: the unfused composition rounds to
// bf16 twice more (after the bias and after the add), the design's bf16 bound (docs/design.md §11).
TEST_CASE("op table: conv2d and linear's fused residual against the unfused composition on cuda", "[ops][table][cuda]") {
  DIFFUSE_CUDA_TEST_GUARD();
  PoisonDeviceAllocations poison;
  for (const bool use_lt : {true, false}) {
    INFO((use_lt ? "linear through cuBLASLt" : "linear through GEMM + epilogue kernel"));
    kernels::cuda::set_linear_use_lt(use_lt);
    struct Restore {
      ~Restore() { kernels::cuda::set_linear_use_lt(true); }
    } restore;
    check_fused_residual(Device::cuda, DType::f32, 1e-6);
    check_fused_residual(Device::cuda, DType::bf16, 1e-2);
  }
  check_fused_residual_errors(Device::cuda);
}

}  // namespace diffuse::test::op_table
