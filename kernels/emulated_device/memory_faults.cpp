// The emulated device's SIGSEGV handler and its reports (async-signal-safe: fixed buffers and
// write(2)). A fault in the device-memory region is, while host code runs, a host dereference of
// device memory, named with the allocation it hit; while queued work runs, it is either the
// work's first touch of a live allocation (opened, and the access retried: see memory.cpp) or an
// out-of-bounds access by that work, named with how far past which allocation it went. Faults
// elsewhere go to the handler installed before ours. Also the leak check at exit.
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels/emulated_device/device.h"
#include "kernels/emulated_device/memory_state.h"

namespace diffuse::emulated_device {
namespace {

using namespace memory_state;

struct sigaction g_previous_segv {};
volatile sig_atomic_t g_handler_entered = 0;
alignas(16) char g_altstack[64 * 1024];

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

}  // namespace diffuse::emulated_device
