// The state of the emulated device's memory shared by memory.cpp (the region, cudaMalloc and
// cudaFree, opening and closing around work) and memory_faults.cpp (the SIGSEGV handler, fault
// reports, the leak check at exit). Internal to kernels/emulated_device/.
#pragma once
#include <signal.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>

namespace diffuse::emulated_device::memory_state {

constexpr size_t kAlignment = 256;  // cudaMalloc's documented minimum alignment
constexpr unsigned char kPoison = 0xFF;

inline size_t page_bytes() {
  static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return page;
}

inline size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }

struct Allocation {
  uint64_t id = 0;
  uintptr_t start = 0;      // what cudaMalloc returned
  size_t size = 0;          // bytes requested
  uintptr_t span_start = 0; // first page of the allocation's accessible pages
  size_t span_bytes = 0;    // accessible pages; the guard page follows at span_start + span_bytes
  size_t rounded() const { return round_up(size, kAlignment); }
  uintptr_t guard() const { return span_start + span_bytes; }
};

// The region and its bookkeeping. Heap-allocated and never destroyed: the fault handler and the
// exit-time leak check read it after static destructors may have run.
struct Region {
  uintptr_t base = 0;
  size_t virtual_bytes = 0;   // reserved address space (allocations plus guards and page rounding)
  size_t capacity = 0;        // totalGlobalMem
  size_t used = 0;            // sum of live allocations' sizes rounded to 256
  uintptr_t bump = 0;         // never-used addresses start here (preferred: a use after free faults)
  std::map<uintptr_t, size_t> free_spans;   // reusable address ranges once the bump area runs out
  std::map<uintptr_t, Allocation> live;     // by span_start
  uint64_t next_id = 1;
  int open_depth = 0;         // WorkScopes alive: work is running, allocations open on use
};
inline Region* g_region = nullptr;

// Recently freed allocations, for naming a use after free in fault reports.
constexpr size_t kFreedRemembered = 1024;
inline std::array<Allocation, kFreedRemembered> g_freed{};
inline size_t g_freed_next = 0;

// Read by the fault handler (async-signal-safe state only).
inline volatile sig_atomic_t g_table_busy = 0;  // the allocation table is being changed: do not walk it
inline volatile sig_atomic_t g_work_running = 0;
// Allocations opened on first touch in this synchronisation (span starts), for the slack check.
// A fixed array (the handler may not allocate); past its capacity everything is opened instead.
constexpr int kOpenedCapacity = 1024;
inline std::array<uintptr_t, kOpenedCapacity> g_opened{};
inline std::atomic<int> g_opened_count{0};
inline std::atomic<bool> g_all_open{false};  // every live allocation is open (a kernel ran, or overflow)
inline char g_work_what[512] = "";

// Marks the allocation table as being changed for the fault handler.
struct TableChange {
  TableChange() { g_table_busy = 1; }
  ~TableChange() { g_table_busy = 0; }
};

inline bool in_region(uintptr_t a) { return g_region && a >= g_region->base && a < g_region->base + g_region->virtual_bytes; }

inline const Allocation* live_allocation_at(uintptr_t a) {
  auto& live = g_region->live;
  auto it = live.upper_bound(a);
  if (it == live.begin()) return nullptr;
  --it;
  const Allocation& found = it->second;
  return a < found.guard() + page_bytes() ? &found : nullptr;  // span, or its guard page
}

inline const Allocation* freed_allocation_at(uintptr_t a) {
  for (size_t i = 0; i < kFreedRemembered; ++i) {
    const Allocation& f = g_freed[(g_freed_next + kFreedRemembered - 1 - i) % kFreedRemembered];
    if (f.id && a >= f.span_start && a < f.guard() + page_bytes()) return &f;
  }
  return nullptr;
}

template <typename F>
inline void for_each_open_allocation(F&& f) {
  if (g_all_open) {
    for (const auto& [span, a] : g_region->live) f(a);
    return;
  }
  int n = std::min(g_opened_count.load(), kOpenedCapacity);
  for (int i = 0; i < n; ++i)
    if (auto it = g_region->live.find(g_opened[i]); it != g_region->live.end()) f(it->second);
}

}  // namespace diffuse::emulated_device::memory_state
