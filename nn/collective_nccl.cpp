// See collective.h. The CUDA side of the communicator: the GPU of each rank (picked by local rank
// before anything touches the device) and NCCL for CUDA tensors. The NCCL communicator is created
// at the first CUDA collective, bootstrapped through MPI: rank 0's ncclGetUniqueId is broadcast
// with MPI, then every rank calls ncclCommInitRank. In the -DDIFFUSE_CUDA=EMULATED build the same
// calls are served by the emulated device (kernels/emulated_device/nccl.cpp). Builds without NCCL
// (no MPI, or no CUDA backend) only ever run these with one rank, where collective.cpp returns
// before reaching them.
#include <chrono>
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

void Communicator::ensure_nccl() {
  if (nccl_comm_) return;
  ncclUniqueId id;
  if (rank_ == 0) DIFFUSE_NCCL_CHECK(ncclGetUniqueId(&id));
  MPI_Request req;
  if (MPI_Ibcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD, &req) != MPI_SUCCESS)
    throw Error("rank " + std::to_string(rank_) + ": MPI_Ibcast of the NCCL unique id failed");
  wait(&req, "the broadcast of the NCCL unique id");
  ncclComm_t comm = nullptr;
  DIFFUSE_NCCL_CHECK(ncclCommInitRank(&comm, size_, id, rank_));
  nccl_comm_ = comm;
}

void Communicator::destroy_nccl() {
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

// Waits for the collectives queued on the stream, within the deadline. A real GPU is polled
// (cudaStreamQuery, ncclCommGetAsyncError), and a stuck communicator is aborted before the
// missing ranks are named. The emulated device runs queued work only when the host synchronises
// (kernels/emulated_device/device.h), so there the wait is the synchronisation itself.
void Communicator::wait_for_stream(const std::string& what) {
  const auto stream = static_cast<cudaStream_t>(current_stream());
#if DIFFUSE_CUDA_EMULATED
  (void)what;
  DIFFUSE_CUDA_CHECK(cudaStreamSynchronize(stream));
#else
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s_);
  for (;;) {
    const cudaError_t state = cudaStreamQuery(stream);
    if (state == cudaSuccess) return;
    if (state != cudaErrorNotReady) DIFFUSE_CUDA_CHECK(state);
    ncclResult_t async = ncclSuccess;
    DIFFUSE_NCCL_CHECK(ncclCommGetAsyncError(as_comm(nccl_comm_), &async));
    nccl_check(async, ("the NCCL collective of " + what).c_str(), rank_);
    if (std::chrono::steady_clock::now() > deadline) {
      ncclCommAbort(as_comm(nccl_comm_));  // the communicator is unusable after a timeout either way
      nccl_comm_ = nullptr;
      fail_missing_ranks(what);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
#endif
}

void Communicator::nccl_allreduce_mean(const std::vector<Tensor>& tensors, const std::string& what) {
  ensure_nccl();
  const auto stream = static_cast<cudaStream_t>(current_stream());
  // One group: NCCL fuses the tensors' reductions into as few launches as it sees fit.
  DIFFUSE_NCCL_CHECK(ncclGroupStart());
  for (const Tensor& t : tensors)
    DIFFUSE_NCCL_CHECK(ncclAllReduce(t.raw(), t.raw(), static_cast<size_t>(t.numel()), ncclFloat32, ncclAvg,
                                     as_comm(nccl_comm_), stream));
  DIFFUSE_NCCL_CHECK(ncclGroupEnd());
  wait_for_stream("the all-reduce of " + what);
}

void Communicator::nccl_broadcast(const std::vector<Tensor>& tensors, int root, const std::string& what) {
  ensure_nccl();
  const auto stream = static_cast<cudaStream_t>(current_stream());
  DIFFUSE_NCCL_CHECK(ncclGroupStart());
  for (const Tensor& t : tensors)
    DIFFUSE_NCCL_CHECK(ncclBroadcast(t.raw(), t.raw(), t.nbytes(), ncclUint8, root, as_comm(nccl_comm_), stream));
  DIFFUSE_NCCL_CHECK(ncclGroupEnd());
  wait_for_stream("the broadcast of " + what);
}

#else  // no NCCL: CUDA tensors can only meet a one-rank communicator, which never gets here

void Communicator::select_gpu() {}
void Communicator::ensure_nccl() {}
void Communicator::destroy_nccl() {}

void Communicator::nccl_allreduce_mean(const std::vector<Tensor>&, const std::string& what) {
  throw Error("all-reduce of " + what + ": CUDA tensors across ranks need NCCL, and this build has none "
              "(configure with MPI found and the CUDA backend on)");
}

void Communicator::nccl_broadcast(const std::vector<Tensor>&, int, const std::string& what) {
  throw Error("broadcast of " + what + ": CUDA tensors across ranks need NCCL, and this build has none "
              "(configure with MPI found and the CUDA backend on)");
}

#endif

}  // namespace diffuse::collective
