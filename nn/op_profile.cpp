// See op_profile.h: the profiler behind the device seam's hook, its CPU and CUDA clocks, and the
// table it prints.
#include "nn/op_profile.h"

#include <algorithm>
#include <cstdio>

#include "diffuse/error.h"
#include "nn/device_graph.h"

namespace diffuse::op_profile {

namespace detail {

std::atomic<Profiler*> g_recording{nullptr};

void seam_entry(Profiler* p, const char* op) { p->mark(op); }

}  // namespace detail

namespace {

using clock = std::chrono::steady_clock;

std::atomic<bool> g_exists{false};  // one Profiler at a time

double ms_between(clock::time_point a, clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// The recording profiler when the calling thread is its owner, else null.
Profiler* recording_here() {
  Profiler* p = detail::g_recording.load(std::memory_order_relaxed);
  return p && p->owned_here() ? p : nullptr;
}

}  // namespace

Profiler::Profiler(Device device) : device_(device), owner_(std::this_thread::get_id()) {
  if (g_exists.exchange(true)) throw Error("op profile: another profiler is already running");
  if (device == Device::cuda) {
    events_ = make_cuda_event_timer();
    if (!events_) {
      g_exists = false;
      throw Error("op profile: this build has no CUDA backend");
    }
  }
  marks_.reserve(capacity_);
  if (events_) events_->grow(capacity_ + 2);
}

Profiler::~Profiler() {
  Profiler* self = this;
  detail::g_recording.compare_exchange_strong(self, nullptr);
  g_exists = false;
}

void Profiler::begin_step() {
  if (std::this_thread::get_id() != owner_) throw Error("op profile: begin_step on a thread other than the profiler's");
  if (detail::g_recording.load() != nullptr) throw Error("op profile: begin_step inside a step");
  // Only a CUDA profile can meet a capture (and asking the CUDA runtime in a CUDA build on a
  // machine without a GPU would fail a CPU profile).
  if (device_ == Device::cuda && device_capture_active())
    throw Error("op profile: a CUDA graph capture is active; profiled steps run eagerly");
  marks_.clear();
  seen_ = 0;
  node_ = nullptr;
  in_backward_ = false;
  host_start_ = clock::now();
  if (events_) events_->record(0);
  detail::g_recording.store(this, std::memory_order_relaxed);
}

void Profiler::mark(const char* op) {
  if (!owned_here()) return;  // another thread's seam call: not this step's
  const size_t i = seen_++;
  if (i >= capacity_) return;  // counted, not recorded: the step is dropped and the pool grown
  if (events_) events_->record(i + 1);
  marks_.push_back({op, node_, in_backward_, clock::now()});
}

void Profiler::cancel_step() { detail::g_recording.store(nullptr, std::memory_order_relaxed); }

bool Profiler::end_step(bool count) {
  if (detail::g_recording.load() != this) throw Error("op profile: end_step without begin_step");
  const size_t n = marks_.size();
  const bool complete = seen_ <= capacity_;
  if (events_ && complete) events_->record(n + 1);
  const clock::time_point host_end = clock::now();
  detail::g_recording.store(nullptr, std::memory_order_relaxed);
  if (!complete) {
    // Grow between steps: the next step with as many seam calls fits. Wait for what was queued
    // so that no pending record still refers to the old events.
    if (events_) events_->elapsed(capacity_ + 1, ms_from_first_);
    capacity_ = seen_ + seen_ / 4 + 16;
    marks_.reserve(capacity_);
    if (events_) events_->grow(capacity_ + 2);
    return false;
  }
  if (!count) {
    if (events_) events_->elapsed(n + 2, ms_from_first_);  // nothing of this step still pending
    return false;
  }
  // Each mark's time and the end's, from the step's start: on the device (events) or the host.
  std::vector<double>& at = ms_from_first_;
  if (events_) {
    events_->elapsed(n + 2, at);
  } else {
    at.assign(n + 2, 0.0);
    for (size_t i = 0; i < n; ++i) at[i + 1] = ms_between(host_start_, marks_[i].host);
    at[n + 1] = ms_between(host_start_, host_end);
  }
  std::string name;
  bool seen_backward = false;
  for (size_t i = 0; i < n; ++i) {
    const Mark& m = marks_[i];
    const double ms = at[i + 2] - at[i + 1];
    seen_backward = seen_backward || m.backward;
    (m.backward ? backward_ms_ : seen_backward ? after_backward_ms_ : before_backward_ms_) += ms;
    if (m.node) {
      name.assign(m.node).append(" backward");
    } else {
      name.assign(m.op);
      if (m.backward) name.append(" (backward, between nodes)");
    }
    auto row = std::find_if(rows_.begin(), rows_.end(), [&](const auto& r) { return r.first == name; });
    if (row == rows_.end()) row = rows_.insert(rows_.end(), {name, Acc{}});
    const clock::time_point next_host = i + 1 < n ? marks_[i + 1].host : host_end;
    row->second.calls += 1;
    row->second.ms += ms;
    row->second.host_ms += ms_between(m.host, next_host);
  }
  ++steps_;
  step_ms_ += at[n + 1];
  host_step_ms_ += ms_between(host_start_, host_end);
  rest_ms_ += n > 0 ? at[1] : at[n + 1];
  host_rest_ms_ += ms_between(host_start_, n > 0 ? marks_[0].host : host_end);
  return true;
}

Profile Profiler::result() const {
  Profile p;
  p.device = device_;
  p.steps = steps_;
  if (steps_ == 0) return p;
  const double k = 1.0 / double(steps_);
  p.step_ms = step_ms_ * k;
  p.host_step_ms = host_step_ms_ * k;
  p.rest_ms = rest_ms_ * k;
  p.host_rest_ms = host_rest_ms_ * k;
  p.before_backward_ms = before_backward_ms_ * k;
  p.backward_ms = backward_ms_ * k;
  p.after_backward_ms = after_backward_ms_ * k;
  for (const auto& [name, acc] : rows_) {
    OpRow r;
    r.op = name;
    r.calls = acc.calls * k;
    r.ms = acc.ms * k;
    r.host_ms = acc.host_ms * k;
    r.share = p.step_ms > 0 ? r.ms / p.step_ms : 0.0;
    p.ops.push_back(r);
  }
  std::stable_sort(p.ops.begin(), p.ops.end(), [](const OpRow& a, const OpRow& b) { return a.ms > b.ms; });
  return p;
}

BackwardScope::BackwardScope() : p_(recording_here()) {
  if (p_) {
    previous_ = p_->in_backward_;
    p_->in_backward_ = true;
  }
}

BackwardScope::~BackwardScope() {
  if (p_) p_->in_backward_ = previous_;
}

NodeScope::NodeScope(const char* node) : p_(recording_here()) {
  if (p_) {
    previous_ = p_->node_;
    p_->node_ = node;
  }
}

NodeScope::~NodeScope() {
  if (p_) p_->node_ = previous_;
}

std::string format_table(const Profile& p, size_t top) {
  const bool cuda = p.device == Device::cuda;
  auto line = [&](const char* fmt, auto... args) {
    char buf[256];
    std::snprintf(buf, sizeof buf, fmt, args...);
    return std::string(buf);
  };
  std::string out;
  if (cuda)
    out += line("%-40s %10s %10s %12s %7s\n", "op", "calls/step", "ms/step", "host ms/step", "share");
  else
    out += line("%-40s %10s %10s %7s\n", "op", "calls/step", "ms/step", "share");
  out += std::string(cuda ? 83 : 70, '-') + "\n";
  double shown_ms = 0, shown_host = 0, shown_calls = 0, other_ms = 0, other_host = 0, other_calls = 0;
  for (size_t i = 0; i < p.ops.size(); ++i) {
    const OpRow& r = p.ops[i];
    if (i >= top) {
      other_ms += r.ms;
      other_host += r.host_ms;
      other_calls += r.calls;
      continue;
    }
    shown_ms += r.ms;
    shown_host += r.host_ms;
    shown_calls += r.calls;
    const std::string op = r.op.size() > 40 ? r.op.substr(0, 37) + "..." : r.op;
    if (cuda)
      out += line("%-40s %10.1f %10.3f %12.3f %6.1f%%\n", op.c_str(), r.calls, r.ms, r.host_ms, 100 * r.share);
    else
      out += line("%-40s %10.1f %10.3f %6.1f%%\n", op.c_str(), r.calls, r.ms, 100 * r.share);
  }
  auto summary = [&](const char* what, double calls, double ms, double host) {
    const double share = p.step_ms > 0 ? ms / p.step_ms : 0.0;
    if (cuda) return line("%-40s %10.1f %10.3f %12.3f %6.1f%%\n", what, calls, ms, host, 100 * share);
    return line("%-40s %10.1f %10.3f %6.1f%%\n", what, calls, ms, 100 * share);
  };
  if (p.ops.size() > top) {
    const std::string what = line("(%zu other ops)", p.ops.size() - top);
    out += summary(what.c_str(), other_calls, other_ms, other_host);
  }
  out += summary("(rest: before the first op)", 0.0, p.rest_ms, p.host_rest_ms);
  out += summary("step", shown_calls + other_calls, p.step_ms, p.host_step_ms);
  if (p.backward_ms > 0)
    out += line("by phase (ms/step): %.3f before backward (forward, loss), %.3f backward, %.3f after it (optimizer)\n",
                p.before_backward_ms, p.backward_ms, p.after_backward_ms);
  return out;
}

}  // namespace diffuse::op_profile
