// The emulated device's memory, so that device pointers are not host memory in disguise: one
// region reserved with mmap(PROT_NONE) at device initialisation, carved into allocations that end
// (rounded up to 256 bytes) at a PROT_NONE guard page and start NaN-filled (0xFF bytes). While
// host code runs the whole region stays PROT_NONE, so a host dereference of a device pointer
// faults, and memory_faults.cpp's SIGSEGV handler names the allocation it hit (or, while queued
// work runs, the work and how far past the end it went). Freed spans go back to the kernel
// (MADV_DONTNEED) and fresh addresses are preferred, so a use after free faults too.
//
// Cost: while work runs, an allocation is opened (made readable and writable, one mprotect) when
// the work first touches it: the fault handler opens it and the access is retried. Kernels are
// the exception: the SIMT emulator installs its own SIGSEGV handler above ours for a launch and
// chains to ours by re-installing it, which would leave the emulator's handler (and racecheck's
// shared-memory traps) uninstalled for the rest of the launch; so before a kernel runs, every
// live allocation is opened at once. At the end of a synchronisation one mprotect closes the
// whole used part of the region.
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>

#include "kernels/emulated_device/device.h"
#include "kernels/emulated_device/memory_state.h"

namespace diffuse::emulated_device {
namespace {

using namespace memory_state;

// ---- configuration ------------------------------------------------------------------------------

// "16G", "512M", "64K", "1048576" (powers of 1024); nullopt for anything else.
std::optional<size_t> parse_memory_size(const char* text) {
  if (!text || !std::isdigit(static_cast<unsigned char>(*text))) return std::nullopt;
  char* end = nullptr;
  unsigned long long value = std::strtoull(text, &end, 10);
  int shift = 0;
  switch (*end) {
    case '\0': break;
    case 'k': case 'K': shift = 10; ++end; break;
    case 'm': case 'M': shift = 20; ++end; break;
    case 'g': case 'G': shift = 30; ++end; break;
    case 't': case 'T': shift = 40; ++end; break;
    default: return std::nullopt;
  }
  if (*end != '\0' || value == 0 || value > (1ull << 42) >> shift) return std::nullopt;
  return static_cast<size_t>(value << shift);
}

// ---- protection -------------------------------------------------------------------------------

void protect(uintptr_t start, size_t bytes, int prot) {
  if (bytes && mprotect(reinterpret_cast<void*>(start), bytes, prot) != 0) {
    std::perror("emulated device: mprotect of device memory failed");
    std::abort();
  }
}

// Work may touch any live allocation: all of them become readable and writable (guards stay
// PROT_NONE).
void open_live_allocations() {
  for (const auto& [span, a] : g_region->live) protect(a.span_start, a.span_bytes, PROT_READ | PROT_WRITE);
}

// One call closes them all: everything from the region's start to the end of the used addresses.
void close_region() { protect(g_region->base, g_region->bump - g_region->base, PROT_NONE); }

// ---- address space --------------------------------------------------------------------------

// An address range of `bytes` (a page multiple), or 0 when the region is full.
uintptr_t take_span(size_t bytes) {
  Region& r = *g_region;
  if (r.bump + bytes <= r.base + r.virtual_bytes) {
    uintptr_t start = r.bump;
    r.bump += bytes;
    return start;
  }
  for (auto it = r.free_spans.begin(); it != r.free_spans.end(); ++it) {
    if (it->second < bytes) continue;
    uintptr_t start = it->first;
    size_t rest = it->second - bytes;
    r.free_spans.erase(it);
    if (rest) r.free_spans.emplace(start + bytes, rest);
    return start;
  }
  return 0;
}

void give_back_span(uintptr_t start, size_t bytes) {
  auto& spans = g_region->free_spans;
  auto next = spans.lower_bound(start);
  if (next != spans.end() && start + bytes == next->first) {
    bytes += next->second;
    next = spans.erase(next);
  }
  if (next != spans.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == start) {
      prev->second += bytes;
      return;
    }
  }
  spans.emplace(start, bytes);
}

}  // namespace

// ---- initialisation (called by initialise_device with the lock held) ------------------------

// Reserves the region. False (with a message on stderr) when DIFFUSE_EMU_DEVICE_MEMORY is bad or
// the address space cannot be reserved.
bool reserve_device_memory() {
  if (g_region) return true;
  size_t capacity = size_t{16} << 30;
  if (const char* env = std::getenv("DIFFUSE_EMU_DEVICE_MEMORY"); env && *env) {
    std::optional<size_t> parsed = parse_memory_size(env);
    if (!parsed || *parsed < page_bytes()) {
      std::fprintf(stderr,
                   "emulated device: DIFFUSE_EMU_DEVICE_MEMORY must be a byte count of at least %zu with an "
                   "optional K, M, G or T suffix (powers of 1024), got '%s'\n",
                   page_bytes(), env);
      return false;
    }
    capacity = *parsed;
  }
  // Guard pages and page rounding need address space beyond the capacity; it costs nothing.
  size_t virtual_bytes = round_up(capacity, page_bytes()) * 4 + (size_t{1} << 30);
  void* p = mmap(nullptr, virtual_bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    std::fprintf(stderr, "emulated device: cannot reserve %zu bytes of address space for device memory\n",
                 virtual_bytes);
    return false;
  }
  auto* r = new Region;
  r->base = reinterpret_cast<uintptr_t>(p);
  r->virtual_bytes = virtual_bytes;
  r->capacity = capacity;
  r->bump = r->base;
  g_region = r;
  return true;
}

