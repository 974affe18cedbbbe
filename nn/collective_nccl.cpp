// See collective.h. The CUDA side of the communicator: the GPU of each rank (picked by local rank
// before anything touches the device) and NCCL for CUDA tensors. The NCCL communicator is created
// at the first CUDA collective, bootstrapped through MPI: rank 0's ncclGetUniqueId is broadcast
// with MPI, then every rank calls ncclCommInitRankConfig, nonblocking, and polls it within the
// deadline (a rank that dies or hangs during set-up cannot hold the others). In the
// -DDIFFUSE_CUDA=EMULATED build the same calls are served by the emulated device
// (kernels/emulated_device/nccl.cpp). Builds without NCCL (no MPI, or no CUDA backend) only ever
// run these with one rank, where collective.cpp returns before reaching them.
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "diffuse/error.h"
#include "nn/collective.h"

#if DIFFUSE_WITH_NCCL
#include <mpi.h>
#include <nccl.h>

#include "kernels/cuda_status.h"
#include "nn/device_context.h"
#endif

namespace diffuse::collective {

#if DIFFUSE_WITH_NCCL
namespace {

// One status check for every NCCL call: the call and NCCL's description (and its last message).
void nccl_check(ncclResult_t status, const char* call, int rank) {
  if (status == ncclSuccess) return;
  const char* last = ncclGetLastError(nullptr);
  throw Error("rank " + std::to_string(rank) + ": NCCL error in " + call + ": " + ncclGetErrorString(status) +
              (last && *last ? std::string(" (") + last + ")" : std::string()));
}
#define DIFFUSE_NCCL_CHECK(call) nccl_check((call), #call, rank_)

ncclComm_t as_comm(void* p) { return static_cast<ncclComm_t>(p); }

}  // namespace

// Polls a nonblocking communicator whose last call answered ncclInProgress (its set-up, a group
// end) until it is no longer in progress, within the deadline, answering the other ranks' census
// meanwhile; on expiry the communicator is aborted and the missing ranks are named.
void Communicator::nccl_settle(int status, const char* call, const std::string& what) {
  if (status != ncclInProgress) return nccl_check(static_cast<ncclResult_t>(status), call, rank_);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s_);
  for (int polls = 0;; ++polls) {
    ncclResult_t state = ncclSuccess;
    DIFFUSE_NCCL_CHECK(ncclCommGetAsyncError(as_comm(nccl_comm_), &state));
    if (state != ncclInProgress) return nccl_check(state, call, rank_);
    if (std::chrono::steady_clock::now() > deadline) {
      ncclCommAbort(as_comm(nccl_comm_));  // unusable after a timeout either way
      nccl_comm_ = nullptr;
      fail_missing_ranks(what);
    }
    answer_census();
    if (polls > 2000) std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
}

// The communicator is nonblocking (config.blocking = 0), so that no step of its set-up, nor any
// later group end, can wait past the deadline: each call that answers ncclInProgress is settled.
void Communicator::ensure_nccl() {
  if (nccl_comm_) return;
  ncclUniqueId id;
  if (rank_ == 0) DIFFUSE_NCCL_CHECK(ncclGetUniqueId(&id));
  MPI_Request req;
  if (MPI_Ibcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD, &req) != MPI_SUCCESS)
    throw Error("rank " + std::to_string(rank_) + ": MPI_Ibcast of the NCCL unique id failed");
  wait(&req, "the broadcast of the NCCL unique id");
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  const ncclResult_t init = ncclCommInitRankConfig(&comm, size_, id, rank_, &config);
  nccl_comm_ = comm;
  try {
    nccl_settle(init, "ncclCommInitRankConfig", "the set-up of the NCCL communicator");
  } catch (...) {
    if (nccl_comm_) ncclCommAbort(as_comm(nccl_comm_));  // a failed set-up (or a comm never made)
    nccl_comm_ = nullptr;
    throw;
  }
}

void Communicator::destroy_nccl() {
  // At exit: the stream and events go with the device; the communicator waits for its work.
  for (void* e : bucket_events_) cudaEventDestroy(static_cast<cudaEvent_t>(e));
  bucket_events_.clear();
  if (reduced_event_) cudaEventDestroy(static_cast<cudaEvent_t>(reduced_event_));
  if (comm_stream_) cudaStreamDestroy(static_cast<cudaStream_t>(comm_stream_));
  reduced_event_ = comm_stream_ = nullptr;
  if (!nccl_comm_) return;
  ncclCommDestroy(as_comm(nccl_comm_));  // at exit: a failure has nobody left to tell
  nccl_comm_ = nullptr;
}

