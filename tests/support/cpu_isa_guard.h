// Tests that run a kernel on every instruction-set path this CPU has (kernels/cpu_isa.h) switch
// paths with set_cpu_isa(); this puts back the path in use when the test ends, pass or fail.
#pragma once
#include "kernels/cpu_isa.h"

namespace diffuse::test {

struct CpuIsaGuard {
  kernels::cpu::CpuIsa saved = kernels::cpu::active_cpu_isa();
  CpuIsaGuard() = default;
  CpuIsaGuard(const CpuIsaGuard&) = delete;
  CpuIsaGuard& operator=(const CpuIsaGuard&) = delete;
  ~CpuIsaGuard() { kernels::cpu::set_cpu_isa(saved); }
};

}  // namespace diffuse::test
