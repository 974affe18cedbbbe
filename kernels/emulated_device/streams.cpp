// Streams, events and the queue of device work: the part of the emulated device that makes work
// asynchronous. Work is queued per stream and runs, in order, on the host thread that
// synchronises with it (never at enqueue time, never from a query), so host code that reads a
// result before synchronising sees stale data, as it could on a GPU. Cross-stream order comes
// only from events (a wait item flushes the other stream up to the record first) and from the
// legacy default stream's implicit barrier with blocking streams. A device clock advances by the
// measured wall time of each executed work item; event records stamp it. Work enqueued on a
// capturing stream is recorded into the capture instead (capture.h, graphs.cpp), and the
// synchronising calls here ask capture.h first whether a capture forbids them.
#include <chrono>
#include <cstdio>
#include <deque>
#include <exception>
#include <optional>
#include <set>
#include <vector>

#include "kernels/emulated_device/capture.h"
#include "kernels/emulated_device/device.h"

using diffuse::emulated_device::ApiCall;
using diffuse::emulated_device::record;

// One queued item: device work, a wait for another stream's position, or an event record.
struct QueuedItem {
  enum class Kind { work, wait, record } kind = Kind::work;
  std::string what;                 // work: names it in reports
  std::function<void()> run;        // work
  CUstream_st* other = nullptr;     // wait: the stream waited for...
  uint64_t other_serial = 0;        // ...(identified by serial: its address may be reused)
  uint64_t position = 0;            // wait: run until other->done >= position
  CUevent_st* event = nullptr;      // record
  uint64_t generation = 0;          // record: the event's record this marker stamps
};

struct CUstream_st {
  unsigned flags = cudaStreamDefault;
  uint64_t serial = 0;
  std::deque<QueuedItem> queue;
  uint64_t enqueued = 0;  // items ever queued
  uint64_t done = 0;      // items ever executed (or dropped after a device failure)
  bool pending() const { return done < enqueued; }
};

struct CUevent_st {
  unsigned flags = cudaEventDefault;
  uint64_t generation = 0;  // records so far; 0: never recorded
  uint64_t completed_generation = 0;
  CUstream_st* stream = nullptr;  // of the latest record
  uint64_t stream_serial = 0;
  uint64_t position = 0;          // the latest record completes when stream->done >= position
  double time_ms = 0;             // device clock at the latest completed record
  bool destroyed = false;         // cudaEventDestroy came before its pending record ran
  bool recorded() const { return generation != 0; }
  bool complete() const { return completed_generation == generation; }
};