void Communicator::select_gpu() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    cudaGetLastError();  // no GPU here: a CPU run under mpirun; --device cuda will say so itself
    return;
  }
  // One GPU per rank, by the rank's place on its machine, before any tensor reaches the device.
  DIFFUSE_CUDA_CHECK(cudaSetDevice(local_rank_ % devices));
}

// Waits for the work `event` marks, or when it is null for the work queued on `stream` (NCCL's work
// among it), within the deadline; on expiry the communicator is aborted and the missing ranks are
// named (fail_missing_ranks).
//  - A real GPU is polled (cudaEventQuery or cudaStreamQuery, ncclCommGetAsyncError), answering
//    the other ranks' census queries meanwhile.
//  - The emulated device runs queued work only when the host synchronises
//    (kernels/emulated_device/device.h), so the host synchronises (with the event or the stream)
//    while a watchdog thread waits for the deadline and, if it passes first, calls ncclCommAbort:
//    the emulated collective that waits on MPI sees it, fails its work, and the synchronisation
//    returns. The watchdog makes no MPI call (MPI is initialised MPI_THREAD_FUNNELED).
void Communicator::wait_for_work(void* stream_handle, void* event_handle, const std::string& what) {
  const auto stream = static_cast<cudaStream_t>(stream_handle);
  const auto event = static_cast<cudaEvent_t>(event_handle);
#if DIFFUSE_CUDA_EMULATED
  std::mutex mutex;
  std::condition_variable cv;
  bool done = false, expired = false;
  ncclComm_t comm = as_comm(nccl_comm_);
  std::thread watchdog([&] {
    std::unique_lock<std::mutex> lock(mutex);
    if (!cv.wait_for(lock, std::chrono::duration<double>(timeout_s_), [&] { return done; })) {
      expired = true;
      ncclCommAbort(comm);
    }
  });
  const cudaError_t status = event ? cudaEventSynchronize(event) : cudaStreamSynchronize(stream);
  {
    std::lock_guard<std::mutex> lock(mutex);
    done = true;
  }
  cv.notify_all();
  watchdog.join();
  if (expired) {
    nccl_comm_ = nullptr;  // aborted: freed by ncclCommAbort
    fail_missing_ranks(what);
  }
  DIFFUSE_CUDA_CHECK(status);
#else
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s_);
  for (;;) {
    const cudaError_t state = event ? cudaEventQuery(event) : cudaStreamQuery(stream);
    if (state == cudaSuccess) return;
    if (state != cudaErrorNotReady) DIFFUSE_CUDA_CHECK(state);
    ncclResult_t async = ncclSuccess;
    DIFFUSE_NCCL_CHECK(ncclCommGetAsyncError(as_comm(nccl_comm_), &async));
    if (async != ncclInProgress) nccl_check(async, ("the NCCL collective of " + what).c_str(), rank_);
    if (std::chrono::steady_clock::now() > deadline) {
      ncclCommAbort(as_comm(nccl_comm_));  // the communicator is unusable after a timeout either way
      nccl_comm_ = nullptr;
      fail_missing_ranks(what);
    }
    answer_census();
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
#endif
}

// The gradients of bucket `index` are final on the compute stream: the comm stream waits for an
// event recorded there, then NCCL averages them in place (one group). The compute stream goes on
// with backward meanwhile. Nothing here allocates: the reductions touch only the gradients, which
// the compute stream frees (zero_grad, after the optimizer) only after it has waited for the comm
// stream (nccl_finish_buckets), so the caching allocator's one-stream reuse rule holds.
void Communicator::nccl_start_bucket(const std::vector<Tensor>& grads, size_t index, const std::string& what) {
  ensure_nccl();
  if (!comm_stream_) {
    cudaStream_t s = nullptr;
    DIFFUSE_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    comm_stream_ = s;
    cudaEvent_t e = nullptr;
    DIFFUSE_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    reduced_event_ = e;
  }
  while (bucket_events_.size() <= index) {
    cudaEvent_t e = nullptr;
    DIFFUSE_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    bucket_events_.push_back(e);
  }
  const auto compute = static_cast<cudaStream_t>(current_stream());
  const auto comm_stream = static_cast<cudaStream_t>(comm_stream_);
  const auto ready = static_cast<cudaEvent_t>(bucket_events_[index]);
  DIFFUSE_CUDA_CHECK(cudaEventRecord(ready, compute));
  DIFFUSE_CUDA_CHECK(cudaStreamWaitEvent(comm_stream, ready, 0));
  DIFFUSE_NCCL_CHECK(ncclGroupStart());
  for (const Tensor& t : grads)
    DIFFUSE_NCCL_CHECK(ncclAllReduce(t.raw(), t.raw(), static_cast<size_t>(t.numel()), ncclFloat32, ncclAvg,
                                     as_comm(nccl_comm_), comm_stream));
  nccl_settle(ncclGroupEnd(), "ncclGroupEnd", what);
}

