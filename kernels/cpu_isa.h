// Which vector instruction set the CPU kernels run: the kernels' hot loops (kernels/cpu/simd/) are
// compiled once per path — baseline (x86-64's SSE2, or plain C++ elsewhere), AVX2+FMA and AVX-512 —
// and one is chosen at start from the CPU found, so one binary runs everywhere and uses what the
// machine has (docs/design.md §5, "CPU kernels"). DIFFUSE_CPU_ISA=baseline|avx2|avx512 forces a
// path at or below the detected one (tests run the CPU ops on every path the machine has);
// set_cpu_isa() does the same for a program or a test.
#pragma once
#include <atomic>
#include <optional>
#include <string_view>
#include <vector>

namespace diffuse::kernels::cpu {

enum class CpuIsa : int { baseline = 0, avx2 = 1, avx512 = 2 };

const char* cpu_isa_name(CpuIsa isa);
std::optional<CpuIsa> parse_cpu_isa(std::string_view name);
// The best path this CPU (and its operating system) supports and this build compiled.
CpuIsa detected_cpu_isa();
// Every path this machine can run, baseline first.
std::vector<CpuIsa> available_cpu_isas();
// Chooses the path for every later kernel call; throws diffuse::Error naming the path when the CPU
// cannot run it.
void set_cpu_isa(CpuIsa isa);
// Throws diffuse::Error (ErrorKind::usage) naming DIFFUSE_CPU_ISA when it holds a path that is
// unknown or that this CPU cannot run; the kernels then use the detected path.
void check_cpu_isa_environment();
// Where the path in use came from: "detected" or "DIFFUSE_CPU_ISA" or "set_cpu_isa".
const char* cpu_isa_origin();

namespace detail {
extern std::atomic<int> g_active_cpu_isa;  // -1 until first use
CpuIsa initialize_cpu_isa();               // detection + DIFFUSE_CPU_ISA, once
}  // namespace detail

// The path in use: one relaxed load on every call after the first.
inline CpuIsa active_cpu_isa() {
  int v = detail::g_active_cpu_isa.load(std::memory_order_relaxed);
  return v >= 0 ? CpuIsa(v) : detail::initialize_cpu_isa();
}

}  // namespace diffuse::kernels::cpu