namespace diffuse::emulated_device {
namespace {

// Guarded by device_lock(). Heap-allocated and never destroyed, so that code freeing device
// memory at exit (after static destructors may have run) still finds its streams.
struct StreamState {
  CUstream_st legacy;                  // the legacy default stream (nullptr, cudaStreamLegacy)
  std::vector<CUstream_st*> streams;   // created streams, in creation order
  std::set<CUevent_st*> events;        // live events
  uint64_t next_serial = 1;
  cudaError_t sticky = cudaSuccess;
  double clock_ms = 0;                 // advances only by executed work
};

StreamState& state() {
  static auto* s = new StreamState;
  return *s;
}

bool is_live(const CUstream_st* s) {
  if (s == &state().legacy) return true;
  for (const CUstream_st* mine : state().streams)
    if (mine == s) return true;
  return false;
}

// The legacy default stream's implicit barrier: its work waits for everything queued before on
// blocking streams, and a blocking stream's work waits for everything queued before on it.
void add_implicit_waits(CUstream_st* s) {
  auto wait_for = [s](CUstream_st* other) {
    QueuedItem w;
    w.kind = QueuedItem::Kind::wait;
    w.other = other;
    w.other_serial = other->serial;
    w.position = other->enqueued;
    s->queue.push_back(std::move(w));
    ++s->enqueued;
  };
  if (s == &state().legacy) {
    for (CUstream_st* b : state().streams)
      if (!(b->flags & cudaStreamNonBlocking) && b->pending()) wait_for(b);
  } else if (!(s->flags & cudaStreamNonBlocking) && state().legacy.pending()) {
    wait_for(&state().legacy);
  }
}

void push(CUstream_st* s, QueuedItem item) {
  add_implicit_waits(s);
  s->queue.push_back(std::move(item));
  ++s->enqueued;
}

void stamp(const QueuedItem& marker) {
  CUevent_st* e = marker.event;
  if (e->generation == marker.generation) {
    e->time_ms = state().clock_ms;
    e->completed_generation = marker.generation;
  }
  if (e->destroyed && e->complete()) delete e;
}

void run_work(QueuedItem& item, std::optional<WorkScope>& scope) {
  if (!scope) scope.emplace();
  announce_work(item.what);
  auto start = std::chrono::steady_clock::now();
  try {
    item.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", item.what.c_str(), e.what());
    fail_device(cudaErrorLaunchFailure);
  } catch (...) {
    std::fprintf(stderr, "%s: unknown exception\n", item.what.c_str());
    fail_device(cudaErrorLaunchFailure);
  }
  state().clock_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  if (state().sticky == cudaSuccess) {
    cudaError_t slack = check_slack_after(item.what);
    if (slack != cudaSuccess) fail_device(slack);
  }
}

// Executes s's queue until s->done >= until. A wait item first flushes the stream it waits for;
// waits only ever name positions queued earlier, so this terminates.
void flush(CUstream_st* s, uint64_t until, std::optional<WorkScope>& scope) {
  while (s->done < until && state().sticky == cudaSuccess) {
    QueuedItem item = std::move(s->queue.front());
    s->queue.pop_front();
    switch (item.kind) {
      case QueuedItem::Kind::wait:
        if (is_live(item.other) && item.other->serial == item.other_serial) flush(item.other, item.position, scope);
        break;
      case QueuedItem::Kind::record:
        stamp(item);
        break;
      case QueuedItem::Kind::work:
        run_work(item, scope);
        break;
    }
    ++s->done;
  }
}

cudaError_t flush_all_of(CUstream_st* s) {
  std::optional<WorkScope> scope;
  flush(s, s->enqueued, scope);
  return state().sticky;
}

CUstream_st* resolve(cudaStream_t stream) {
  if (stream == nullptr || stream == cudaStreamLegacy || stream == cudaStreamPerThread) return &state().legacy;
  return is_live(stream) ? stream : nullptr;
}

CUevent_st* resolve(cudaEvent_t event) { return state().events.count(event) ? event : nullptr; }

StreamRef ref_of(CUstream_st* s) {
  return {s, s == &state().legacy, !(s->flags & cudaStreamNonBlocking)};
}


}  // namespace

std::optional<StreamRef> find_stream(cudaStream_t stream) {
  CUstream_st* s = resolve(stream);
  if (!s) return std::nullopt;
  return ref_of(s);
}

// ---- the interface of device.h --------------------------------------------------------------------

cudaError_t sticky_error() { return state().sticky; }

void fail_device(cudaError_t status) {
  if (state().sticky == cudaSuccess) state().sticky = status;
  for (CUstream_st* s : state().streams) {
    s->queue.clear();
    s->done = s->enqueued;
  }
  state().legacy.queue.clear();
  state().legacy.done = state().legacy.enqueued;
}

bool valid_stream(cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(device_lock());
  return resolve(stream) != nullptr;
}

cudaError_t enqueue(cudaStream_t stream, std::string what, std::function<void()> run) {
  ApiCall call;
  if (call.status() != cudaSuccess) return call.status();
  if (state().sticky != cudaSuccess) return state().sticky;
  CUstream_st* s = resolve(stream);
  if (!s) return cudaErrorInvalidResourceHandle;
  if (std::optional<cudaError_t> captured = capture_work(ref_of(s), what, run)) return *captured;
  QueuedItem item;
  item.what = std::move(what);
  item.run = std::move(run);
  push(s, std::move(item));
  return cudaSuccess;
}

namespace {
HostTraffic& traffic() {  // guarded by device_lock()
  static HostTraffic t;
  return t;
}
}  // namespace

HostTraffic host_traffic() {
  std::lock_guard<std::recursive_mutex> lock(device_lock());
  return traffic();
}

void count_host_copy() { ++traffic().host_copies; }

cudaError_t synchronize_stream(cudaStream_t stream) {
  ApiCall call;
  ++traffic().waits;
  if (call.status() != cudaSuccess) return call.status();
  if (state().sticky != cudaSuccess) return state().sticky;
  CUstream_st* s = resolve(stream);
  if (!s) return cudaErrorInvalidResourceHandle;
  if (cudaError_t refused = check_stream_sync(ref_of(s)); refused != cudaSuccess) return refused;
  return flush_all_of(s);
}

cudaError_t synchronize_all() {
  ApiCall call;
  ++traffic().waits;
  if (call.status() != cudaSuccess) return call.status();
  std::optional<WorkScope> scope;
  flush(&state().legacy, state().legacy.enqueued, scope);
  for (size_t i = 0; i < state().streams.size(); ++i) flush(state().streams[i], state().streams[i]->enqueued, scope);
  return state().sticky;
}

}  // namespace diffuse::emulated_device

