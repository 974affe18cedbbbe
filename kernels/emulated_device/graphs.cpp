// CUDA graphs on the emulated device, by stream capture only (capture.h states the model): the
// capture registry behind capture.h, and cudaStreamBeginCapture / EndCapture / IsCapturing,
// cudaThreadExchangeStreamCaptureMode, cudaGraphInstantiate(WithFlags), cudaGraphLaunch and the
// destroy calls. A graph is the list of work items recorded in order on the one capturing stream;
// instantiating copies it, and a launch queues the copies on the launch stream like any other
// work, so a replay runs exactly the closures (kernel arguments, device addresses, copied host
// scalars) the capture recorded — as a real graph replays its nodes' frozen parameters.
//
// The refusals follow the CUDA runtime's documentation of stream capture: capture cannot begin on
// the legacy stream (cudaErrorStreamCaptureUnsupported) nor on a capturing stream
// (cudaErrorIllegalState); a refused call invalidates the capture, whose EndCapture then returns
// cudaErrorStreamCaptureInvalidated and no graph; a capture begun in global or thread-local mode
// must end on the thread that began it: another thread's EndCapture fails with
// cudaErrorStreamCaptureWrongThread and ends the capture without a graph (what CUDA 13 does on an
// H200: the owner's EndCapture then finds no capture, cudaErrorIllegalState). Checked on a GPU on
// 2026-12-04 by tests/cuda/test_cuda_graphs.cpp, which runs on both.
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

struct Capture {
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
  std::thread::id thread;
  bool blocking = false;  // the stream synchronises with the legacy stream
  bool invalidated = false;
  unsigned long long id = 0;
  std::vector<GraphNode> nodes;
};

// Guarded by device_lock(); never destroyed (exit-time code may still ask).
struct GraphState {
  std::map<cudaStream_t, Capture> captures;  // open captures by canonical stream
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
  auto it = state().captures.find(s.handle);
  return it == state().captures.end() ? nullptr : &it->second;
}

}  // namespace

// ---- capture.h ------------------------------------------------------------------------------------

std::optional<cudaError_t> capture_work(const StreamRef& s, const std::string& what, const std::function<void()>& run) {
  if (Capture* c = capture_of(s)) {
    if (c->invalidated) return cudaErrorStreamCaptureInvalidated;
    c->nodes.push_back({what, run});
    return cudaSuccess;
  }
  if (s.legacy && invalidate_blocking_captures()) return cudaErrorStreamCaptureImplicit;
  return std::nullopt;
}

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

cudaError_t check_not_capturing(const StreamRef& s) {
  Capture* c = capture_of(s);
  if (!c) return cudaSuccess;
  c->invalidated = true;
  return cudaErrorStreamCaptureUnsupported;
}

bool is_capturing(const StreamRef& s) { return capture_of(s) != nullptr; }

void forget_capture(const StreamRef& s) { state().captures.erase(s.handle); }

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
  c.blocking = s->blocking;
  c.id = state().next_id++;
  state().captures.emplace(s->handle, std::move(c));
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* pGraph) {
  ApiCall call;
  if (call.status() != cudaSuccess) return record(call.status());
  if (!pGraph) return record(cudaErrorInvalidValue);
  std::optional<StreamRef> s = find_stream(stream);
  if (!s) return record(cudaErrorInvalidResourceHandle);
  auto it = state().captures.find(s->handle);
  if (it == state().captures.end()) return record(cudaErrorIllegalState);
  if (it->second.mode != cudaStreamCaptureModeRelaxed && it->second.thread != std::this_thread::get_id()) {
    state().captures.erase(it);
    return record(cudaErrorStreamCaptureWrongThread);
  }
  Capture c = std::move(it->second);
  state().captures.erase(it);
  *pGraph = nullptr;
  if (c.invalidated) return record(cudaErrorStreamCaptureInvalidated);
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
  auto it = state().captures.find(s->handle);
  *pCaptureStatus = it == state().captures.end() ? cudaStreamCaptureStatusNone
                    : it->second.invalidated     ? cudaStreamCaptureStatusInvalidated
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
