// The op table on the CUDA backend, f32 (tests/ops/op_table.h): one test case
// "op table: <op> on cuda-f32" per op, with device allocations NaN-poisoned so an element an op
// never writes fails. Linked into test_cuda: a GPU in a CUDA build, the emulated device in a
// -DDIFFUSE_CUDA=EMULATED build. Without a device each case says so and returns.
#include <catch2/catch.hpp>

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
}  // namespace diffuse::test::op_table
