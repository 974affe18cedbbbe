// CUDA graphs on the emulated device, by stream capture only (capture.h states the model): the
// capture registry behind capture.h, and cudaStreamBeginCapture / EndCapture / IsCapturing,
// cudaThreadExchangeStreamCaptureMode, cudaGraphInstantiate(WithFlags), cudaGraphLaunch and the
// destroy calls. A graph is the list of work items recorded, in the order the host enqueued them,
// on the capturing stream and on the streams that joined its capture through events (fork/join);
// each item also notes the items it follows (its stream's last work, and what the events it
// waited on marked), which is how EndCapture finds a fork that was never joined back. The host's
// enqueue order is a topological order of that graph, so instantiating copies the list, and a
// launch queues the copies on the launch stream like any other work, in that order: a replay runs
// exactly the closures (kernel arguments, device addresses, copied host scalars) the capture
// recorded — as a real graph replays its nodes' frozen parameters — one after another, where a
// GPU may run the branches of a fork side by side.
//
// The refusals follow the CUDA runtime's documentation of stream capture: capture cannot begin on
// the legacy stream (cudaErrorStreamCaptureUnsupported) nor on a capturing stream
// (cudaErrorIllegalState); a refused call invalidates the capture, whose EndCapture then returns
// cudaErrorStreamCaptureInvalidated and no graph; a capture begun in global or thread-local mode
// must end on the thread that began it: another thread's EndCapture fails with
// cudaErrorStreamCaptureWrongThread and ends the capture without a graph (what CUDA 13 does on an
// H200: the owner's EndCapture then finds no capture, cudaErrorIllegalState). Checked on a GPU on
// 2026-12-04 by tests/cuda/test_cuda_graphs.cpp, which runs on both. Fork/join follows the CUDA
// programming guide's rules for cross-stream dependencies in capture (its error codes; not yet
// run on a GPU): a stream that waits on an event recorded in a capture joins it; EndCapture on a
// stream that joined (not the origin) is cudaErrorStreamCaptureUnmatched; a joined stream whose
// work the origin never waited for again is cudaErrorStreamCaptureUnjoined; a capturing stream
// waiting on an event recorded outside its capture is cudaErrorStreamCaptureIsolation; querying
// or synchronising an event last recorded in a capture is cudaErrorCapturedEvent.
#include <algorithm>
#include <map>
#include <set>
#include <thread>
#include <vector>

#include "kernels/emulated_device/capture.h"
#include "kernels/emulated_device/device.h"

namespace {

struct GraphNode {
  std::string what;
  std::function<void()> run;
};

}  // namespace

struct CUgraph_st {
  std::vector<GraphNode> nodes;
};

struct CUgraphExec_st {
  std::vector<GraphNode> nodes;
};

