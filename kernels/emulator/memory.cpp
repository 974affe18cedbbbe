// The emulator's memory: fiber stacks (allocated once, reused, a guard page under each), dynamic
// shared memory placed so that it ends exactly at a PROT_NONE guard page, and static shared arrays
// bump-allocated per block from an arena of whole pages of its own (so that racecheck can protect
// it). Shared memory is poisoned with 0xFF bytes before every block (NaN for f32/f64/bf16, -1 for
// integers). While a grid runs, a SIGSEGV is first offered to racecheck (a trapped shared-memory
// access); one in a guard page is named on stderr (which guard, which block and thread) before
// the previous handler lets the process die.
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "diffuse/error.h"
#include "kernels/emulator/block.h"

namespace diffuse::emulator {

size_t stack_bytes() {
  static const size_t bytes = [] {
    const char* env = std::getenv("DIFFUSE_EMU_STACK_KB");
    if (!env || !*env) return size_t{64} * 1024;
    char* end = nullptr;
    long kb = std::strtol(env, &end, 10);
    if (*end != '\0' || kb < 16 || kb > 65536)
      throw Error(std::string("DIFFUSE_EMU_STACK_KB must be an integer in 16..65536, got '") + env + "'");
    return static_cast<size_t>(kb) * 1024;
  }();
  return bytes;
}

namespace detail {
namespace {

constexpr size_t kMaxSharedBytes = 227 * 1024;  // per block, static + dynamic (sm_90)

size_t page_bytes() {
  static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return page;
}

size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }

char* map_region(size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw Error("emulator: cannot map " + std::to_string(bytes) + " bytes for the emulator");
  return static_cast<char*>(p);
}

void protect(char* p, size_t bytes) {
  if (mprotect(p, bytes, PROT_NONE) != 0) throw Error("emulator: mprotect of a guard page failed");
}

// Kept across launches and grown on demand (one grid runs at a time).
struct Stacks {
  char* base = nullptr;
  int count = 0;
  size_t stride = 0;  // guard page + stack
} g_stacks;

struct Dynamic {
  char* base = nullptr;
  size_t capacity = 0;  // usable bytes; the guard page starts at base + capacity (fixed)
  char* ptr = nullptr;  // this launch's buffer: [ptr, base + capacity)
  size_t bytes = 0;
} g_dynamic;

struct StaticArray {
  const void* key;  // the declaration's tag
  char* address;
  size_t bytes;
};

struct Static {
  char* arena = nullptr;  // the first part of the shared-memory window (below)
  size_t capacity = 0;
  size_t used = 0;
  std::vector<StaticArray> arrays;  // this block's, in allocation order
} g_static;

bool g_shared_protected = false;  // racecheck has made shared memory PROT_NONE

void prepare_stacks(int count) {
  size_t stride = page_bytes() + round_up(stack_bytes(), page_bytes());
  if (g_stacks.base && g_stacks.count >= count) return;
  if (g_stacks.base) munmap(g_stacks.base, g_stacks.stride * g_stacks.count);
  g_stacks = {};
  char* base = map_region(stride * count);
  for (int i = 0; i < count; ++i) protect(base + stride * i, page_bytes());  // below each stack
  g_stacks = {base, count, stride};
}

// The shared-memory window, mapped once: [static arena | dynamic buffer | guard page], each part
// the 227 KiB maximum rounded up to whole pages. It is backed by a memfd and mapped a second time
// (the alias, always readable and writable, guard page excepted) at a fixed distance, so that
// racecheck can replay a trapped access on the alias instead of opening the page, and the
// emulator can poison protected shared memory. Without memfd there is no alias (delta 0). Being
// MAP_SHARED, the window is shared with a child forked during a test; nothing relies on its
// contents across launches (every block re-poisons).
struct Window {
  char* view = nullptr;
  ptrdiff_t alias_delta = 0;
} g_window;

void prepare_window() {
  if (g_window.view) return;
  size_t part = round_up(kMaxSharedBytes, page_bytes()), total = 2 * part + page_bytes();
  char* view = nullptr;
  int fd = static_cast<int>(syscall(SYS_memfd_create, "diffuse-emu-smem", 0u));
  if (fd >= 0 && ftruncate(fd, static_cast<off_t>(total)) == 0) {
    void* v = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    void* alias = v == MAP_FAILED ? MAP_FAILED : mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (alias != MAP_FAILED) {
      // The higher mapping is the alias: racecheck needs a positive distance (a GS base must be
      // a user-space address).
      if (alias < v) std::swap(alias, v);
      view = static_cast<char*>(v);
      g_window.alias_delta = static_cast<char*>(alias) - view;
      protect(view + g_window.alias_delta + 2 * part, page_bytes());
    } else if (v != MAP_FAILED) {
      munmap(v, total);
    }
  }
  if (fd >= 0) close(fd);  // the mappings keep the memory
  if (!view) view = map_region(total);
  protect(view + 2 * part, page_bytes());
  g_static.arena = view;
  g_static.capacity = part;
  g_static.arrays.reserve(16);
  g_dynamic.base = view + part;
  g_dynamic.capacity = part;
  g_window.view = view;
}

void prepare_dynamic(size_t bytes) {
  prepare_window();
  if (bytes > g_dynamic.capacity) fail("dynamic shared memory of " + std::to_string(bytes) + " bytes exceeds 227 KiB");
  // End exactly at the guard page; start aligned to the largest power of two (<= 16) dividing
  // the size, so an overrun by even one element of the kernel's type faults.
  size_t align = 16;
  while (align > 1 && bytes % align != 0) align /= 2;
  char* end = g_dynamic.base + g_dynamic.capacity;
  g_dynamic.ptr = end - bytes;
  g_dynamic.ptr -= reinterpret_cast<uintptr_t>(g_dynamic.ptr) % align;
  g_dynamic.bytes = bytes;
}

// ---- fault reporting (async-signal-safe: fixed buffers and write(2) only) ------------------
struct sigaction g_previous_segv;
stack_t g_previous_altstack;
bool g_own_altstack = false;
alignas(16) char g_altstack[64 * 1024];

void append(char*& out, const char* s) {
  while (*s) *out++ = *s++;
}

void append_uint(char*& out, unsigned v) {
  char digits[12];
  int n = 0;
  do digits[n++] = static_cast<char>('0' + v % 10); while ((v /= 10) != 0);
  while (n) *out++ = digits[--n];
}

void append_dim(char*& out, uint3 v) {
  append(out, "(");
  append_uint(out, v.x);
  append(out, ",");
  append_uint(out, v.y);
  append(out, ",");
  append_uint(out, v.z);
  append(out, ")");
}

void on_fault(int sig, siginfo_t* info, void* ucontext) {
  if (racecheck_fault(info, ucontext)) return;  // a shared-memory access racecheck trapped
  uintptr_t a = reinterpret_cast<uintptr_t>(info->si_addr);
  uintptr_t guard = reinterpret_cast<uintptr_t>(g_dynamic.base + g_dynamic.capacity);
  uintptr_t stacks = reinterpret_cast<uintptr_t>(g_stacks.base);
  const char* what = nullptr;
  uintptr_t alias_guard = guard + static_cast<uintptr_t>(g_window.alias_delta);  // racecheck's replayed access
  if (g_dynamic.base && ((a >= guard && a < guard + page_bytes()) ||
                         (g_window.alias_delta && a >= alias_guard && a < alias_guard + page_bytes())))
    what = "dynamic shared memory overrun (access past the launch's smem_bytes)";
  else if (g_stacks.base && a >= stacks && a < stacks + g_stacks.stride * g_stacks.count &&
           (a - stacks) % g_stacks.stride < page_bytes())
    what = "stack overflow of an emulated thread (raise DIFFUSE_EMU_STACK_KB)";
  if (what) {
    char msg[256];
    char* out = msg;
    append(out, "emulator: ");
    append(out, what);
    append(out, " in block ");
    append_dim(out, block_idx);
    append(out, " thread ");
    append_dim(out, thread_idx);
    append(out, "\n");
    ssize_t ignored = write(STDERR_FILENO, msg, static_cast<size_t>(out - msg));
    (void)ignored;
  }
  // Hand the fault to whoever handled it before (Catch2, or the default: the process dies).
  sigaction(sig, &g_previous_segv, nullptr);
}

}  // namespace

LaunchMemory::LaunchMemory(int threads_per_block, size_t dynamic_smem_bytes) {
  prepare_stacks(threads_per_block);
  prepare_dynamic(dynamic_smem_bytes);
  // A stack overflow faults on the fiber's own stack, so the handler needs an alternate one.
  stack_t current{};
  sigaltstack(nullptr, &current);
  g_own_altstack = (current.ss_flags & SS_DISABLE) != 0;
  if (g_own_altstack) {
    g_previous_altstack = current;
    stack_t mine{};
    mine.ss_sp = g_altstack;
    mine.ss_size = sizeof g_altstack;
    sigaltstack(&mine, nullptr);
  }
  struct sigaction action{};
  action.sa_sigaction = on_fault;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&action.sa_mask);
  sigaction(SIGSEGV, &action, &g_previous_segv);
}

