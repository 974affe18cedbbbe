// Racecheck: reports two threads of a block touching the same shared-memory word in the same
// barrier interval when at least one of them writes (and not both atomically), the bug a missing
// __syncthreads or __syncwarp plants. Kernels reach shared memory through plain pointers (float*
// from dynamic_smem, float4 casts), so accesses cannot be intercepted in C++. Instead, while a
// block runs under racecheck its shared-memory pages are PROT_NONE; every kernel access faults,
// and the SIGSEGV handler (memory.cpp's, which asks racecheck_fault first) records it in a shadow
// and lets the instruction complete without opening the page: it replays the instruction out of
// line through an always-writable alias of shared memory (replay_out_of_line). Instructions it
// cannot replay are single-stepped instead: the page is opened, the trap flag set, and the
// SIGTRAP after that one instruction closes the page again. An access costs about 3 us replayed,
// 19 us single-stepped (2-core VM): only small shapes run under racecheck, and it is off unless
// asked for (racecheck.h).
//
// Happens-before within a block: a completed __syncthreads starts a new barrier interval (an
// epoch), and accesses from different intervals never race. Within an interval, two lanes of the
// same warp are ordered by a warp collective both joined (vector clocks over the 32 lanes, joined
// at every completed collective); lanes of different warps are never ordered. Atomic intrinsics
// mark their accesses (detail::in_atomic) and do not race with each other.
//
// The shadow holds, per 4-byte word, the interval it was last touched in, the last writer and up
// to two readers (thread, touched bytes, the lane's warp clock, the instruction's address). The
// handler only records (async-signal-safe: no allocation, no locks, no exceptions); the first
// finding is turned into a diffuse::Error by the interleaver when the thread next yields.
#include <dlfcn.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>
#if defined(__x86_64__) && defined(__linux__)
#include <asm/prctl.h>
#include <sys/syscall.h>
#include <ucontext.h>
#endif

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "diffuse/error.h"
#include "kernels/emulator/block.h"
#include "kernels/emulator/racecheck.h"

