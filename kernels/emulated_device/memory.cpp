// The emulated device's memory, so that device pointers are not host memory in disguise: one
// region reserved with mmap(PROT_NONE) at device initialisation, carved into allocations that end
// (rounded up to 256 bytes) at a PROT_NONE guard page and start NaN-filled (0xFF bytes). While
// host code runs the whole region stays PROT_NONE, so a host dereference of a device pointer
// faults; the SIGSEGV handler installed here names the allocation it hit (or, while queued work
// runs, the work and how far past the end it went). Freed spans go back to the kernel
// (MADV_DONTNEED) and fresh addresses are preferred, so a use after free faults too. A destructor
// reports allocations still live at exit and ends the process with status 86.
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
#include <atomic>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>

#include "kernels/emulated_device/device.h"

namespace diffuse::emulated_device {
namespace {

constexpr size_t kAlignment = 256;  // cudaMalloc's documented minimum alignment
constexpr unsigned char kPoison = 0xFF;

size_t page_bytes() {
  static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return page;
}

size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }

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
Region* g_region = nullptr;

// Recently freed allocations, for naming a use after free in fault reports.
constexpr size_t kFreedRemembered = 1024;
std::array<Allocation, kFreedRemembered> g_freed{};
size_t g_freed_next = 0;

// Read by the fault handler (async-signal-safe state only).
volatile sig_atomic_t g_table_busy = 0;  // the allocation table is being changed: do not walk it
volatile sig_atomic_t g_work_running = 0;
// Allocations opened on first touch in this synchronisation (span starts), for the slack check.
// A fixed array (the handler may not allocate); past its capacity everything is opened instead.
constexpr int kOpenedCapacity = 1024;
std::array<uintptr_t, kOpenedCapacity> g_opened{};
std::atomic<int> g_opened_count{0};
std::atomic<bool> g_all_open{false};  // every live allocation is open (a kernel ran, or overflow)
char g_work_what[512] = "";
struct sigaction g_previous_segv {};
volatile sig_atomic_t g_handler_entered = 0;
alignas(16) char g_altstack[64 * 1024];

// Marks the allocation table as being changed for the fault handler.
struct TableChange {
  TableChange() { g_table_busy = 1; }
  ~TableChange() { g_table_busy = 0; }
};

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

template <typename F>
void for_each_open_allocation(F&& f) {
  if (g_all_open) {
    for (const auto& [span, a] : g_region->live) f(a);
    return;
  }
  int n = std::min(g_opened_count.load(), kOpenedCapacity);
  for (int i = 0; i < n; ++i)
    if (auto it = g_region->live.find(g_opened[i]); it != g_region->live.end()) f(it->second);
}

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

const Allocation* live_allocation_at(uintptr_t a) {
  auto& live = g_region->live;
  auto it = live.upper_bound(a);
  if (it == live.begin()) return nullptr;
  --it;
  const Allocation& found = it->second;
  return a < found.guard() + page_bytes() ? &found : nullptr;  // span, or its guard page
}

const Allocation* freed_allocation_at(uintptr_t a) {
  for (size_t i = 0; i < kFreedRemembered; ++i) {
    const Allocation& f = g_freed[(g_freed_next + kFreedRemembered - 1 - i) % kFreedRemembered];
    if (f.id && a >= f.span_start && a < f.guard() + page_bytes()) return &f;
  }
  return nullptr;
}

// ---- async-signal-safe formatting ---------------------------------------------------------------

struct Text {
  char buf[1024];
  size_t n = 0;
  Text& add(const char* s) {
    while (*s && n < sizeof buf - 1) buf[n++] = *s++;
    return *this;
  }
  Text& dec(uint64_t v) {
    char digits[24];
    int k = 0;
    do digits[k++] = static_cast<char>('0' + v % 10); while ((v /= 10) != 0);
    while (k && n < sizeof buf - 1) buf[n++] = digits[--k];
    return *this;
  }
  Text& hex(uint64_t v) {
    add("0x");
    char digits[20];
    int k = 0;
    do digits[k++] = "0123456789abcdef"[v % 16]; while ((v /= 16) != 0);
    while (k && n < sizeof buf - 1) buf[n++] = digits[--k];
    return *this;
  }
  Text& allocation(const Allocation& a) { return add("allocation #").dec(a.id).add(" of ").dec(a.size).add(" bytes"); }
  void write_stderr() {
    add("\n");
    ssize_t ignored = ::write(STDERR_FILENO, buf, n);
    (void)ignored;
  }
};

// "B bytes past the end of allocation #N of S bytes", "offset O in allocation #N ...", ...
void describe_position(Text& t, uintptr_t a) {
  if (g_table_busy) {
    t.add("an address in the device region (allocation table busy)");
    return;
  }
  const Allocation* live = live_allocation_at(a);
  const Allocation* freed = live ? nullptr : freed_allocation_at(a);
  const Allocation* hit = live ? live : freed;
  if (!hit) {
    t.add("an address outside every allocation");
    return;
  }
  const char* which = live ? "" : "freed ";
  if (a >= hit->start + hit->size)
    t.dec(a - (hit->start + hit->size)).add(" bytes past the end of ").add(which).allocation(*hit);
  else if (a < hit->start)
    t.dec(hit->start - a).add(" bytes before the start of ").add(which).allocation(*hit);
  else
    t.add(g_work_running ? "inside " : "").add(which).allocation(*hit).add(", offset ").dec(a - hit->start);
}

void report_fault(uintptr_t a) {
  Text t;
  if (g_work_running) {
    t.add("emulated device: out-of-bounds access by ").add(g_work_what).add(": address ").hex(a).add(" is ");
    describe_position(t, a);
  } else {
    t.add("emulated device: host code dereferenced device memory at ").hex(a).add(" (");
    describe_position(t, a);
    t.add("); device memory is only accessible to queued device work");
  }
  t.write_stderr();
}

bool in_region(uintptr_t a) { return g_region && a >= g_region->base && a < g_region->base + g_region->virtual_bytes; }

// While work runs, its first touch of a live allocation (at or after the start, before the guard)
// opens the allocation. True when the access can be retried.
bool open_on_first_touch(uintptr_t a) {
  if (!g_work_running || g_table_busy) return false;
  const Allocation* hit = live_allocation_at(a);
  if (!hit || a < hit->start || a >= hit->guard()) return false;
  if (mprotect(reinterpret_cast<void*>(hit->span_start), hit->span_bytes, PROT_READ | PROT_WRITE) != 0) return false;
  int slot = g_opened_count.fetch_add(1);
  if (slot < kOpenedCapacity)
    g_opened[slot] = hit->span_start;
  else
    g_all_open = true;  // the slack check then looks at every allocation
  return true;
}

void on_segv(int sig, siginfo_t* info, void*) {
  uintptr_t a = reinterpret_cast<uintptr_t>(info->si_addr);
  bool ours = info->si_code > 0 && in_region(a);
  if (ours && open_on_first_touch(a)) return;
  if (g_handler_entered) {  // a second pass (a chained handler re-raised): die plainly
    signal(sig, SIG_DFL);
    return;
  }
  g_handler_entered = 1;
  if (ours) {
    report_fault(a);
    signal(sig, SIG_DFL);  // returning re-executes the access, which now kills the process
  } else {
    sigaction(sig, &g_previous_segv, nullptr);  // not ours: the handler before us decides
  }
}

bool handler_is_ours(const struct sigaction& current) {
  return (current.sa_flags & SA_SIGINFO) && current.sa_sigaction == on_segv;
}

// ---- leak check at exit -------------------------------------------------------------------------

// A destructor rather than atexit: it runs after every static destructor and atexit handler of
// the program, so long-lived device memory that the project frees at exit is gone by then.
__attribute__((destructor)) void report_leaks_at_exit() {
  if (!g_region || g_region->live.empty()) return;
  const char* env = std::getenv("DIFFUSE_EMU_LEAK_CHECK");
  if (env && std::strcmp(env, "0") == 0) return;
  std::fflush(nullptr);
  Text t;
  t.add("emulated device: ").dec(g_region->live.size()).add(" device allocation(s) leaked at exit:");
  size_t listed = 0;
  for (const auto& [span, a] : g_region->live) {
    if (++listed > 20) {
      t.add(" ...");
      break;
    }
    t.add(" #").dec(a.id).add(" (").dec(a.size).add(" bytes)");
  }
  t.add(" (set DIFFUSE_EMU_LEAK_CHECK=0 to allow)");
  t.write_stderr();
  _exit(86);
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

// Installs the SIGSEGV handler (and an alternate signal stack) unless it is already the current
// one. Test frameworks install their own handler per test case, so this runs on every API entry;
// while work runs the SIMT emulator's handler sits on top of ours and must stay there.
void assert_fault_handler() {
  if (g_work_running) return;
  struct sigaction current {};
  sigaction(SIGSEGV, nullptr, &current);
  if (handler_is_ours(current)) return;
  // Whoever replaced our handler (a test framework) may have changed the alternate stack too.
  stack_t current_stack{};
  sigaltstack(nullptr, &current_stack);
  if (current_stack.ss_flags & SS_DISABLE) {
    stack_t mine{};
    mine.ss_sp = g_altstack;
    mine.ss_size = sizeof g_altstack;
    sigaltstack(&mine, nullptr);
  }
  struct sigaction action {};
  action.sa_sigaction = on_segv;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&action.sa_mask);
  g_handler_entered = 0;
  sigaction(SIGSEGV, &action, &g_previous_segv);
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

std::string describe_address(const void* p) {
  std::lock_guard<std::recursive_mutex> lock(device_lock());
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  Text t;
  t.hex(a).add(" (");
  if (in_region(a))
    describe_position(t, a);
  else
    t.add("not device memory");
  t.add(")");
  return std::string(t.buf, t.n);
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
                 "(first overwritten byte: %zu past the end)\n",
                 what.c_str(), static_cast<unsigned long long>(a.id), a.size, first);
    status = cudaErrorIllegalAddress;
  });
  return status;
}

}  // namespace diffuse::emulated_device
