// The op table on the CPU backends, f32 and f64 (tests/ops/op_table.h): one test case
// "op table: <op> on cpu-f32|cpu-f64" per op. Also checks that the table has rows for every op
// nn/ops.h declares, so a new op cannot go untested. Linked into test_cpu, and into test_cuda in
// the emulated-device build (which has no test_cpu).
#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>
#include <regex>
#include <sstream>

#include "ops/op_table.h"

namespace diffuse::test::op_table {
namespace {

const bool registered = [] {
  register_tests(kCpuF32, "", [](const std::string& op) { run_op(op, kCpuF32); });
  register_tests(kCpuF64, "[grad]", [](const std::string& op) { run_op(op, kCpuF64); });
  return true;
}();

}  // namespace

TEST_CASE("op table: every op nn/ops.h declares has rows", "[ops][table]") {
  std::ifstream in(std::string(DIFFUSE_SOURCE_DIR) + "/nn/ops.h");
  REQUIRE(in);
  std::stringstream text;
  text << in.rdbuf();
  const std::string header = text.str();
  // Declarations at namespace scope: "Tensor add(", "void denoise_step(", "QSampleOutput q_sample(".
  const std::regex declaration(R"(\n(?:Tensor|void|QSampleOutput) (\w+)\()");
  const std::vector<std::string> table = table_ops();
  int declared = 0;
  for (auto it = std::sregex_iterator(header.begin(), header.end(), declaration); it != std::sregex_iterator(); ++it) {
    const std::string op = (*it)[1];
    ++declared;
    INFO("nn/ops.h declares " << op);
    CHECK(std::find(table.begin(), table.end(), op) != table.end());
  }
  CHECK(declared == static_cast<int>(table.size()));
}

// f32: the fused store adds in another order than the unfused GEMM-then-add (a few roundings).
TEST_CASE("op table: conv2d and linear's fused residual against the unfused composition on the CPU", "[ops][table]") {
  check_fused_residual(Device::cpu, DType::f32, 1e-6);
  check_fused_residual(Device::cpu, DType::f64, 1e-14);
  check_fused_residual_errors(Device::cpu);
}

}  // namespace diffuse::test::op_table
