// The emulated device's NCCL: exactly the functions of nccl.h that diffuse calls (ncclCommAbort,
// ncclCommInitRankConfig with a blocking or nonblocking config and ncclCommGetAsyncError included)
// (nn/collective_nccl.cpp), with the toolkit's own signatures, so that the CUDA data-parallel path
// builds and runs in the -DDIFFUSE_CUDA=EMULATED flavour and in CI, without GPUs or libnccl.
//
// The ranks are the processes mpirun started; a communicator must span all of them (rank and
// size equal to MPI_COMM_WORLD's, as diffuse creates it), and the caller must have initialised
// MPI (nn/collective.cpp does). Like the other emulated libraries, a collective checks its
// arguments when called (buffers inside live device allocations for the extent it touches, a
// supported type and operation) and refuses with NCCL's documented status and a line on stderr;
// the data movement itself is queued on the given stream and runs when the host synchronises
// with it, as MPI_Allreduce / MPI_Bcast between the rank processes. Every rank queues the same
// collectives in the same order (NCCL's own rule), so the blocking MPI calls pair up. Groups
// (ncclGroupStart/End) only nest here: each call is queued at once, in call order.
//
// A communicator carries its reductions on its own duplicate of MPI_COMM_WORLD, so they never
// pair with the host's MPI collectives, whatever the order the two are run in. The duplicate is
// made nonblocking (MPI_Comm_idup, polled): a nonblocking config (config.blocking = 0) returns
// ncclInProgress at once and ncclCommGetAsyncError answers ncclInProgress until every rank has
// joined, so the caller can abort when one never does. A queued collective starts a nonblocking
// MPI call and polls it; ncclCommAbort (callable from any thread, as with NCCL, e.g. a watchdog
// whose deadline passed while the host synchronises) makes a collective that still waits for
// another rank give up: its work fails (the device's sticky error), so a rank that died or hung
// cannot hold the others forever.
//
// Stream capture (NCCL >= 2.9 lets a CUDA graph capture its collectives): a collective on a
// capturing stream goes through the same enqueue, so it is recorded into the capture and each
// replay of the graph runs it again (the closure holds the communicator's state, so an abort
// still ends a replayed collective). What NCCL cannot do while a capture is open is refused as
// the runtime refuses its cudaMalloc: a communicator's set-up (ncclUnhandledCudaError, the capture
// invalidated, under the capture modes' rules; create the communicator before capturing). NCCL
// also makes "captured or not" a property every rank of a collective must share (a graph's
// collectives pair only with the same graph's on the other ranks); the emulated all-reduce checks
// it: each rank adds 1 if it runs the reduction from a graph, 0 if eagerly, in one more float of
// the same MPI reduction, and a sum other than 0 or the rank count fails the work on every rank.
#include <nccl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>
#include <unistd.h>

#include "kernels/emulated_device/capture.h"
#include "kernels/emulated_device/device.h"

#if DIFFUSE_WITH_MPI
#include <mpi.h>
#endif

namespace ed = diffuse::emulated_device;

// What a communicator's queued work needs; shared with that work, which may still be running when
// ncclCommAbort frees the communicator.
struct CommState {
  int rank = 0;
  int nranks = 1;
  std::atomic<bool> aborted{false};
  // The set-up still waits for other ranks (MPI_Comm_idup into setup_comm, moved to `mpi` once
  // complete); only the thread that made the communicator polls it.
  bool pending = false;
#if DIFFUSE_WITH_MPI
  MPI_Comm mpi = MPI_COMM_NULL;  // the communicator's duplicate of MPI_COMM_WORLD (nranks > 1)
  MPI_Comm setup_comm = MPI_COMM_NULL;
  MPI_Request setup = MPI_REQUEST_NULL;
#endif
};

// The communicator's state. nccl.h declares the struct and leaves it to the library.
struct ncclComm {
  std::shared_ptr<CommState> state;
  int rank = 0;
  int nranks = 1;
};

