// Warp collectives (__shfl*_sync, __ballot/__any/__all_sync, __reduce_*_sync, __syncwarp) and the
// deadlock report. Lanes are grouped by their mask: a lane waits until every lane its mask names
// waits at the same collective with the same mask; the last to arrive computes all the results.
// A mask naming a lane that cannot arrive is an error, never a hang.
#include <algorithm>
#include <cstdio>
#include <string>

#include "kernels/emulator/block.h"

namespace diffuse::emulator::detail {

const char* warp_op_name(WarpOp op) {
  switch (op) {
    case WarpOp::sync: return "__syncwarp";
    case WarpOp::shfl_idx: return "__shfl_sync";
    case WarpOp::shfl_up: return "__shfl_up_sync";
    case WarpOp::shfl_down: return "__shfl_down_sync";
    case WarpOp::shfl_xor: return "__shfl_xor_sync";
    case WarpOp::ballot: return "__ballot_sync";
    case WarpOp::any: return "__any_sync";
    case WarpOp::all: return "__all_sync";
    case WarpOp::reduce_add: return "__reduce_add_sync";
    case WarpOp::reduce_min_i:
    case WarpOp::reduce_min_u: return "__reduce_min_sync";
    case WarpOp::reduce_max_i:
    case WarpOp::reduce_max_u: return "__reduce_max_sync";
  }
  return "?";
}

namespace {

std::string hex(unsigned v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

// "3" or "16-31" style list of the lanes set in `bits`.
std::string lane_list(unsigned bits) {
  std::string out;
  for (int l = 0; l < 32;) {
    if (!(bits >> l & 1u)) {
      ++l;
      continue;
    }
    int e = l;
    while (e + 1 < 32 && (bits >> (e + 1) & 1u)) ++e;
    // Appended piece by piece: g++ 12 at -O3 reports a false -Wrestrict on `"-" + std::to_string(e)`.
    if (!out.empty()) out += ',';
    out += std::to_string(l);
    if (e > l) {
      out += '-';
      out += std::to_string(e);
    }
    l = e + 1;
  }
  return out;
}

// Lanes of `warp` that exist in this block (the last warp of a block may be partial).
unsigned existing_lanes(const BlockState& b, int warp) {
  int lanes = std::min(32, b.nthreads - warp * 32);
  return lanes >= 32 ? ~0u : (1u << lanes) - 1u;
}

bool joined(const EmuThread& u, const PendingWarpOp& op) {
  return u.state == ThreadState::at_warp && u.warp.op == op.op && u.warp.mask == op.mask &&
         u.warp.value_bytes == op.value_bytes;
}

// The value lane `src` contributes to a shuffle, or poison (all bits set: NaN for floats) when
// the source lane is not part of the collective (CUDA leaves that value undefined).
uint64_t source_value(const BlockState& b, int base, unsigned mask, int src) {
  if (src < 0 || src > 31 || !(mask >> src & 1u)) return ~uint64_t{0};
  return b.threads[base + src].warp.value;
}

int64_t as_signed(uint64_t v) { return static_cast<int32_t>(static_cast<uint32_t>(v)); }

// Computes the results of a complete collective for every lane in its mask.
void complete(BlockState& b, int base, const PendingWarpOp& op) {
  unsigned vote = 0;
  uint64_t acc = 0;
  bool first = true;
  for (int l = 0; l < 32; ++l) {
    if (!(op.mask >> l & 1u)) continue;
    uint64_t v = b.threads[base + l].warp.value;
    vote |= (v != 0 ? 1u : 0u) << l;
    uint32_t v32 = static_cast<uint32_t>(v);
    switch (op.op) {
      case WarpOp::reduce_add: acc = static_cast<uint32_t>(acc + v32); break;
      case WarpOp::reduce_min_u: acc = first ? v32 : std::min<uint64_t>(acc, v32); break;
      case WarpOp::reduce_max_u: acc = first ? v32 : std::max<uint64_t>(acc, v32); break;
      case WarpOp::reduce_min_i:
        acc = first || as_signed(v32) < as_signed(acc) ? v32 : acc;
        break;
      case WarpOp::reduce_max_i:
        acc = first || as_signed(v32) > as_signed(acc) ? v32 : acc;
        break;
      default: break;
    }
    first = false;
  }
  for (int l = 0; l < 32; ++l) {
    if (!(op.mask >> l & 1u)) continue;
    EmuThread& t = b.threads[base + l];
    const PendingWarpOp& w = t.warp;
    unsigned width = static_cast<unsigned>(w.width);
    unsigned section = static_cast<unsigned>(l) & ~(width - 1);  // first lane of l's section
    unsigned last = section + width - 1;
    unsigned arg = static_cast<unsigned>(w.arg);
    uint64_t r = 0;
    switch (op.op) {
      case WarpOp::sync: r = 0; break;
      case WarpOp::shfl_idx: r = source_value(b, base, op.mask, static_cast<int>(section + (arg & (width - 1)))); break;
      case WarpOp::shfl_up:
        r = static_cast<unsigned>(l) - section < arg ? w.value : source_value(b, base, op.mask, l - static_cast<int>(arg));
        break;
      case WarpOp::shfl_down:
        r = static_cast<unsigned>(l) + arg > last ? w.value : source_value(b, base, op.mask, l + static_cast<int>(arg));
        break;
      case WarpOp::shfl_xor: {
        unsigned src = static_cast<unsigned>(l) ^ arg;
        r = src > last ? w.value : source_value(b, base, op.mask, static_cast<int>(src));
        break;
      }
      case WarpOp::ballot: r = vote; break;
      case WarpOp::any: r = vote != 0; break;
      case WarpOp::all: r = vote == op.mask; break;
      default: r = acc; break;
    }
    t.warp.result = r;
    t.state = ThreadState::runnable;
  }
  b.warp_waiting[base / 32] &= ~op.mask;
  if (g_racecheck_running) racecheck_warp_sync(base, op.mask);  // the lanes' accesses are ordered now
}

}  // namespace

uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t value, int value_bytes, int arg, int width,
                         const char* file, unsigned line) {
  BlockState& b = running_block(warp_op_name(op));
  EmuThread& t = b.threads[b.current];
  int warp = b.current / 32, lane = b.current % 32, base = warp * 32;
  // The call as error reports name it, formatted only on a failure: this path runs for every lane
  // of every collective, and building the text eagerly made a shuffle about 7x slower.
  auto where = [&] {
    return std::string(warp_op_name(op)) + " at " + site(file, line) + " (block " + dim_str(block_idx) +
           ", thread " + dim_str(t.idx) + ", warp " + std::to_string(warp) + ", lane " + std::to_string(lane) +
           ", mask " + hex(mask) + ")";
  };
  if (!(mask >> lane & 1u)) [[unlikely]]
    fail(where() + ": the mask does not name the calling lane");
  if (width < 1 || width > 32 || (width & (width - 1)) != 0) [[unlikely]]
    fail(where() + ": width " + std::to_string(width) + " is not a power of two in 1..32");
  unsigned missing = mask & ~existing_lanes(b, warp);
  if (missing) [[unlikely]]
    fail("warp collective deadlock: " + where() + " names lanes " + lane_list(missing) +
         ", which do not exist (block of " + std::to_string(b.nthreads) + " threads)");

  t.warp = PendingWarpOp{op, mask, value_bytes, arg, width, value, 0, file, line};
  t.state = ThreadState::at_warp;
  uint32_t& waiting = b.warp_waiting[warp];
  waiting |= 1u << lane;
  if ((waiting & mask) == mask) {  // every lane of the mask waits: is it at this same collective?
    bool all_here = true;
    for (int l = 0; l < 32 && all_here; ++l)
      if (mask >> l & 1u) all_here = joined(b.threads[base + l], t.warp);
    if (all_here) complete(b, base, t.warp);
  }
  yield_to_interleaver();  // the last arrival yields too: lanes continue in the chosen order
  return t.warp.result;
}

void report_deadlock(const BlockState& b) {
  for (int i = 0; i < b.nthreads; ++i) {
    const EmuThread& t = b.threads[i];
    if (t.state != ThreadState::at_warp) continue;
    const PendingWarpOp& op = t.warp;
    int warp = i / 32, base = warp * 32;
    // Group the absent lanes by why they are absent.
    unsigned exited = 0, at_barrier = 0, elsewhere = 0;
    std::string other;
    for (int l = 0; l < 32; ++l) {
      if (!(op.mask >> l & 1u)) continue;
      const EmuThread& u = b.threads[base + l];
      if (joined(u, op)) continue;
      if (u.state == ThreadState::exited) exited |= 1u << l;
      else if (u.state == ThreadState::at_barrier) at_barrier |= 1u << l;
      else {
        elsewhere |= 1u << l;
        if (other.empty())
          other = std::string(warp_op_name(u.warp.op)) + " at " + site(u.warp.file, u.warp.line) + " with mask " +
                  hex(u.warp.mask);
      }
    }
    std::string why;
    if (exited) why += "; lanes " + lane_list(exited) + " exited";
    if (at_barrier) why += "; lanes " + lane_list(at_barrier) + " wait at __syncthreads at " + site(b.barrier_file, b.barrier_line);
    if (elsewhere) why += "; lanes " + lane_list(elsewhere) + " wait at " + other;
    fail("warp collective deadlock: " + std::string(warp_op_name(op.op)) + " at " + site(op.file, op.line) +
         " (block " + dim_str(block_idx) + ", warp " + std::to_string(warp) + ", mask " + hex(op.mask) +
         ") never completes" + why);
  }
  // No collective is pending, so the stuck threads wait at a barrier some thread never reaches.
  for (const EmuThread& t : b.threads)
    if (t.state == ThreadState::exited)
      fail("divergent __syncthreads at " + site(b.barrier_file, b.barrier_line) + " in block " + dim_str(block_idx) +
           ": " + std::to_string(b.barrier_arrivals) + " of " + std::to_string(b.nthreads) +
           " threads wait there but thread " + dim_str(t.idx) + " exited without reaching it");
  fail("block " + dim_str(block_idx) + " stopped with threads that can never run (internal error)");
}

}  // namespace diffuse::emulator::detail