// ---- queries ------------------------------------------------------------------------------------

bool in_device_region(const void* p) { return in_region(reinterpret_cast<uintptr_t>(p)); }

bool is_host_pointer(const void* p) { return p && !in_device_region(p); }

bool is_device_range(const void* p, size_t bytes) {
  std::lock_guard<std::recursive_mutex> lock(device_lock());
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  if (!in_region(a)) return false;
  const Allocation* hit = live_allocation_at(a);
  if (!hit || a < hit->start || a > hit->start + hit->size) return false;
  return bytes <= hit->start + hit->size - a;
}

size_t device_memory_bytes() { return g_region ? g_region->capacity : 0; }

size_t free_device_memory_bytes() { return g_region ? g_region->capacity - g_region->used : 0; }

// ---- cudaMalloc / cudaFree ----------------------------------------------------------------------

cudaError_t allocate_device_memory(void** p, size_t bytes) {
  Region& r = *g_region;
  size_t rounded = round_up(bytes, kAlignment);
  if (rounded < bytes || rounded > r.capacity - r.used) return cudaErrorMemoryAllocation;
  size_t span_bytes = round_up(rounded, page_bytes());
  TableChange change;
  uintptr_t span_start = take_span(span_bytes + page_bytes());
  if (!span_start) return cudaErrorMemoryAllocation;
  Allocation a;
  a.id = r.next_id++;
  a.size = bytes;
  a.span_start = span_start;
  a.span_bytes = span_bytes;
  a.start = a.guard() - rounded;  // the rounded end abuts the guard page
  protect(a.span_start, a.span_bytes, PROT_READ | PROT_WRITE);
  std::memset(reinterpret_cast<void*>(a.span_start), kPoison, a.span_bytes);  // cudaMalloc does not zero
  protect(a.span_start, a.span_bytes, PROT_NONE);  // opened by the work that touches it
  r.live.emplace(a.span_start, a);
  r.used += rounded;
  *p = reinterpret_cast<void*>(a.start);
  return cudaSuccess;
}

cudaError_t free_device_memory(void* p) {
  Region& r = *g_region;
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  if (!in_region(a)) return cudaErrorInvalidValue;
  const Allocation* hit = live_allocation_at(a);
  if (!hit || hit->start != a) return cudaErrorInvalidValue;
  Allocation gone = *hit;
  TableChange change;
  madvise(reinterpret_cast<void*>(gone.span_start), gone.span_bytes, MADV_DONTNEED);
  protect(gone.span_start, gone.span_bytes, PROT_NONE);
  r.live.erase(gone.span_start);
  r.used -= gone.rounded();
  give_back_span(gone.span_start, gone.span_bytes + page_bytes());
  g_freed[g_freed_next] = gone;
  g_freed_next = (g_freed_next + 1) % kFreedRemembered;
  return cudaSuccess;
}

// ---- while queued work runs ---------------------------------------------------------------------

WorkScope::WorkScope() {
  if (g_region) ++g_region->open_depth;
  g_work_running = 1;
}

WorkScope::~WorkScope() {
  if (g_region && --g_region->open_depth > 0) return;
  g_work_running = 0;
  if (!g_region) return;
  close_region();
  g_opened_count = 0;
  g_all_open = false;
}

// Kernels ("kernel <name> launched at <file:line>", kernel_queue.cpp) get everything opened
// first: see the top of this file.
void announce_work(const std::string& what) {
  if (g_region && !g_all_open && what.rfind("kernel ", 0) == 0) {
    open_live_allocations();
    g_all_open = true;
  }
  size_t n = std::min(what.size(), sizeof g_work_what - 1);
  std::memcpy(g_work_what, what.data(), n);
  g_work_what[n] = '\0';
}

cudaError_t check_slack_after(const std::string& what) {
  if (!g_region) return cudaSuccess;
  static const std::array<unsigned char, kAlignment> poison = [] {
    std::array<unsigned char, kAlignment> bytes;
    bytes.fill(kPoison);
    return bytes;
  }();
  cudaError_t status = cudaSuccess;
  for_each_open_allocation([&](const Allocation& a) {
    const auto* slack = reinterpret_cast<const unsigned char*>(a.start + a.size);
    size_t slack_bytes = a.rounded() - a.size;
    if (status != cudaSuccess || std::memcmp(slack, poison.data(), slack_bytes) == 0) return;
    size_t first = 0;
    while (slack[first] == kPoison) ++first;
    std::fprintf(stderr,
                 "emulated device: out-of-bounds write by %s past the end of allocation #%llu of %zu bytes "
                 "(the first overwritten byte is %zu bytes past the end)\n",
                 what.c_str(), static_cast<unsigned long long>(a.id), a.size, first);
    status = cudaErrorIllegalAddress;
  });
  return status;
}

}  // namespace diffuse::emulated_device