// ---- the CUDA runtime's stream and event functions ------------------------------------------------

using namespace diffuse::emulated_device;

extern "C" {

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* pStream, unsigned int flags) {
  ApiCall call;
  if (call.status() != cudaSuccess) return record(call.status());
  if (state().sticky != cudaSuccess) return record(state().sticky);
  if (!pStream || (flags & ~unsigned{cudaStreamNonBlocking})) return record(cudaErrorInvalidValue);
  auto* s = new CUstream_st;
  s->flags = flags;
  s->serial = state().next_serial++;
  state().streams.push_back(s);
  *pStream = s;
  return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t* pStream) { return cudaStreamCreateWithFlags(pStream, cudaStreamDefault); }

// A real cudaStreamDestroy returns at once and lets pending work finish; here it runs first.
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  ApiCall call;
  if (call.status() != cudaSuccess) return record(call.status());
  CUstream_st* s = resolve(stream);
  if (!s || s == &state().legacy) return record(cudaErrorInvalidResourceHandle);
  forget_capture(ref_of(s));
  cudaError_t status = flush_all_of(s);
  std::erase(state().streams, s);
  delete s;
  return record(status);
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  ApiCall call;
  if (call.status() != cudaSuccess) return record(call.status());
  if (state().sticky != cudaSuccess) return record(state().sticky);
  CUstream_st* s = resolve(stream);
  if (!s) return record(cudaErrorInvalidResourceHandle);
  if (cudaError_t refused = check_stream_sync(ref_of(s)); refused != cudaSuccess) return record(refused);
  ++traffic().waits;
  return record(flush_all_of(s));
}

// Host work in the stream's order (a host node when captured: each replay calls it again). The
// real runtime forbids CUDA calls inside `fn`; here it runs at the synchronisation that reaches it.
cudaError_t cudaLaunchHostFunc(cudaStream_t stream, cudaHostFn_t fn, void* userData) {
  ApiCall call;
  if (call.status() != cudaSuccess) return record(call.status());
  if (!fn) return record(cudaErrorInvalidValue);
  return record(enqueue(stream, "host function", [fn, userData] { fn(userData); }));
}

