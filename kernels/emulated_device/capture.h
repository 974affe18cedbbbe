// Stream capture on the emulated device (graphs.cpp), as the other runtime files of this folder
// see it: where work enqueued on a capturing stream goes, and which calls a capture forbids. Kept
// out of device.h because only streams.cpp, cudart_memory.cpp and nccl.cpp consult it; the cuBLAS and cuDNN
// emulations are captured without knowing, since all their work goes through enqueue().
//
// The model (graphs.cpp has the details and the error codes, which are the real runtime's):
//  - Work enqueued on a capturing stream (kernels, async copies and memsets, library calls) is
//    recorded into the capture, not queued; cudaGraphLaunch later queues the recorded work items
//    on the launch stream, in order. A host-to-device copy recorded in a capture reads its host
//    source when the graph runs, not at the call (a graph's memcpy node has no staging buffer).
//  - A call the real runtime refuses during capture fails with the real code and invalidates the
//    capture: stream synchronisation or query of the capturing stream, cudaDeviceSynchronize,
//    "potentially unsafe" calls (cudaMalloc, cudaFree) under the capture modes' rules, and use of
//    the legacy stream while a blocking stream captures. Synchronous cudaMemcpy/cudaMemset on the
//    legacy stream while only non-blocking streams capture run at once, outside any graph, as
//    they did on an H200 with CUDA 13 (checked by tests/cuda/test_cuda_graphs.cpp on both).
//  - Fork/join: an event recorded on a capturing stream marks its position in the capture; a
//    stream that waits on such an event joins the capture (its work is recorded into the same
//    graph, after that position), and the origin joins it back by waiting on an event recorded
//    there. EndCapture refuses a fork never joined back (cudaErrorStreamCaptureUnjoined) and an
//    end on a joined stream rather than the origin (cudaErrorStreamCaptureUnmatched); a capturing
//    stream may not wait on an event recorded outside its capture, nor two captures merge
//    (cudaErrorStreamCaptureIsolation); an event last recorded in a capture cannot be queried or
//    synchronised (cudaErrorCapturedEvent). Stricter than a GPU in one respect: a wait outside
//    any capture on an event last recorded in a capture that has ended is refused too
//    (cudaErrorCapturedEvent) rather than guessed at.
// Everything here is called with device_lock() held.
#pragma once
#include <cuda_runtime_api.h>

#include <functional>
#include <optional>
#include <string>

namespace diffuse::emulated_device {

// ---- what streams.cpp tells graphs.cpp about a stream -------------------------------------------

struct StreamRef {
  cudaStream_t handle = nullptr;  // canonical: the legacy stream's own handle for all its aliases
  bool legacy = false;
  bool blocking = false;  // created without cudaStreamNonBlocking (synchronises with the legacy stream)
};
// nullopt for a stream handle that is not live.
std::optional<StreamRef> find_stream(cudaStream_t stream);

// ---- what graphs.cpp decides --------------------------------------------------------------------

// Where work enqueued on `s` goes: nullopt when it is queued as usual; otherwise the call's
// status: cudaSuccess (recorded into s's capture), cudaErrorStreamCaptureInvalidated (s's capture
// was already invalidated) or cudaErrorStreamCaptureImplicit (s is the legacy stream while a
// blocking stream captures; that capture is invalidated).
std::optional<cudaError_t> capture_work(const StreamRef& s, const std::string& what, const std::function<void()>& run);
// A synchronisation with, or query of, `s`: cudaErrorStreamCaptureUnsupported when s captures,
// cudaErrorStreamCaptureImplicit for the legacy stream while a blocking stream captures (the
// capture concerned is invalidated either way); cudaSuccess otherwise.
cudaError_t check_stream_sync(const StreamRef& s);
// cudaDeviceSynchronize: refused with cudaErrorStreamCaptureUnsupported while any capture is
// open, in any mode (it necessarily conflicts with capture); every open capture is invalidated.
cudaError_t check_device_sync();
// A potentially unsafe call (cudaMalloc, cudaFree): refused
// with cudaErrorStreamCaptureUnsupported when the calling thread's capture mode and the open
// captures prohibit it (cudaThreadExchangeStreamCaptureMode's rules); those captures are
// invalidated.
cudaError_t check_unsafe_call();
// cudaEventRecord(event, s): nullopt when s does not capture (a plain record, which replaces a
// captured one); otherwise the status: cudaSuccess (the event now marks s's position in its
// capture) or cudaErrorStreamCaptureInvalidated.
std::optional<cudaError_t> capture_event_record(const StreamRef& s, cudaEvent_t event);
// cudaStreamWaitEvent(s, event): nullopt for a plain wait (neither s captures nor the event's
// latest record was captured); otherwise the status of the fork, join or refusal (capture.h's
// model above), the captures concerned invalidated on a refusal.
std::optional<cudaError_t> capture_event_wait(const StreamRef& s, cudaEvent_t event);
// cudaEventQuery / cudaEventSynchronize / cudaEventElapsedTime: cudaErrorCapturedEvent (and the
// open capture invalidated) when the event's latest record was made in a capture.
cudaError_t check_event_not_captured(cudaEvent_t event);
// cudaEventDestroy.
void forget_event(cudaEvent_t event);
// True while `s` is in an open capture (active or invalidated), as its origin or having joined.
bool is_capturing(const StreamRef& s);
// cudaStreamDestroy: an open capture begun on the stream ends with it (its recorded work is
// dropped); a stream that had joined one leaves it, invalidated.
void forget_capture(const StreamRef& s);

}  // namespace diffuse::emulated_device