namespace diffuse::emulated_device {
namespace {

using Tip = std::vector<size_t>;  // the nodes the next work of a stream (or an event's waiters) follows

struct Capture {
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
  std::thread::id thread;
  cudaStream_t origin = nullptr;  // where it began and must end
  bool blocking = false;  // a member stream synchronises with the legacy stream
  bool invalidated = false;
  unsigned long long id = 0;
  std::vector<GraphNode> nodes;
  std::vector<Tip> deps;            // per node: the nodes it follows
  std::map<cudaStream_t, Tip> tips;  // per member stream (the origin and those that joined)
};

// An event whose latest record was made on a capturing stream: the capture and the position it marks.
struct CapturedRecord {
  unsigned long long capture = 0;
  Tip tip;
};

// Guarded by device_lock(); never destroyed (exit-time code may still ask).
struct GraphState {
  std::map<cudaStream_t, Capture> captures;      // open captures by origin stream
  std::map<cudaStream_t, cudaStream_t> member_of;  // every stream in an open capture -> its origin
  std::map<cudaEvent_t, CapturedRecord> captured_events;
  std::set<CUgraph_st*> graphs;
  std::set<CUgraphExec_st*> execs;
  unsigned long long next_id = 1;
};

GraphState& state() {
  static auto* s = new GraphState;
  return *s;
}

// The calling thread's capture interaction mode (cudaThreadExchangeStreamCaptureMode).
thread_local cudaStreamCaptureMode t_mode = cudaStreamCaptureModeGlobal;

// cudaThreadExchangeStreamCaptureMode's rule: may the calling thread make a potentially unsafe
// call while capture `c` is open?
bool prohibits_unsafe_calls(const Capture& c) {
  if (t_mode == cudaStreamCaptureModeRelaxed) return false;
  const bool mine = c.thread == std::this_thread::get_id();
  if (mine) return c.mode != cudaStreamCaptureModeRelaxed;
  return t_mode == cudaStreamCaptureModeGlobal && c.mode == cudaStreamCaptureModeGlobal;
}

// Invalidates every open capture on a blocking stream; true if there was one (the legacy
// stream's implicit barrier would make the capture depend on work outside it).
bool invalidate_blocking_captures() {
  bool any = false;
  for (auto& [stream, c] : state().captures)
    if (c.blocking) c.invalidated = any = true;
  return any;
}

Capture* capture_of(const StreamRef& s) {
  auto member = state().member_of.find(s.handle);
  if (member == state().member_of.end()) return nullptr;
  return &state().captures.at(member->second);
}

Capture* open_capture(unsigned long long id) {
  for (auto& [origin, c] : state().captures)
    if (c.id == id) return &c;
  return nullptr;
}

// Ends capture `origin`: it and every stream that joined it leave capture mode. Events recorded in
// it stay captured records (an event query or sync still refuses them, as on a GPU).
Capture end_capture(cudaStream_t origin) {
  Capture c = std::move(state().captures.at(origin));
  state().captures.erase(origin);
  for (const auto& [stream, tip] : c.tips) state().member_of.erase(stream);
  return c;
}

// Whether every node of c precedes the origin's last work: a fork never joined back fails this.
bool all_joined(const Capture& c) {
  std::vector<char> seen(c.nodes.size(), 0);
  std::vector<size_t> todo = c.tips.at(c.origin);
  size_t reached = 0;
  while (!todo.empty()) {
    const size_t n = todo.back();
    todo.pop_back();
    if (seen[n]) continue;
    seen[n] = 1;
    ++reached;
    todo.insert(todo.end(), c.deps[n].begin(), c.deps[n].end());
  }
  return reached == c.nodes.size();
}

void merge_into(Tip& tip, const Tip& more) {
  for (size_t n : more)
    if (std::find(tip.begin(), tip.end(), n) == tip.end()) tip.push_back(n);
}

}  // namespace

// ---- capture.h ------------------------------------------------------------------------------------

std::optional<cudaError_t> capture_work(const StreamRef& s, const std::string& what, const std::function<void()>& run) {
  if (Capture* c = capture_of(s)) {
    if (c->invalidated) return cudaErrorStreamCaptureInvalidated;
    Tip& tip = c->tips[s.handle];
    c->nodes.push_back({what, run});
    c->deps.push_back(tip);
    tip = {c->nodes.size() - 1};
    return cudaSuccess;
  }
  if (s.legacy && invalidate_blocking_captures()) return cudaErrorStreamCaptureImplicit;
  return std::nullopt;
}

std::optional<cudaError_t> capture_event_record(const StreamRef& s, cudaEvent_t event) {
  Capture* c = capture_of(s);
  if (!c) {
    state().captured_events.erase(event);  // a plain record replaces a captured one
    return std::nullopt;
  }
  if (c->invalidated) return cudaErrorStreamCaptureInvalidated;
  state().captured_events[event] = {c->id, c->tips[s.handle]};
  return cudaSuccess;
}

std::optional<cudaError_t> capture_event_wait(const StreamRef& s, cudaEvent_t event) {
  Capture* waiter = capture_of(s);
  auto rec = state().captured_events.find(event);
  if (rec == state().captured_events.end()) {
    if (!waiter) return std::nullopt;  // a plain wait
    waiter->invalidated = true;        // a dependency on work outside the capture
    return cudaErrorStreamCaptureIsolation;
  }
  Capture* recorded_in = open_capture(rec->second.capture);
  if (!recorded_in) {  // recorded in a capture that has ended: it marks no work that will run
    if (waiter) waiter->invalidated = true;
    return waiter ? cudaErrorStreamCaptureIsolation : cudaErrorCapturedEvent;
  }
  if (waiter && waiter != recorded_in) {  // would merge two captures
    waiter->invalidated = recorded_in->invalidated = true;
    return cudaErrorStreamCaptureIsolation;
  }
  if (s.legacy) {  // the legacy stream cannot be captured
    recorded_in->invalidated = true;
    return cudaErrorStreamCaptureImplicit;
  }
  if (recorded_in->invalidated) return cudaErrorStreamCaptureInvalidated;
  if (!waiter) {  // fork: s joins the capture, its next work after the recorded position
    state().member_of[s.handle] = recorded_in->origin;
    recorded_in->tips[s.handle] = rec->second.tip;
    recorded_in->blocking = recorded_in->blocking || s.blocking;
    return cudaSuccess;
  }
  merge_into(recorded_in->tips[s.handle], rec->second.tip);  // a join (or any wait within the capture)
  return cudaSuccess;
}

cudaError_t check_event_not_captured(cudaEvent_t event) {
  auto rec = state().captured_events.find(event);
  if (rec == state().captured_events.end()) return cudaSuccess;
  if (Capture* c = open_capture(rec->second.capture)) c->invalidated = true;
  return cudaErrorCapturedEvent;
}

void forget_event(cudaEvent_t event) { state().captured_events.erase(event); }

cudaError_t check_stream_sync(const StreamRef& s) {
  if (Capture* c = capture_of(s)) {
    c->invalidated = true;
    return cudaErrorStreamCaptureUnsupported;
  }
  if (s.legacy && invalidate_blocking_captures()) return cudaErrorStreamCaptureImplicit;
  return cudaSuccess;
}

cudaError_t check_device_sync() {
  if (state().captures.empty()) return cudaSuccess;
  for (auto& [stream, c] : state().captures) c.invalidated = true;
  return cudaErrorStreamCaptureUnsupported;
}

cudaError_t check_unsafe_call() {
  bool refused = false;
  for (auto& [stream, c] : state().captures)
    if (prohibits_unsafe_calls(c)) c.invalidated = refused = true;
  return refused ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}

bool is_capturing(const StreamRef& s) { return capture_of(s) != nullptr; }

void forget_capture(const StreamRef& s) {
  Capture* c = capture_of(s);
  if (!c) return;
  if (c->origin == s.handle) {
    end_capture(s.handle);
  } else {  // a stream that joined: its work can never be joined back
    c->invalidated = true;
    c->tips.erase(s.handle);
    state().member_of.erase(s.handle);
  }
}

}  // namespace diffuse::emulated_device