// Never runs work: a host thread that polls must synchronise before it sees progress.
cudaError_t cudaStreamQuery(cudaStream_t stream) {
  ApiCall call;
  if (call.status() != cudaSuccess) return record(call.status());
  if (state().sticky != cudaSuccess) return record(state().sticky);
  CUstream_st* s = resolve(stream);
  if (!s) return record(cudaErrorInvalidResourceHandle);
  if (cudaError_t refused = check_stream_sync(ref_of(s)); refused != cudaSuccess) return record(refused);
  return s->pending() ? cudaErrorNotReady : cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags) {
  ApiCall call;
  if (call.status() != cudaSuccess) return record(call.status());
  if (state().sticky != cudaSuccess) return record(state().sticky);
  CUstream_st* s = resolve(stream);
  CUevent_st* e = resolve(event);
  if (!s || !e) return record(cudaErrorInvalidResourceHandle);
  if (flags != 0) return record(cudaErrorInvalidValue);
  // A fork, join or refusal when a capture is concerned (capture.h); on the legacy stream an
  // implicit dependency on a blocking stream's capture.
  if (std::optional<cudaError_t> captured = capture_event_wait(ref_of(s), e)) return record(*captured);
  if (s == &state().legacy)
    if (cudaError_t refused = check_stream_sync(ref_of(s)); refused != cudaSuccess) return record(refused);
  if (!e->recorded() || e->complete() || e->stream == s) return cudaSuccess;  // nothing to wait for
  QueuedItem w;
  w.kind = QueuedItem::Kind::wait;
  w.other = e->stream;
  w.other_serial = e->stream_serial;
  w.position = e->position;
  push(s, std::move(w));
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) {
  ApiCall call;
  if (call.status() != cudaSuccess) return record(call.status());
  if (state().sticky != cudaSuccess) return record(state().sticky);
  if (cudaError_t refused = check_device_sync(); refused != cudaSuccess) return record(refused);
  return record(synchronize_all());
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags) {
  ApiCall call;
  if (call.status() != cudaSuccess) return record(call.status());
  if (state().sticky != cudaSuccess) return record(state().sticky);
  const unsigned known = cudaEventBlockingSync | cudaEventDisableTiming | cudaEventInterprocess;
  if (!event || (flags & ~known)) return record(cudaErrorInvalidValue);
  if ((flags & cudaEventInterprocess) && !(flags & cudaEventDisableTiming)) return record(cudaErrorInvalidValue);
  auto* e = new CUevent_st;
  e->flags = flags;
  state().events.insert(e);
  *event = e;
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* event) { return cudaEventCreateWithFlags(event, cudaEventDefault); }

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  ApiCall call;
  if (call.status() != cudaSuccess) return record(call.status());
  CUevent_st* e = resolve(event);
  if (!e) return record(cudaErrorInvalidResourceHandle);
  forget_event(e);
  state().events.erase(e);
  if (e->complete() || state().sticky != cudaSuccess)
    delete e;
  else
    e->destroyed = true;  // its pending record marker deletes it
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  ApiCall call;
  if (call.status() != cudaSuccess) return record(call.status());
  if (state().sticky != cudaSuccess) return record(state().sticky);
  CUstream_st* s = resolve(stream);
  CUevent_st* e = resolve(event);
  if (!s || !e) return record(cudaErrorInvalidResourceHandle);
  // On a capturing stream the event marks a position in the capture, not queued work (capture.h).
  if (std::optional<cudaError_t> captured = capture_event_record(ref_of(s), e)) return record(*captured);
  if (s == &state().legacy)
    if (cudaError_t refused = check_stream_sync(ref_of(s)); refused != cudaSuccess) return record(refused);
  QueuedItem marker;
  marker.kind = QueuedItem::Kind::record;
  marker.event = e;
  marker.generation = ++e->generation;
  push(s, std::move(marker));
  e->stream = s;
  e->stream_serial = s->serial;
  e->position = s->enqueued;
  return cudaSuccess;
}

cudaError_t cudaEventQuery(cudaEvent_t event) {
  ApiCall call;
  if (call.status() != cudaSuccess) return record(call.status());
  if (state().sticky != cudaSuccess) return record(state().sticky);
  CUevent_st* e = resolve(event);
  if (!e) return record(cudaErrorInvalidResourceHandle);
  if (cudaError_t refused = check_event_not_captured(e); refused != cudaSuccess) return record(refused);
  return e->complete() ? cudaSuccess : cudaErrorNotReady;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  ApiCall call;
  if (call.status() != cudaSuccess) return record(call.status());
  if (state().sticky != cudaSuccess) return record(state().sticky);
  CUevent_st* e = resolve(event);
  if (!e) return record(cudaErrorInvalidResourceHandle);
  if (cudaError_t refused = check_event_not_captured(e); refused != cudaSuccess) return record(refused);
  ++traffic().waits;
  if (e->complete()) return cudaSuccess;
  std::optional<WorkScope> scope;
  flush(e->stream, e->position, scope);
  return record(state().sticky);
}

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  ApiCall call;
  if (call.status() != cudaSuccess) return record(call.status());
  if (state().sticky != cudaSuccess) return record(state().sticky);
  if (!ms) return record(cudaErrorInvalidValue);
  CUevent_st* a = resolve(start);
  CUevent_st* b = resolve(end);
  if (!a || !b) return record(cudaErrorInvalidResourceHandle);
  for (CUevent_st* e : {a, b})
    if (cudaError_t refused = check_event_not_captured(e); refused != cudaSuccess) return record(refused);
  if ((a->flags | b->flags) & cudaEventDisableTiming) return record(cudaErrorInvalidResourceHandle);
  if (!a->recorded() || !b->recorded()) return record(cudaErrorInvalidResourceHandle);
  if (!a->complete() || !b->complete()) return cudaErrorNotReady;
  *ms = static_cast<float>(b->time_ms - a->time_ms);
  return cudaSuccess;
}

}  // extern "C"