namespace diffuse::emulator {

namespace {
bool g_enabled = false;
bool g_enabled_set = false;
}  // namespace

bool racecheck() {
  if (!g_enabled_set) {
    const char* env = std::getenv("DIFFUSE_EMU_RACECHECK");
    std::string v = env ? env : "";
    if (v.empty() || v == "0") g_enabled = false;
    else if (v == "1") g_enabled = true;
    else throw Error("DIFFUSE_EMU_RACECHECK must be 0 or 1, got '" + v + "'");
    g_enabled_set = true;
  }
  return g_enabled;
}

void set_racecheck(bool on) {
  g_enabled = on;
  g_enabled_set = true;
}

bool racecheck_supported() {
#if defined(__x86_64__) && defined(__linux__)
  return true;
#else
  return false;
#endif
}

namespace detail {

volatile std::sig_atomic_t in_atomic = 0;
bool g_racecheck_running = false;

namespace {
volatile unsigned long long g_faults = 0;
}  // namespace

unsigned long long racecheck_faults() { return g_faults; }

#if defined(__x86_64__) && defined(__linux__)

namespace {

constexpr greg_t kTrapFlag = 0x100;  // EFLAGS.TF: single-step
constexpr greg_t kWriteFault = 0x2;  // page-fault error code: the access was a write

// One recorded access to a word.
struct Access {
  uint16_t thread = 0;  // linear thread index + 1; 0 = none
  uint8_t bytes = 0;    // which of the word's 4 bytes (bit mask)
  uint8_t atomic = 0;
  uint32_t time = 0;    // the thread's own warp clock at the access
  uintptr_t pc = 0;     // the faulting instruction
};

struct Word {
  uint32_t epoch = 0;  // the barrier interval of the accesses below; older ones are forgotten
  Access writer;
  Access readers[2];
};

enum class FindingKind : uint8_t { none, race, out_of_bounds };

struct Finding {
  FindingKind kind = FindingKind::none;
  const char* addr = nullptr;  // the word's first byte (out_of_bounds: the faulting byte)
  Access first;                // the earlier access
  bool first_write = false;
  Access second;               // the access that found the conflict
  bool second_write = false;
  const char* barrier_file = nullptr;  // the interval's opening barrier (null: the block's start)
  unsigned barrier_line = 0;
};

struct State {
  SharedMemoryMap map;
  bool protected_pages = false;
  uint32_t epoch = 1;
  const char* barrier_file = nullptr;
  unsigned barrier_line = 0;
  std::vector<Word> static_shadow, dynamic_shadow;  // per word of the arena / the dynamic pages
  std::vector<uint32_t> clocks;                     // [thread][lane]: a lane's vector clock
  int nthreads = 0;
  // The instruction being single-stepped: the pages it opened and the bytes it was recorded for.
  char* open_pages[4] = {};
  int open_count = 0;
  uintptr_t step_pc = 0;
  const char* step_start = nullptr;
  const char* step_end = nullptr;
  Finding finding;
  struct sigaction previous_trap {};
  // Out-of-line replay (see replay_out_of_line): the code page and the GS base to restore.
  uint8_t* xol = nullptr;
  bool replay = false;
  unsigned long saved_gs = 0;
} g;

size_t page_bytes() {
  static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return page;
}

// ---- the faulting instruction ------------------------------------------------------------------
// A vector access (float4: movups, 16 bytes) faults once, at its first byte; to record every word
// it touches, the size of the memory operand is decoded from the instruction. This covers the
// integer, x87, SSE/SSE2 and VEX forms g++ emits for kernel code; for anything else the size is 0
// and only the word holding the faulting byte is recorded. `rmw` marks read-modify-write
// instructions (recorded as writes whatever the fault's error code says). `length` is the whole
// instruction's, known when its only memory operand is a ModRM one that is not RIP-relative and it
// has no segment prefix: such an instruction can be replayed out of line with a GS override
// (see replay_out_of_line); otherwise length is 0 and the access is single-stepped.
struct Insn {
  int bytes = 0;
  int length = 0;
  bool rmw = false;
};

int operand_bytes(const uint8_t* p, bool* rmw, int* length);
int size_of(uint8_t op, int map, bool vex, bool vex_l, bool opsize, int rep, bool w, int reg, bool* rmw);

Insn decode(const uint8_t* pc) {
  Insn insn;
  insn.bytes = operand_bytes(pc, &insn.rmw, &insn.length);
  if (insn.length > 14) insn.length = 0;  // no room for the GS prefix (15 bytes at most)
  return insn;
}

int operand_bytes(const uint8_t* p, bool* rmw, int* length) {
  const uint8_t* const start = p;
  *rmw = false;
  *length = 0;
  bool segment = false;
  bool opsize = false;
  int rep = 0;  // 0xF3 or 0xF2 when present (mandatory SSE prefixes)
  for (;; ++p) {
    uint8_t b = *p;
    if (b == 0x66) opsize = true;
    else if (b == 0xF2 || b == 0xF3) rep = b;
    else if (b == 0xF0 || b == 0x67) continue;
    else if (b == 0x2E || b == 0x36 || b == 0x3E || b == 0x26 || b == 0x64 || b == 0x65) segment = true;
    else break;
  }
  bool w = false, vex = false, vex_l = false;
  int map = 0;
  if ((*p & 0xF0) == 0x40) w = (*p++ & 0x8) != 0;  // REX
  if (*p == 0xC5) {  // two-byte VEX: map 0F
    vex = true;
    vex_l = (p[1] >> 2 & 1) != 0;
    int pp = p[1] & 3;
    opsize = pp == 1, rep = pp == 2 ? 0xF3 : pp == 3 ? 0xF2 : 0;
    map = 1;
    p += 2;
  } else if (*p == 0xC4) {  // three-byte VEX
    vex = true;
    map = p[1] & 0x1F;
    w = (p[2] >> 7) != 0;
    vex_l = (p[2] >> 2 & 1) != 0;
    int pp = p[2] & 3;
    opsize = pp == 1, rep = pp == 2 ? 0xF3 : pp == 3 ? 0xF2 : 0;
    p += 3;
  } else if (*p == 0x0F) {
    ++p;
    map = 1;
    if (*p == 0x38) map = 2, ++p;
    else if (*p == 0x3A) map = 3, ++p;
  }
  const uint8_t op = *p;
  const uint8_t* const modrm = p + 1;
  const int reg = (p[1] >> 3) & 7;  // ModRM.reg (the opcode extension of group opcodes)
  int size = size_of(op, map, vex, vex_l, opsize, rep, w, reg, rmw);
  if (size == 0 || segment || (map == 0 && op >= 0xA4 && op <= 0xAF)) return size;  // string ops: no ModRM
  if (map == 0 && op == 0xFF && reg >= 2 && reg != 6) return size;  // indirect call/jmp: never replayed
  const uint8_t* q = modrm + 1;
  int mod = *modrm >> 6, rm = *modrm & 7;
  if (mod == 3) return size;  // a register operand: not this fault's access
  if (rm == 4) {              // SIB
    if (mod == 0 && (*q & 7) == 5) q += 4;
    ++q;
  } else if (mod == 0 && rm == 5) {
    return size;  // RIP-relative: would move with the instruction
  }
  q += mod == 1 ? 1 : mod == 2 ? 4 : 0;
  int imm = 0;
  if (map == 0) {
    if (op == 0x69 || op == 0x81 || op == 0xC7 || (op == 0xF7 && reg <= 1)) imm = opsize ? 2 : 4;
    else if (op == 0x6B || op == 0x80 || op == 0x83 || op == 0xC0 || op == 0xC1 || op == 0xC6 || (op == 0xF6 && reg <= 1)) imm = 1;
  } else if (op == 0x70 || op == 0xA4 || op == 0xAC || op == 0xBA || op == 0xC2 || op == 0xC4 || op == 0xC5 || op == 0xC6) {
    imm = 1;
  }
  *length = static_cast<int>(q + imm - start);
  return size;
}

// The memory operand's size for an opcode (0: not known here).
int size_of(uint8_t op, int map, bool vex, bool vex_l, bool opsize, int rep, bool w, int reg, bool* rmw) {
  const int v = w ? 8 : opsize ? 2 : 4;
  const int xmm = vex && vex_l ? 32 : 16;
  if (map == 0) {
    if (vex) return 0;
    if (op < 0x40 && (op & 7) < 4) {  // add/or/adc/sbb/and/sub/xor/cmp with a ModRM operand
      *rmw = (op & 2) == 0 && (op & 0x38) != 0x38;
      return op & 1 ? v : 1;
    }
    switch (op) {
      case 0x63: return 4;  // movsxd
      case 0x69: case 0x6B: case 0x85: case 0x8B: case 0x89: return v;
      case 0x84: case 0x88: case 0x8A: return 1;
      case 0x86: *rmw = true; return 1;
      case 0x87: *rmw = true; return v;
      case 0x80: case 0x82: *rmw = reg != 7; return 1;
      case 0x81: case 0x83: *rmw = reg != 7; return v;
      case 0x8F: return 8;
      case 0xA4: case 0xA6: case 0xAA: case 0xAC: case 0xAE: return 1;  // string ops
      case 0xA5: case 0xA7: case 0xAB: case 0xAD: case 0xAF: return v;
      case 0xC6: return 1;
      case 0xC7: return v;
      case 0xC0: case 0xD0: case 0xD2: *rmw = true; return 1;
      case 0xC1: case 0xD1: case 0xD3: *rmw = true; return v;
      case 0xF6: *rmw = reg == 2 || reg == 3; return 1;
      case 0xF7: *rmw = reg == 2 || reg == 3; return v;
      case 0xFE: *rmw = true; return 1;
      case 0xFF: *rmw = reg <= 1; return reg <= 1 ? v : 8;
      case 0xD8: return 4;  // x87 arithmetic with m32
      case 0xDC: return 8;  // ... with m64
      case 0xD9: return reg <= 3 ? 4 : reg == 5 || reg == 7 ? 2 : 0;
      case 0xDD: return reg <= 3 ? 8 : 0;
      case 0xDB: return reg <= 3 ? 4 : reg == 5 || reg == 7 ? 10 : 0;
      case 0xDF: return reg <= 3 ? 2 : reg == 5 || reg == 7 ? 8 : 0;
      default: return 0;
    }
  }
  if (map != 1) return 0;
  const int scalar = rep == 0xF3 ? 4 : rep == 0xF2 ? 8 : 0;  // ss / sd forms
  switch (op) {
    case 0x10: case 0x11: case 0x51: case 0x58: case 0x59: case 0x5C: case 0x5D: case 0x5E: case 0x5F:
    case 0xC2:
      return scalar ? scalar : xmm;  // movups/movss/sqrtps/addps/mulps/subps/minps/divps/maxps/cmpps
    case 0x52: case 0x53: return scalar ? 4 : xmm;
    case 0x12: case 0x16: return rep == 0xF3 ? xmm : 8;  // movlps/movhps (movsldup/movshdup)
    case 0x13: case 0x17: return 8;
    case 0x14: case 0x15: case 0x28: case 0x29: case 0x2B: case 0x54: case 0x55: case 0x56: case 0x57:
    case 0x5B: case 0xC6: case 0xE7: return xmm;
    case 0x2A: return rep ? (w ? 8 : 4) : 8;                    // cvtsi2ss/sd, cvtpi2ps
    case 0x2C: case 0x2D: return scalar ? scalar : opsize ? 16 : 8;
    case 0x2E: case 0x2F: return opsize ? 8 : 4;                // ucomisd / ucomiss
    case 0x5A: return scalar ? scalar : opsize ? xmm : 8;       // cvtss2sd, cvtsd2ss, cvtpd2ps, cvtps2pd
    case 0xE6: return rep == 0xF3 ? 8 : xmm;
    case 0x6E: case 0x7E:
      if (rep == 0xF3 && op == 0x7E) return 8;  // movq xmm, m64
      return w ? 8 : 4;                         // movd / movq
    case 0xD6: return 8;
    case 0x6F: case 0x7F: case 0x70: return opsize || rep ? xmm : 8;
    case 0x40: case 0x41: case 0x42: case 0x43: case 0x44: case 0x45: case 0x46: case 0x47:
    case 0x48: case 0x49: case 0x4A: case 0x4B: case 0x4C: case 0x4D: case 0x4E: case 0x4F:
    case 0xAF: return vex ? 0 : v;  // cmovcc, imul
    case 0xB6: case 0xBE: return 1;
    case 0xB7: case 0xBF: return 2;
    case 0xB0: case 0xC0: *rmw = true; return 1;  // cmpxchg, xadd
    case 0xB1: case 0xC1: *rmw = true; return v;
    case 0xC4: return 2;  // pinsrw
    case 0xC7: *rmw = reg == 1; return reg == 1 ? (w ? 16 : 8) : 0;  // cmpxchg8b/16b
    default:
      if ((op >= 0x60 && op <= 0x6D) || (op >= 0x74 && op <= 0x76) || op >= 0xD1)
        return opsize ? xmm : 8;  // SSE2 integer ops (66 prefix), MMX otherwise
      return 0;
  }
}

// ---- the shadow ----------------------------------------------------------------------------------

uint32_t own_clock(int t) { return g.clocks[static_cast<size_t>(t) * 32 + t % 32]; }

// Whether `a` (by another thread) happened before the running thread `t`'s current point.
bool ordered_before(const Access& a, int t) {
  int u = a.thread - 1;
  return u / 32 == t / 32 && a.time <= g.clocks[static_cast<size_t>(t) * 32 + u % 32];
}

bool conflicts(const Access& a, const Access& mine) {
  return a.thread != 0 && a.thread != mine.thread && (a.bytes & mine.bytes) != 0 && !(a.atomic && mine.atomic) &&
         !ordered_before(a, mine.thread - 1);
}

void report(FindingKind kind, const char* addr, const Access& first, bool first_write, const Access& second,
            bool second_write) {
  Finding& f = g.finding;
  f.kind = kind;
  f.addr = addr;
  f.first = first;
  f.first_write = first_write;
  f.second = second;
  f.second_write = second_write;
  f.barrier_file = g.barrier_file;
  f.barrier_line = g.barrier_line;
}

// Records `mine` on word `w` (at `addr`), reporting the first conflict.
void record_word(Word& w, const char* addr, const Access& mine, bool write) {
  if (w.epoch != g.epoch) w = Word{g.epoch, {}, {{}, {}}};
  if (conflicts(w.writer, mine)) return report(FindingKind::race, addr, w.writer, true, mine, write);
  if (write) {
    for (const Access& r : w.readers)
      if (conflicts(r, mine)) return report(FindingKind::race, addr, r, false, mine, true);
    // Every earlier access is ordered before this write (or touches other bytes): the write stands
    // for the reads it covers.
    if (w.writer.thread == mine.thread && w.writer.time == mine.time) w.writer.bytes |= mine.bytes;
    else w.writer = mine;
    for (Access& r : w.readers)
      if ((r.bytes & ~mine.bytes) == 0) r = Access{};
    return;
  }
  for (Access& r : w.readers)
    if (r.thread == mine.thread) {
      uint8_t bytes = r.time == mine.time ? static_cast<uint8_t>(r.bytes | mine.bytes) : mine.bytes;
      r = mine;
      r.bytes = bytes;
      return;
    }
  for (Access& r : w.readers)
    if (r.thread == 0) {
      r = mine;
      return;
    }
  w.readers[1] = mine;  // keep the first reader and the latest one
}

// Records an access of [start, end) by the running thread.
void record(const char* start, const char* end, bool write, uintptr_t pc) {
  if (g.finding.kind != FindingKind::none) return;  // the first finding is the one reported
  const SharedMemoryMap& m = g.map;
  bool in_static = start >= m.static_base && start < m.static_base + m.static_capacity;
  if (in_static) {
    int rank;
    const char* array;
    size_t bytes;
    if (!find_static_array(start, &rank, &array, &bytes) || !find_static_array(end - 1, &rank, &array, &bytes)) {
      Access mine{static_cast<uint16_t>(g_block->current + 1), 0, 0, 0, pc};
      return report(FindingKind::out_of_bounds, start, mine, write, mine, write);
    }
  } else if (start < m.dynamic_ptr) {
    Access mine{static_cast<uint16_t>(g_block->current + 1), 0, 0, 0, pc};
    return report(FindingKind::out_of_bounds, start, mine, write, mine, write);
  }
  const char* base = in_static ? m.static_base : m.dynamic_pages;
  std::vector<Word>& shadow = in_static ? g.static_shadow : g.dynamic_shadow;
  int t = g_block->current;
  bool atomic = in_atomic != 0;
  if (atomic) write = true;  // an atomic is a read-modify-write
  for (size_t i = static_cast<size_t>(start - base) / 4; base + 4 * i < end && i < shadow.size(); ++i) {
    const char* word = base + 4 * i;
    unsigned bytes = 0;
    for (int k = 0; k < 4; ++k)
      if (word + k >= start && word + k < end) bytes |= 1u << k;
    Access mine{static_cast<uint16_t>(t + 1), static_cast<uint8_t>(bytes), static_cast<uint8_t>(atomic), own_clock(t), pc};
    record_word(shadow[i], word, mine, write);
    if (g.finding.kind != FindingKind::none) return;
  }
}

// The fast path. Opening the page and single-stepping costs a debug trap, which is slow (about 15
// us under a hypervisor); instead the faulting instruction is copied to a code page with a GS
// segment prefix in front and a jump back after it, and the thread resumes there. GS's base is
// set, for the launch, to the distance between the shared-memory view and its always-writable
// alias (memory.cpp), so the copy touches the very same bytes through the alias, and the view
// stays protected: one signal per access, no mprotect. Only instructions whose single memory
// operand is a ModRM one (not RIP-relative, no segment prefix) are replayed; the rest are
// single-stepped. x86-64 user code does not use GS (glibc's TLS is FS).
void replay_out_of_line(ucontext_t* uc, const uint8_t* pc, int length) {
  uint8_t* x = g.xol;
  x[0] = 0x65;  // GS override
  std::memcpy(x + 1, pc, static_cast<size_t>(length));
  uint8_t* j = x + 1 + length;
  j[0] = 0xFF, j[1] = 0x25, j[2] = j[3] = j[4] = j[5] = 0;  // jmp *0(%rip)
  uintptr_t back = reinterpret_cast<uintptr_t>(pc) + static_cast<uintptr_t>(length);
  std::memcpy(j + 6, &back, sizeof back);
  uc->uc_mcontext.gregs[REG_RIP] = static_cast<greg_t>(reinterpret_cast<uintptr_t>(x));
}

void on_trap(int sig, siginfo_t*, void* ucontext) {
  if (g.open_count == 0) {  // not a step racecheck asked for: let the previous handler have it
    sigaction(sig, &g.previous_trap, nullptr);
    raise(sig);
    return;
  }
  for (int i = 0; i < g.open_count; ++i) mprotect(g.open_pages[i], page_bytes(), PROT_NONE);
  g.open_count = 0;
  static_cast<ucontext_t*>(ucontext)->uc_mcontext.gregs[REG_EFL] &= ~kTrapFlag;
}

// "test_emu+0x1a2b" (module and offset, for addr2line) for an instruction address.
std::string code_at(uintptr_t pc) {
  Dl_info info{};
  char buf[64];
  if (pc && dladdr(reinterpret_cast<void*>(pc), &info) && info.dli_fname) {
    const char* name = std::strrchr(info.dli_fname, '/');
    std::snprintf(buf, sizeof buf, "+0x%lx", static_cast<unsigned long>(pc - reinterpret_cast<uintptr_t>(info.dli_fbase)));
    return std::string(name ? name + 1 : info.dli_fname) + buf;
  }
  std::snprintf(buf, sizeof buf, "0x%lx", static_cast<unsigned long>(pc));
  return buf;
}

}  // namespace

RacecheckLaunch::RacecheckLaunch(int threads_per_block) {
  g.map = shared_memory_map();
  size_t static_words = g.map.static_capacity / 4;
  size_t dynamic_words = static_cast<size_t>(g.map.dynamic_end - g.map.dynamic_pages) / 4;
  if (g.static_shadow.size() < static_words) g.static_shadow.resize(static_words);
  if (g.dynamic_shadow.size() < dynamic_words) g.dynamic_shadow.resize(dynamic_words);
  g.nthreads = threads_per_block;
  g.clocks.assign(static_cast<size_t>(threads_per_block) * 32, 0);
  g.finding = Finding{};
  g.open_count = 0;
  struct sigaction action {};
  action.sa_sigaction = on_trap;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTRAP, &action, &g.previous_trap);
  if (!g.xol) {
    void* code = mmap(nullptr, page_bytes(), PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (code != MAP_FAILED) g.xol = static_cast<uint8_t*>(code);
  }
  g.replay = g.xol && g.map.alias_delta != 0 && std::getenv("DIFFUSE_EMU_RACECHECK_STEP") == nullptr &&
             syscall(SYS_arch_prctl, ARCH_GET_GS, &g.saved_gs) == 0 &&
             syscall(SYS_arch_prctl, ARCH_SET_GS, static_cast<unsigned long>(g.map.alias_delta)) == 0;
  g_racecheck_running = true;
}

RacecheckLaunch::~RacecheckLaunch() {
  if (g.protected_pages) racecheck_end_block();
  g_racecheck_running = false;
  if (g.replay) syscall(SYS_arch_prctl, ARCH_SET_GS, g.saved_gs);
  g.replay = false;
  sigaction(SIGTRAP, &g.previous_trap, nullptr);
}

void racecheck_begin_block(const BlockState& b) {
  g.map = shared_memory_map();
  if (++g.epoch == 0) {  // after 2^32 intervals: forget everything rather than alias an old epoch
    for (Word& w : g.static_shadow) w = Word{};
    for (Word& w : g.dynamic_shadow) w = Word{};
    g.epoch = 1;
  }
  g.barrier_file = nullptr;
  g.barrier_line = 0;
  for (int t = 0; t < b.nthreads; ++t) {
    uint32_t* row = &g.clocks[static_cast<size_t>(t) * 32];
    std::fill(row, row + 32, 0u);
    row[t % 32] = 1;
  }
  protect_shared_memory(true);
  g.protected_pages = true;
}

void racecheck_end_block() {
  g.protected_pages = false;
  protect_shared_memory(false);
}

void racecheck_barrier(const char* file, unsigned line) {
  if (++g.epoch == 0) {
    for (Word& w : g.static_shadow) w = Word{};
    for (Word& w : g.dynamic_shadow) w = Word{};
    g.epoch = 1;
  }
  g.barrier_file = file;
  g.barrier_line = line;
}

void racecheck_warp_sync(int base, unsigned mask) {
  uint32_t joined[32] = {};
  for (int l = 0; l < 32; ++l) {
    if (!(mask >> l & 1u)) continue;
    const uint32_t* row = &g.clocks[static_cast<size_t>(base + l) * 32];
    for (int k = 0; k < 32; ++k) joined[k] = std::max(joined[k], row[k]);
  }
  for (int l = 0; l < 32; ++l) {
    if (!(mask >> l & 1u)) continue;
    uint32_t* row = &g.clocks[static_cast<size_t>(base + l) * 32];
    std::copy(joined, joined + 32, row);
    ++row[l];
  }
}

bool racecheck_fault(siginfo_t* info, void* ucontext) {
  if (!g.protected_pages) return false;
  const char* a = static_cast<const char*>(info->si_addr);
  const SharedMemoryMap& m = g.map;
  bool ours = (a >= m.static_base && a < m.static_base + m.static_capacity) || (a >= m.dynamic_pages && a < m.dynamic_end);
  if (!ours || g.open_count == 4) return false;
  ucontext_t* uc = static_cast<ucontext_t*>(ucontext);
  uintptr_t pc = static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_RIP]);
  bool write = (uc->uc_mcontext.gregs[REG_ERR] & kWriteFault) != 0;
  g_faults = g_faults + 1;
  // The second page of an access that straddles two pages: its first part is recorded already.
  bool continuation = g.open_count > 0 && pc == g.step_pc && a >= g.step_start && a < g.step_end;
  if (continuation) {
    record(a, g.step_end, write, pc);
  } else {
    Insn insn = decode(reinterpret_cast<const uint8_t*>(pc));
    const char* end = insn.bytes > 0 ? a + insn.bytes : a + (4 - reinterpret_cast<uintptr_t>(a) % 4);
    g.step_pc = pc;
    g.step_start = a;
    g.step_end = end;
    record(a, end, write || insn.rmw, pc);
    if (g.replay && insn.length > 0 && g.open_count == 0) {
      replay_out_of_line(uc, reinterpret_cast<const uint8_t*>(pc), insn.length);
      return true;
    }
  }
  // Single-step: open the page, run the one instruction with the trap flag, close it in on_trap.
  char* page = const_cast<char*>(a) - reinterpret_cast<uintptr_t>(a) % page_bytes();
  if (mprotect(page, page_bytes(), PROT_READ | PROT_WRITE) != 0) return false;
  g.open_pages[g.open_count++] = page;
  uc->uc_mcontext.gregs[REG_EFL] |= kTrapFlag;
  return true;
}

