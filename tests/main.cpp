// The one Catch2 main shared by every test binary (compiled once: Catch's main is slow to build).
// CTest runs the CPU kernel tests again on each instruction-set path by setting DIFFUSE_CPU_ISA
// (tests/CMakeLists.txt); on a CPU that cannot run the path asked for, the binary exits with
// kSkipForIsa, which CTest reports as skipped rather than as a pass that tested nothing. A name
// that is no path at all is a mistake in the test set-up and fails.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>

#include "diffuse/error.h"
#include "kernels/cpu_isa.h"

constexpr int kSkipForIsa = 77;

int main(int argc, char* argv[]) {
  try {
    diffuse::kernels::cpu::check_cpu_isa_environment();
  } catch (const diffuse::Error& e) {
    const bool known = diffuse::kernels::cpu::parse_cpu_isa(std::getenv("DIFFUSE_CPU_ISA")).has_value();
    std::fprintf(stderr, "%s: %s\n", known ? "skipped" : "error", e.what());
    return known ? kSkipForIsa : 1;
  }
  return Catch::Session().run(argc, argv);
}
