// A per-op time profile of whole steps (`diffuse bench train|sample --profile`, docs/performance.md
// "Reading a profile"): where a training or sampling step's time goes, op by op, without a vendor
// profiler. The hook is the device seam (nn/dispatch.h): backend_for(op, ...) marks a seam entry
// of op first, and every kernel call of an op goes through backend_for, so an op's calls are the seam
// calls made under its name. Inside run_backward (nn/autograd.cpp) a seam call made by the
// backward of the tape node N is named "N backward" (cuBLAS/cuDNN work and casts included: they
// belong to the node that made them); one made by run_backward itself outside any node (the
// accumulation of a grad used twice) is named "<op> (backward, between nodes)".
//
// Timing: on the CPU the kernels run synchronously, so steady_clock at each seam entry gives the
// time from one op's entry to the next's. On CUDA each entry also records a CUDA event on
// current_stream() (a preallocated pool, grown only between steps) and nothing synchronises
// inside the step: after it, end_step() waits once for the last event and attributes the GPU time
// between consecutive events to the op that recorded the first. Both clocks attribute everything
// between two entries to the earlier op: its host bookkeeping after the kernel call, allocator
// work, copies queued outside the seam (Tensor::copy_from, uploads), and on CUDA the time the GPU
// idles waiting for the host to queue the next op. Host time >= GPU time marks a launch-bound op.
// The step's rest is what comes before the first seam entry of the step.
//
// Off (no Profiler recording), the hook is one load and one predictable branch per seam call.
// One Profiler at a time, and it profiles only the thread that created it (the one running the
// step); seam calls of other threads are not counted. A CUDA graph replay makes no seam calls, so
// profiled steps must run eagerly.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "nn/allocator.h"

namespace diffuse::op_profile {

// One row of a profile: an op (or "N backward") over the profiled steps, per step.
struct OpRow {
  std::string op;
  double calls = 0;    // seam calls per step
  double ms = 0;       // device time per step (the host clock on the CPU)
  double host_ms = 0;  // host time per step from this op's seam entry to the next one's
  double share = 0;    // ms / the step's ms
};

struct Profile {
  Device device = Device::cpu;
  int64_t steps = 0;         // steps averaged
  double step_ms = 0;        // the step's device time (host time on the CPU), per step
  double host_step_ms = 0;   // host time from begin_step() to end_step() (enqueue time on CUDA)
  double rest_ms = 0;        // step_ms − Σ ops' ms: before the step's first seam entry
  double host_rest_ms = 0;   // host_step_ms − Σ ops' host_ms
  // The ops' ms split by where they ran: before the step's first backward call (forward and
  // loss), inside run_backward, and after its first call outside it (the optimizer). With the
  // rest they add up to step_ms; a step without a backward has only `before`.
  double before_backward_ms = 0, backward_ms = 0, after_backward_ms = 0;
  std::vector<OpRow> ops;    // sorted by ms, largest first
};

// Device events for the CUDA clock (nn/cuda/op_profile_events.cpp; none in a build without CUDA).
class EventTimer {
 public:
  virtual ~EventTimer() = default;
  virtual size_t capacity() const = 0;
  virtual void grow(size_t events) = 0;     // creates events up to this many (between steps only)
  virtual void record(size_t index) = 0;    // records event `index` on current_stream()
  // Waits for event count-1, then writes the ms from event 0 to each event 0..count-1.
  virtual void elapsed(size_t count, std::vector<double>& ms_from_first) = 0;
};
// Null in a build without CUDA.
std::unique_ptr<EventTimer> make_cuda_event_timer();

class Profiler {
 public:
  // Profiles the calling thread's seam calls between begin_step() and end_step(). `device` is the
  // clock: Device::cuda records events on current_stream(). Throws if another Profiler exists.
  explicit Profiler(Device device);
  ~Profiler();
  Profiler(const Profiler&) = delete;
  Profiler& operator=(const Profiler&) = delete;

  void begin_step();
  // Ends the step (CUDA: one wait for its last event) and adds it to the profile when `count`.
  // False when not counted: count was false, or the step made more seam calls than the pool
  // held (the pool has then grown to fit the next one).
  bool end_step(bool count = true);
  // Drops a step begun and not wanted (no wait).
  void cancel_step();
  Profile result() const;

  struct Mark {
    const char* op;
    const char* node;  // the tape node whose backward made the call; null outside one
    bool backward;     // inside run_backward
    std::chrono::steady_clock::time_point host;
  };
  // The hook's slow path (detail::seam_entry): the calling thread's seam entry.
  void mark(const char* op);
  bool owned_here() const { return std::this_thread::get_id() == owner_; }
  const char* node_ = nullptr;
  bool in_backward_ = false;

 private:
  struct Acc {
    double calls = 0, ms = 0, host_ms = 0;
  };
  Device device_;
  std::thread::id owner_;
  std::unique_ptr<EventTimer> events_;
  std::vector<Mark> marks_;  // capacity fixed during a step
  size_t capacity_ = 256;    // marks (and events beyond the start and end ones) a step may hold
  size_t seen_ = 0;          // seam entries of this step, counted past the capacity
  std::chrono::steady_clock::time_point host_start_;
  std::vector<double> ms_from_first_;
  std::vector<std::pair<std::string, Acc>> rows_;  // in first-seen order
  int64_t steps_ = 0;
  double step_ms_ = 0, host_step_ms_ = 0, rest_ms_ = 0, host_rest_ms_ = 0;
  double before_backward_ms_ = 0, backward_ms_ = 0, after_backward_ms_ = 0;
};

namespace detail {
extern std::atomic<Profiler*> g_recording;  // non-null between begin_step() and end_step()
void seam_entry(Profiler* p, const char* op);
}  // namespace detail

// backend_for's hook: the recording profiler (null while none records); a seam call then goes to
// detail::seam_entry.
inline Profiler* recording() { return detail::g_recording.load(std::memory_order_relaxed); }

// run_backward's scopes: the whole backward, and one node's backward function.
class BackwardScope {
 public:
  BackwardScope();
  ~BackwardScope();
  BackwardScope(const BackwardScope&) = delete;
  BackwardScope& operator=(const BackwardScope&) = delete;

 private:
  Profiler* p_;
  bool previous_ = false;
};

class NodeScope {
 public:
  explicit NodeScope(const char* node);
  ~NodeScope();
  NodeScope(const NodeScope&) = delete;
  NodeScope& operator=(const NodeScope&) = delete;

 private:
  Profiler* p_;
  const char* previous_ = nullptr;
};

// A profile as a table ("op", "calls/step", "ms/step", "host ms/step", "share"), at most `top`
// op rows, then the rest and the total; the CPU form has no host column (it would repeat ms).
std::string format_table(const Profile& p, size_t top);

}  // namespace diffuse::op_profile