// ---- the CUDA runtime's capture and graph functions ----------------------------------------------

using namespace diffuse::emulated_device;

extern "C" {

cudaError_t cudaThreadExchangeStreamCaptureMode(enum cudaStreamCaptureMode* mode) {
  if (!mode) return record(cudaErrorInvalidValue);
  if (*mode != cudaStreamCaptureModeGlobal && *mode != cudaStreamCaptureModeThreadLocal &&
      *mode != cudaStreamCaptureModeRelaxed)
    return record(cudaErrorInvalidValue);
  std::swap(*mode, t_mode);
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode) {
  ApiCall call;
  if (call.status() != cudaSuccess) return record(call.status());
  if (sticky_error() != cudaSuccess) return record(sticky_error());
  std::optional<StreamRef> s = find_stream(stream);
  if (!s) return record(cudaErrorInvalidResourceHandle);
  if (mode != cudaStreamCaptureModeGlobal && mode != cudaStreamCaptureModeThreadLocal &&
      mode != cudaStreamCaptureModeRelaxed)
    return record(cudaErrorInvalidValue);
  if (s->legacy) return record(cudaErrorStreamCaptureUnsupported);
  if (is_capturing(*s)) return record(cudaErrorIllegalState);
  Capture c;
  c.mode = mode;
  c.thread = std::this_thread::get_id();
  c.origin = s->handle;
  c.blocking = s->blocking;
  c.id = state().next_id++;
  c.tips[s->handle] = {};
  state().captures.emplace(s->handle, std::move(c));
  state().member_of[s->handle] = s->handle;
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* pGraph) {
  ApiCall call;
  if (call.status() != cudaSuccess) return record(call.status());
  if (!pGraph) return record(cudaErrorInvalidValue);
  std::optional<StreamRef> s = find_stream(stream);
  if (!s) return record(cudaErrorInvalidResourceHandle);
  Capture* open = capture_of(*s);
  if (!open) return record(cudaErrorIllegalState);
  if (open->origin != s->handle) {  // a stream that joined the capture, not the one it began on
    open->invalidated = true;
    return record(cudaErrorStreamCaptureUnmatched);
  }
  if (open->mode != cudaStreamCaptureModeRelaxed && open->thread != std::this_thread::get_id()) {
    end_capture(s->handle);
    return record(cudaErrorStreamCaptureWrongThread);
  }
  Capture c = end_capture(s->handle);
  *pGraph = nullptr;
  if (c.invalidated) return record(cudaErrorStreamCaptureInvalidated);
  if (!all_joined(c)) return record(cudaErrorStreamCaptureUnjoined);
  auto* g = new CUgraph_st{std::move(c.nodes)};
  state().graphs.insert(g);
  *pGraph = g;
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, enum cudaStreamCaptureStatus* pCaptureStatus) {
  ApiCall call;
  if (call.status() != cudaSuccess) return record(call.status());
  if (!pCaptureStatus) return record(cudaErrorInvalidValue);
  std::optional<StreamRef> s = find_stream(stream);
  if (!s) return record(cudaErrorInvalidResourceHandle);
  if (s->legacy) {
    // The legacy stream cannot be asked while a blocking stream captures (the documented
    // cudaErrorStreamCaptureImplicit); a query invalidates nothing.
    for (const auto& [other, c] : state().captures)
      if (c.blocking) return record(cudaErrorStreamCaptureImplicit);
    *pCaptureStatus = cudaStreamCaptureStatusNone;
    return cudaSuccess;
  }
  const Capture* c = capture_of(*s);
  *pCaptureStatus = !c               ? cudaStreamCaptureStatusNone
                    : c->invalidated ? cudaStreamCaptureStatusInvalidated
                                     : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiateWithFlags(cudaGraphExec_t* pGraphExec, cudaGraph_t graph, unsigned long long flags) {
  ApiCall call;
  if (call.status() != cudaSuccess) return record(call.status());
  if (sticky_error() != cudaSuccess) return record(sticky_error());
  if (!pGraphExec || !graph || !state().graphs.count(graph)) return record(cudaErrorInvalidValue);
  // Auto-free-on-launch concerns graph memory nodes, which capture here never makes; device
  // launch and upload are not emulated.
  if (flags & ~static_cast<unsigned long long>(cudaGraphInstantiateFlagAutoFreeOnLaunch))
    return record(cudaErrorInvalidValue);
  auto* exec = new CUgraphExec_st{graph->nodes};
  state().execs.insert(exec);
  *pGraphExec = exec;
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* pGraphExec, cudaGraph_t graph, unsigned long long flags) {
  return cudaGraphInstantiateWithFlags(pGraphExec, graph, flags);
}

// Queues the graph's work items on `stream` (recorded into its capture if it captures, as a
// child graph would be).
cudaError_t cudaGraphLaunch(cudaGraphExec_t graphExec, cudaStream_t stream) {
  ApiCall call;
  if (call.status() != cudaSuccess) return record(call.status());
  if (sticky_error() != cudaSuccess) return record(sticky_error());
  if (!graphExec || !state().execs.count(graphExec)) return record(cudaErrorInvalidValue);
  if (!find_stream(stream)) return record(cudaErrorInvalidResourceHandle);
  for (const GraphNode& node : graphExec->nodes)
    if (cudaError_t s = enqueue(stream, node.what + " (graph replay)", node.run); s != cudaSuccess) return record(s);
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t graphExec) {
  ApiCall call;
  if (call.status() != cudaSuccess) return record(call.status());
  if (!graphExec || state().execs.erase(graphExec) == 0) return record(cudaErrorInvalidValue);
  delete graphExec;  // queued replays hold their own copies of the work items
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  ApiCall call;
  if (call.status() != cudaSuccess) return record(call.status());
  if (!graph || state().graphs.erase(graph) == 0) return record(cudaErrorInvalidValue);
  delete graph;
  return cudaSuccess;
}

}  // extern "C"