namespace {

int g_group_depth = 0;
std::string g_last_error;

ncclResult_t refuse(ncclResult_t status, const std::string& message) {
  g_last_error = message;
  std::fprintf(stderr, "emulated NCCL: %s\n", message.c_str());
  return status;
}

size_t type_size(ncclDataType_t t) {
  switch (t) {
    case ncclInt8: case ncclUint8: return 1;
    case ncclFloat32: return 4;
    default: return 0;  // types diffuse does not use
  }
}

#if DIFFUSE_WITH_MPI
void mpi_or_throw(int status, const char* call) {
  if (status == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {0};
  int length = 0;
  MPI_Error_string(status, text, &length);
  throw std::runtime_error(std::string(call) + " failed: " + std::string(text, static_cast<size_t>(length)));
}

// mpi_staging: MPI carries a host copy of the device buffer, never the device memory itself. Open
// MPI's shared-memory transport reads a large message straight out of the peer process
// (process_vm_readv), and the peer's device region stays inaccessible until its own work touches
// each allocation (device.h), so a direct transfer fails there ("Read -1, ... errno = 14") and
// Open MPI falls back, noisily.

// Polls a nonblocking MPI call until it completes or the communicator is aborted. The request is
// left to the process's end after an abort (MPI_Abort follows in diffuse).
void wait_or_abort(MPI_Request* request, const CommState& comm, const char* call) {
  for (int polls = 0;; ++polls) {
    int done = 0;
    mpi_or_throw(MPI_Test(request, &done, MPI_STATUS_IGNORE), call);
    if (done) return;
    if (comm.aborted.load()) throw std::runtime_error(std::string(call) + ": the communicator was aborted (ncclCommAbort) "
                                                      "while rank " + std::to_string(comm.rank) + " waited for the others");
    if (polls > 2000) std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
}

// Tests a communicator's pending set-up once: clears `pending` when it completed.
ncclResult_t poll_setup(CommState& comm) {
  int done = 0;
  if (MPI_Test(&comm.setup, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
    return refuse(ncclSystemError, "communicator set-up: MPI_Test of MPI_Comm_idup failed");
  if (done) {
    comm.mpi = comm.setup_comm;
    comm.pending = false;
  }
  return ncclSuccess;
}
#endif

// Checks a communicator and the device buffers of a collective of `bytes` bytes.
ncclResult_t check_call(const char* what, ncclComm_t comm, const void* send, void* recv, size_t bytes) {
  if (!comm) return refuse(ncclInvalidArgument, std::string(what) + ": null communicator");
  if (comm->state->pending)
    return refuse(ncclInvalidUsage, std::string(what) + ": the communicator's set-up is still in progress "
                                                        "(poll ncclCommGetAsyncError until it is not ncclInProgress)");
  if (bytes == 0) return ncclSuccess;
  if (!ed::is_device_range(send, bytes))
    return refuse(ncclInvalidArgument, std::string(what) + ": sendbuff is not " + std::to_string(bytes) +
                                           " bytes of device memory (" + ed::describe_address(send) + ")");
  if (!ed::is_device_range(recv, bytes))
    return refuse(ncclInvalidArgument, std::string(what) + ": recvbuff is not " + std::to_string(bytes) +
                                           " bytes of device memory (" + ed::describe_address(recv) + ")");
  return ncclSuccess;
}

ncclResult_t queue(cudaStream_t stream, const char* what, std::function<void()> run) {
  const cudaError_t status = ed::enqueue(stream, what, std::move(run));
  if (status != cudaSuccess)
    return refuse(ncclUnhandledCudaError, std::string(what) + ": " + cudaGetErrorString(status));
  return ncclSuccess;
}

}  // namespace

extern "C" {

ncclResult_t ncclGetUniqueId(ncclUniqueId* uniqueId) {
  if (!uniqueId) return refuse(ncclInvalidArgument, "ncclGetUniqueId: null uniqueId");
  std::memset(uniqueId->internal, 0, sizeof uniqueId->internal);
  std::snprintf(uniqueId->internal, sizeof uniqueId->internal, "emulated-nccl-%ld", static_cast<long>(getpid()));
  return ncclSuccess;
}

// A null config is NCCL's default configuration (blocking).
ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId, int rank, ncclConfig_t* config) {
  if (!comm) return refuse(ncclInvalidArgument, "ncclCommInitRankConfig: null comm");
  bool blocking = true;
  if (config) {
    const ncclConfig_t defaults = NCCL_CONFIG_INITIALIZER;
    if (config->magic != defaults.magic || config->size != sizeof(ncclConfig_t) || config->version != defaults.version)
      return refuse(ncclInvalidArgument, "ncclCommInitRankConfig: the config was not initialised with "
                                         "NCCL_CONFIG_INITIALIZER");
    if (config->blocking != NCCL_CONFIG_UNDEF_INT && config->blocking != 0 && config->blocking != 1)
      return refuse(ncclInvalidArgument, "ncclCommInitRankConfig: config.blocking must be 0 or 1, got " +
                                             std::to_string(config->blocking));
    blocking = config->blocking != 0;  // NCCL's default (unset) is blocking
  }
  if (nranks < 1 || rank < 0 || rank >= nranks)
    return refuse(ncclInvalidArgument, "ncclCommInitRankConfig: rank " + std::to_string(rank) + " of " +
                                           std::to_string(nranks) + " ranks");
  {
    // NCCL's set-up allocates device memory: refused, as that cudaMalloc would be, while a capture
    // that prohibits it is open.
    std::lock_guard<std::recursive_mutex> lock(ed::device_lock());
    if (const cudaError_t refused = ed::check_unsafe_call(); refused != cudaSuccess)
      return refuse(ncclUnhandledCudaError, std::string("ncclCommInitRankConfig: its cudaMalloc was refused during "
                                                        "stream capture (") + cudaGetErrorName(refused) +
                                                "): create the communicator before capturing");
  }
  if (nranks > 1) {
#if DIFFUSE_WITH_MPI
    int initialized = 0, world_rank = 0, world_size = 0;
    MPI_Initialized(&initialized);
    if (!initialized)
      return refuse(ncclInvalidUsage, "ncclCommInitRankConfig: the emulation runs its ranks over MPI; initialise MPI first");
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    if (world_rank != rank || world_size != nranks)
      return refuse(ncclInvalidUsage, "ncclCommInitRankConfig: the emulation serves communicators of all MPI ranks "
                                      "(rank " + std::to_string(world_rank) + " of " + std::to_string(world_size) +
                                      "), asked for rank " + std::to_string(rank) + " of " + std::to_string(nranks));
#else
    return refuse(ncclInvalidUsage, "ncclCommInitRankConfig: " + std::to_string(nranks) +
                                        " ranks, and this build has no MPI to carry them");
#endif
  }
  auto state = std::make_shared<CommState>();
  state->rank = rank;
  state->nranks = nranks;
  auto made = std::make_unique<ncclComm>(ncclComm{state, rank, nranks});
  (void)blocking;  // one rank: nothing to wait for
#if DIFFUSE_WITH_MPI
  if (nranks > 1) {
    // The set-up: a nonblocking duplicate of MPI_COMM_WORLD, which completes only once every rank
    // has started it. Blocking: polled here. Nonblocking: polled by ncclCommGetAsyncError, so the
    // caller can give up on a rank that never arrives.
    if (MPI_Comm_idup(MPI_COMM_WORLD, &state->setup_comm, &state->setup) != MPI_SUCCESS)
      return refuse(ncclSystemError, "ncclCommInitRankConfig: MPI_Comm_idup failed");
    state->pending = true;
    if (blocking) {
      for (int polls = 0; state->pending; ++polls) {
        if (ncclResult_t bad = poll_setup(*state); bad != ncclSuccess) return bad;
        if (polls > 2000) std::this_thread::sleep_for(std::chrono::microseconds(500));
      }
    } else if (ncclResult_t bad = poll_setup(*state); bad != ncclSuccess) {
      return bad;
    }
  }
#endif
  const bool pending = state->pending;
  *comm = made.release();
  return pending ? ncclInProgress : ncclSuccess;
}

// ncclInProgress while the set-up of a nonblocking communicator waits for the other ranks;
// otherwise ncclSuccess (an emulated collective's failure is the device's sticky error instead).
ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* asyncError) {
  if (!comm) return refuse(ncclInvalidArgument, "ncclCommGetAsyncError: null communicator");
  if (!asyncError) return refuse(ncclInvalidArgument, "ncclCommGetAsyncError: null asyncError");
  *asyncError = ncclSuccess;
#if DIFFUSE_WITH_MPI
  if (comm->state->pending) {
    if (ncclResult_t bad = poll_setup(*comm->state); bad != ncclSuccess) {
      *asyncError = bad;
      return ncclSuccess;
    }
    if (comm->state->pending) *asyncError = ncclInProgress;
  }
#endif
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (!comm) return refuse(ncclInvalidArgument, "ncclCommDestroy: null communicator");
  ed::synchronize_all();  // NCCL waits for the communicator's pending work before freeing it
#if DIFFUSE_WITH_MPI
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (comm->state->mpi != MPI_COMM_NULL && !finalized) MPI_Comm_free(&comm->state->mpi);
  // A set-up still pending is left to the process's end, as after ncclCommAbort.
#endif
  delete comm;
  return ncclSuccess;
}

// Safe from any thread (it only marks the state): a collective still waiting fails, and the
// queued work behind it is dropped with the device's sticky error. The MPI communicator, or its
// set-up still pending, is left to the process's end (freeing it here would be an MPI call from
// another thread).
ncclResult_t ncclCommAbort(ncclComm_t comm) {
  if (!comm) return ncclSuccess;
  comm->state->aborted.store(true);
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclGroupStart() {
  ++g_group_depth;
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
  if (g_group_depth == 0) return refuse(ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
  --g_group_depth;
  return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  if (datatype != ncclFloat32)
    return refuse(ncclInvalidArgument, "ncclAllReduce: the emulation reduces ncclFloat32 only, got type " +
                                           std::to_string(static_cast<int>(datatype)));
  if (op != ncclSum && op != ncclAvg)
    return refuse(ncclInvalidArgument, "ncclAllReduce: the emulation supports ncclSum and ncclAvg, got op " +
                                           std::to_string(static_cast<int>(op)));
  const size_t bytes = count * sizeof(float);
  if (ncclResult_t bad = check_call("ncclAllReduce", comm, sendbuff, recvbuff, bytes); bad != ncclSuccess) return bad;
  const int nranks = comm->nranks;
  std::shared_ptr<CommState> state = comm->state;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  const cudaError_t asked = cudaStreamIsCapturing(stream, &capture);  // a bad stream: queue() says why
  if (asked != cudaSuccess) cudaGetLastError();
  const bool captured = asked == cudaSuccess && capture != cudaStreamCaptureStatusNone;  // runs at each replay
  return queue(stream, "ncclAllReduce", [=] {
    auto* out = static_cast<float*>(recvbuff);
    if (sendbuff != recvbuff) std::memmove(out, sendbuff, bytes);
#if DIFFUSE_WITH_MPI
    if (nranks > 1) {
      std::vector<float> host(out, out + count);  // staged: see mpi_staging
      host.push_back(captured ? 1.0f : 0.0f);     // how many ranks run it from a graph
      for (size_t done = 0; done < host.size();) {
        const int n = static_cast<int>(std::min<size_t>(host.size() - done, 1u << 30));
        MPI_Request req;
        mpi_or_throw(MPI_Iallreduce(MPI_IN_PLACE, host.data() + done, n, MPI_FLOAT, MPI_SUM, state->mpi, &req),
                     "MPI_Iallreduce");
        wait_or_abort(&req, *state, "ncclAllReduce");
        done += static_cast<size_t>(n);
      }
      const float from_graphs = host.back();
      if (from_graphs != 0.0f && from_graphs != static_cast<float>(nranks))
        throw std::runtime_error("ncclAllReduce: " + std::to_string(static_cast<int>(from_graphs)) + " of " +
                                 std::to_string(nranks) + " ranks ran it from a captured CUDA graph and the others "
                                 "eagerly (rank " + std::to_string(state->rank) + ": " +
                                 (captured ? "graph" : "eager") + "); NCCL requires a collective to be captured on "
                                 "every rank or on none");
      std::memcpy(out, host.data(), bytes);
    }
#else
    (void)state, (void)captured;
#endif
    if (op == ncclAvg && nranks > 1)
      for (size_t i = 0; i < count; ++i) out[i] /= static_cast<float>(nranks);
  });
}

ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, int root,
                           ncclComm_t comm, cudaStream_t stream) {
  const size_t elem = type_size(datatype);
  if (elem == 0)
    return refuse(ncclInvalidArgument, "ncclBroadcast: type " + std::to_string(static_cast<int>(datatype)) +
                                           " is not one the emulation moves");
  const size_t bytes = count * elem;
  // Only the root's sendbuff is read (NCCL's rule); the others may pass anything there.
  const bool is_root = comm && comm->rank == root;
  if (ncclResult_t bad = check_call("ncclBroadcast", comm, is_root ? sendbuff : recvbuff, recvbuff, bytes);
      bad != ncclSuccess)
    return bad;
  if (root < 0 || root >= comm->nranks)
    return refuse(ncclInvalidArgument, "ncclBroadcast: root " + std::to_string(root) + " of " +
                                           std::to_string(comm->nranks) + " ranks");
  const int nranks = comm->nranks;
  std::shared_ptr<CommState> state = comm->state;
  return queue(stream, "ncclBroadcast", [=] {
    auto* out = static_cast<char*>(recvbuff);
    if (is_root && sendbuff != recvbuff) std::memmove(out, sendbuff, bytes);
#if DIFFUSE_WITH_MPI
    if (nranks > 1) {
      std::vector<char> host(out, out + bytes);  // staged: see mpi_staging
      for (size_t done = 0; done < bytes;) {
        const int n = static_cast<int>(std::min<size_t>(bytes - done, 1u << 30));
        MPI_Request req;
        mpi_or_throw(MPI_Ibcast(host.data() + done, n, MPI_BYTE, root, state->mpi, &req), "MPI_Ibcast");
        wait_or_abort(&req, *state, "ncclBroadcast");
        done += static_cast<size_t>(n);
      }
      std::memcpy(out, host.data(), bytes);
    }
#else
    (void)nranks, (void)state;
#endif
  });
}

const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case ncclSystemError: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case ncclInternalError: return "internal error - please report this issue to the NCCL developers";
    case ncclInvalidArgument: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case ncclInvalidUsage: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
  }
}

const char* ncclGetLastError(ncclComm_t) { return g_last_error.c_str(); }

}  // extern "C"