// Clipping and the optimizer, on the compute stream, read the averaged gradients: the compute
// stream waits for the comm stream's event, and the host for the comm stream, within the deadline.
// Inside a capture of the compute stream the two events are the fork and the join of the comm
// stream (it joined the capture by waiting on the first bucket's event, and this wait joins it
// back, as cudaStreamEndCapture requires), and the host cannot wait (a synchronisation of a
// capturing stream is refused): the read-back of the replay waits instead (wait_for_device).
bool Communicator::nccl_finish_buckets(const std::string& what) {
  if (!comm_stream_) return true;
  const auto compute = static_cast<cudaStream_t>(current_stream());
  const auto comm_stream = static_cast<cudaStream_t>(comm_stream_);
  const auto reduced = static_cast<cudaEvent_t>(reduced_event_);
  DIFFUSE_CUDA_CHECK(cudaEventRecord(reduced, comm_stream));
  DIFFUSE_CUDA_CHECK(cudaStreamWaitEvent(compute, reduced, 0));
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  DIFFUSE_CUDA_CHECK(cudaStreamIsCapturing(compute, &capture));
  if (capture != cudaStreamCaptureStatusNone) return false;
  wait_for_work(comm_stream_, nullptr, what);
  return true;
}

void Communicator::wait_for_device(const DeviceEvent& upto, const std::string& what) {
  if (nccl_comm_ && upto.cuda_event()) wait_for_work(nullptr, upto.cuda_event(), what);
}

// NCCL can capture its collectives into a CUDA graph from 2.9 on (its documentation, "Using NCCL
// with CUDA Graphs"); the version is the nccl.h this build was compiled against.
std::string Communicator::why_not_capturable() const {
#if NCCL_VERSION_CODE < NCCL_VERSION(2, 9, 0)
  return "this build's NCCL (" + std::to_string(NCCL_VERSION_CODE) +
         ") cannot capture collectives into a CUDA graph (2.9 or later can)";
#else
  return "";
#endif
}

void Communicator::nccl_broadcast(const std::vector<Tensor>& tensors, int root, const std::string& what) {
  ensure_nccl();
  const auto stream = static_cast<cudaStream_t>(current_stream());
  DIFFUSE_NCCL_CHECK(ncclGroupStart());
  for (const Tensor& t : tensors)
    DIFFUSE_NCCL_CHECK(ncclBroadcast(t.raw(), t.raw(), t.nbytes(), ncclUint8, root, as_comm(nccl_comm_), stream));
  nccl_settle(ncclGroupEnd(), "ncclGroupEnd", "the broadcast of " + what);
  wait_for_work(stream, nullptr, "the broadcast of " + what);
}

#else  // no NCCL: CUDA tensors can only meet a one-rank communicator, which never gets here

void Communicator::select_gpu() {}
void Communicator::ensure_nccl() {}
void Communicator::destroy_nccl() {}

void Communicator::nccl_start_bucket(const std::vector<Tensor>&, size_t, const std::string& what) {
  throw Error(what + ": CUDA tensors across ranks need NCCL, and this build has none "
              "(configure with MPI found and the CUDA backend on)");
}
bool Communicator::nccl_finish_buckets(const std::string&) { return true; }
void Communicator::wait_for_device(const DeviceEvent&, const std::string&) {}
std::string Communicator::why_not_capturable() const {
  return "this build has no NCCL to carry CUDA tensors across ranks";
}

void Communicator::nccl_broadcast(const std::vector<Tensor>&, int, const std::string& what) {
  throw Error("broadcast of " + what + ": CUDA tensors across ranks need NCCL, and this build has none "
              "(configure with MPI found and the CUDA backend on)");
}

#endif

}  // namespace diffuse::collective