LaunchMemory::~LaunchMemory() {
  sigaction(SIGSEGV, &g_previous_segv, nullptr);
  if (g_own_altstack) sigaltstack(&g_previous_altstack, nullptr);
}

void LaunchMemory::begin_block() {
  std::memset(g_dynamic.ptr, 0xFF, g_dynamic.bytes);
  g_static.used = 0;
  g_static.arrays.clear();
}

boost::context::stack_context LaunchMemory::stack(int thread) const {
  boost::context::stack_context sctx;
  sctx.size = g_stacks.stride - page_bytes();
  sctx.sp = g_stacks.base + g_stacks.stride * static_cast<size_t>(thread + 1);  // stacks grow down
  return sctx;
}

void* dynamic_smem() {
  running_block("dynamic_smem");
  return g_dynamic.ptr;
}

void* static_smem(const void* key, size_t bytes, size_t align) {
  running_block("DIFFUSE_SHARED");
  for (const StaticArray& a : g_static.arrays)
    if (a.key == key) return a.address;
  size_t offset = round_up(g_static.used, align);
  if (offset + bytes + g_dynamic.bytes > kMaxSharedBytes)
    fail("block " + dim_str(block_idx) + " needs " + std::to_string(offset + bytes) + " bytes of static and " +
         std::to_string(g_dynamic.bytes) + " of dynamic shared memory, more than 227 KiB");
  char* p = g_static.arena + offset;
  if (g_shared_protected && g_window.alias_delta) {  // the poisoning is the emulator's, not the kernel's
    std::memset(p + g_window.alias_delta, 0xFF, bytes);
  } else if (g_shared_protected) {
    char* first = g_static.arena + offset / page_bytes() * page_bytes();
    size_t span = round_up(static_cast<size_t>(p + bytes - first), page_bytes());
    if (mprotect(first, span, PROT_READ | PROT_WRITE) != 0) fail("racecheck: mprotect failed");
    std::memset(p, 0xFF, bytes);
    if (mprotect(first, span, PROT_NONE) != 0) fail("racecheck: mprotect failed");
  } else {
    std::memset(p, 0xFF, bytes);
  }
  g_static.used = offset + bytes;
  g_static.arrays.push_back({key, p, bytes});
  return p;
}

