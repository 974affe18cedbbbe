// See kernels/cpu_isa.h. Detection uses the compiler's CPU model (__builtin_cpu_supports), which
// also checks that the operating system saves the AVX and AVX-512 registers on a context switch.
#include "kernels/cpu_isa.h"

#include <cstdlib>
#include <mutex>
#include <string>

#include "diffuse/error.h"

namespace diffuse::kernels::cpu {

namespace detail {
std::atomic<int> g_active_cpu_isa{-1};
}

namespace {

std::atomic<const char*> g_origin{"detected"};
std::string g_environment_error;  // written once, under initialize_cpu_isa's once_flag

CpuIsa detect() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma"))
    return CpuIsa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return CpuIsa::avx2;
#endif
  return CpuIsa::baseline;
}

std::string all_names() { return "baseline, avx2 or avx512"; }

}  // namespace

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::avx512: return "avx512";
    case CpuIsa::avx2: return "avx2";
    case CpuIsa::baseline: break;
  }
  return "baseline";
}

std::optional<CpuIsa> parse_cpu_isa(std::string_view name) {
  for (CpuIsa isa : {CpuIsa::baseline, CpuIsa::avx2, CpuIsa::avx512})
    if (name == cpu_isa_name(isa)) return isa;
  return std::nullopt;
}

CpuIsa detected_cpu_isa() {
  static const CpuIsa detected = detect();
  return detected;
}

std::vector<CpuIsa> available_cpu_isas() {
  std::vector<CpuIsa> out;
  for (int i = 0; i <= int(detected_cpu_isa()); ++i) out.push_back(CpuIsa(i));
  return out;
}

void set_cpu_isa(CpuIsa isa) {
  if (int(isa) > int(detected_cpu_isa()))
    throw Error(std::string("CPU kernels: this CPU cannot run the ") + cpu_isa_name(isa) + " path (the best it runs is " +
                    cpu_isa_name(detected_cpu_isa()) + ")",
                ErrorKind::bad_input);
  detail::g_active_cpu_isa.store(int(isa), std::memory_order_relaxed);
  g_origin = "set_cpu_isa";
}

const char* cpu_isa_origin() {
  active_cpu_isa();
  return g_origin.load();
}

CpuIsa detail::initialize_cpu_isa() {
  // Never throws: the first kernel call may be inside a parallel region. A bad DIFFUSE_CPU_ISA is
  // remembered and reported by check_cpu_isa_environment(), which the CLI and the library's entry
  // points call before any work.
  static std::once_flag once;
  std::call_once(once, [] {
    CpuIsa isa = detected_cpu_isa();
    if (const char* forced = std::getenv("DIFFUSE_CPU_ISA"); forced && *forced) {
      std::optional<CpuIsa> want = parse_cpu_isa(forced);
      if (!want) {
        g_environment_error = std::string("DIFFUSE_CPU_ISA=") + forced + ": not a CPU kernel path (use " + all_names() + ")";
      } else if (int(*want) > int(isa)) {
        g_environment_error = std::string("DIFFUSE_CPU_ISA=") + forced + ": this CPU cannot run it (the best it runs is " +
                              cpu_isa_name(isa) + ")";
      } else {
        isa = *want;
        g_origin = "DIFFUSE_CPU_ISA";
      }
    }
    int expected = -1;
    g_active_cpu_isa.compare_exchange_strong(expected, int(isa));
  });
  return CpuIsa(g_active_cpu_isa.load(std::memory_order_relaxed));
}

void check_cpu_isa_environment() {
  active_cpu_isa();
  if (!g_environment_error.empty()) throw Error(g_environment_error, ErrorKind::usage);
}

}  // namespace diffuse::kernels::cpu