std::string racecheck_finding(const BlockState& b) {
  if (g.finding.kind == FindingKind::none) return "";
  const Finding f = g.finding;
  auto thread = [&](const Access& a) { return dim_str(b.threads[a.thread - 1].idx); };
  // Which buffer and the byte offset in it.
  std::string where;
  const SharedMemoryMap& m = g.map;
  if (f.addr >= m.static_base && f.addr < m.static_base + m.static_capacity) {
    int rank;
    const char* start;
    size_t bytes;
    if (find_static_array(f.addr, &rank, &start, &bytes))
      where = "word +" + std::to_string(f.addr - start) + " (byte offset) of static array #" + std::to_string(rank) +
              " (the " + std::to_string(rank + 1) + (rank == 0 ? "st" : rank == 1 ? "nd" : rank == 2 ? "rd" : "th") +
              " DIFFUSE_SHARED the block reached, " + std::to_string(bytes) + " bytes)";
    else
      where = "byte +" + std::to_string(f.addr - m.static_base) + " of the static shared-memory arena";
  } else {
    where = (f.addr >= m.dynamic_ptr ? "word +" + std::to_string(f.addr - m.dynamic_ptr)
                                     : "byte -" + std::to_string(m.dynamic_ptr - f.addr)) +
            " (byte offset) of dynamic smem";
  }
  g.finding = Finding{};
  if (f.kind == FindingKind::out_of_bounds)
    return "emulator: shared-memory access out of bounds in block " + dim_str(block_idx) + ": thread " + thread(f.second) +
         (f.second_write ? " wrote " : " read ") + where + ", outside every shared array (instruction at " +
         code_at(f.second.pc) + ")";
  auto kind = [](const Access& a, bool write) {
    return std::string(a.atomic ? "atomically updated" : write ? "wrote" : "read");
  };
  int u = f.first.thread - 1, t = f.second.thread - 1;
  std::string since = f.barrier_file ? "since the barrier at " + site(f.barrier_file, f.barrier_line)
                                     : "since the block started, before any __syncthreads";
  std::string warp = u / 32 == t / 32 ? "; both in warp " + std::to_string(t / 32) +
                                            " with no warp collective of both lanes between the accesses"
                                      : "";
  return "emulator: shared-memory race in block " + dim_str(block_idx) + ": thread " + thread(f.first) + " " +
         kind(f.first, f.first_write) + " " + where + " while thread " + thread(f.second) + " " +
         kind(f.second, f.second_write) + " it in the same barrier interval (" + since + warp +
         "); instructions at " + code_at(f.first.pc) + " and " + code_at(f.second.pc) + " (addr2line -e <binary>)";
}

#else  // not x86-64 Linux: racecheck cannot trap accesses here

RacecheckLaunch::RacecheckLaunch(int) {
  fail("racecheck (DIFFUSE_EMU_RACECHECK=1) is not supported on this architecture: it needs x86-64 Linux");
}
RacecheckLaunch::~RacecheckLaunch() = default;
void racecheck_begin_block(const BlockState&) {}
void racecheck_end_block() {}
void racecheck_barrier(const char*, unsigned) {}
void racecheck_warp_sync(int, unsigned) {}
bool racecheck_fault(siginfo_t*, void*) { return false; }
std::string racecheck_finding(const BlockState&) { return ""; }

#endif

}  // namespace detail
}  // namespace diffuse::emulator