SharedMemoryMap shared_memory_map() {
  SharedMemoryMap m;
  m.static_base = g_static.arena;
  m.static_capacity = g_static.capacity;
  m.dynamic_end = g_dynamic.base + g_dynamic.capacity;
  m.dynamic_ptr = g_dynamic.ptr;
  m.alias_delta = g_window.alias_delta;
  m.dynamic_pages = g_dynamic.base + static_cast<size_t>(g_dynamic.ptr - g_dynamic.base) / page_bytes() * page_bytes();
  return m;
}

void protect_shared_memory(bool protect) {
  int prot = protect ? PROT_NONE : PROT_READ | PROT_WRITE;
  SharedMemoryMap m = shared_memory_map();
  if (mprotect(m.static_base, m.static_capacity, prot) != 0 ||
      (m.dynamic_end > m.dynamic_pages &&
       mprotect(m.dynamic_pages, static_cast<size_t>(m.dynamic_end - m.dynamic_pages), prot) != 0))
    fail("racecheck: mprotect of shared memory failed");
  g_shared_protected = protect;
}

bool find_static_array(const char* addr, int* rank, const char** start, size_t* bytes) {
  for (size_t i = 0; i < g_static.arrays.size(); ++i) {
    const StaticArray& a = g_static.arrays[i];
    if (addr >= a.address && addr < a.address + a.bytes) {
      *rank = static_cast<int>(i);
      *start = a.address;
      *bytes = a.bytes;
      return true;
    }
  }
  return false;
}

}  // namespace detail
}  // namespace diffuse::emulator
