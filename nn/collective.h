// The communication seam of data-parallel training (docs/distributed.md, docs/design.md §8):
// what the trainer needs from the other ranks, and nothing else. MPI starts the ranks (mpirun)
// and carries host values and CPU tensors; CUDA tensors go through NCCL, whose communicator is
// bootstrapped through MPI (rank 0's unique id broadcast) on the GPU picked by the local rank.
// A process not started by mpirun, or a build without MPI, is the one-rank case of the same
// calls: every collective is then the identity (a mean over one rank), so the trainer has one
// path whatever the rank count.
//
// Every collective that waits on other ranks waits at most timeout() seconds. When the deadline
// passes, the ranks still alive tell each other so (point-to-point messages, which still flow
// while a collective is stuck) and each throws an Error naming the ranks that did not arrive,
// so a rank that hangs or dies makes the others exit instead of hanging forever.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "nn/autograd.h"
#include "nn/device_transfer.h"
#include "nn/tensor.h"

namespace diffuse::collective {

class Communicator {
 public:
  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }  // the rank among those on this machine: picks the GPU
  bool distributed() const { return size_ > 1; }

  // Seconds a collective waits for the other ranks before failing (default 600).
  double timeout() const { return timeout_s_; }
  void set_timeout(double seconds);

  // The mean of a host value over the ranks.
  double allreduce_mean(double value, const std::string& what);
  // The same for each of `values` in place, in one collective.
  void allreduce_mean(std::span<double> values, const std::string& what);
  // Copies rank `root`'s tensors into every other rank's (same shapes on every rank).
  void broadcast(const std::vector<Tensor>& tensors, int root, const std::string& what);
  // Every rank's `value`, indexed by rank (for reports: per-rank throughput).
  std::vector<double> allgather(double value, const std::string& what);
  // Throws, on every rank, an Error naming the ranks whose `checksum` differs from rank 0's.
  void check_agreement(uint64_t checksum, const std::string& what);
  void barrier(const std::string& what);

  // Gradient buckets (GradientSync): their size in bytes (DIFFUSE_GRAD_BUCKET_MB, default
  // kDefaultGradBucketMiB MiB) and whether they are reduced while backward runs
  // (DIFFUSE_GRAD_OVERLAP=0 turns that off: every bucket is reduced after backward).
  static constexpr double kDefaultGradBucketMiB = 4;
  int64_t grad_bucket_bytes() const { return grad_bucket_bytes_; }
  bool overlap_grads() const { return overlap_grads_; }
  void set_grad_buckets(double mib, bool overlap);

  // Waits, within the deadline, until the device has run the work `upto` marks (recorded on the
  // compute stream) when it may hold NCCL collectives: a replayed training step's graph holds its
  // gradient all-reduce, which a dead or hung rank would hold forever. The deadline is per call,
  // so the reader of a group of queued steps waits step by step (one mark each): every step's
  // all-reduce gets the whole deadline, however many steps are queued. On expiry the communicator
  // is aborted and the missing ranks named, as for every collective ("<what> did not complete
  // within ..."). A no-op before the first CUDA collective (nothing of another rank is queued) and
  // for a mark never recorded on CUDA.
  void wait_for_device(const DeviceEvent& upto, const std::string& what);
  // "" when a training step holding this communicator's collectives can be captured into a CUDA
  // graph (NCCL 2.9 or later), else why not.
  std::string why_not_capturable() const;

  // Ends every rank of the job after printing "diffuse: rank R of N: message" on stderr: what a rank does with
  // an error the others cannot see (they would otherwise wait at the next collective).
  [[noreturn]] void abort(const std::string& message) const;

  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;
  ~Communicator();

 private:
  friend Communicator& world();
  Communicator();
  // Waits for an MPI request until the deadline; on expiry finds which ranks are missing and throws.
  void wait(void* request, const std::string& what);
  [[noreturn]] void fail_missing_ranks(const std::string& what);
  // Answers the census queries of ranks whose deadline passed (while this one waits elsewhere).
  void answer_census();
  friend class GradientSync;
  void nccl_broadcast(const std::vector<Tensor>& tensors, int root, const std::string& what);
  void select_gpu();
  void ensure_nccl();
  void destroy_nccl();
  // `status` is an ncclResult_t of `call`; ncclInProgress is polled to its end within the deadline.
  void nccl_settle(int status, const char* call, const std::string& what);
  // Waits, within the deadline, for the work `event` (a cudaEvent_t) marks, or when it is null
  // for the work queued on `stream` (a cudaStream_t).
  void wait_for_work(void* stream, void* event, const std::string& what);
  // GradientSync's CUDA side: bucket `index` of `grads` averaged on the comm stream after the
  // compute stream's work so far; then the compute stream made to wait for all of them, and the
  // host too unless the compute stream is being captured into a graph (returns whether it waited).
  void nccl_start_bucket(const std::vector<Tensor>& grads, size_t index, const std::string& what);
  bool nccl_finish_buckets(const std::string& what);

  int rank_ = 0, size_ = 1, local_rank_ = 0;
  bool mpi_ = false;  // MPI initialised by us (launched by mpirun, built with MPI)
  double timeout_s_ = 600;
  int64_t grad_bucket_bytes_ = static_cast<int64_t>(kDefaultGradBucketMiB * 1024 * 1024);
  bool overlap_grads_ = true;
  void* nccl_comm_ = nullptr;    // ncclComm_t, created at the first CUDA collective
  void* comm_stream_ = nullptr;  // cudaStream_t of the gradient reductions (non-blocking)
  std::vector<void*> bucket_events_;  // cudaEvent_t per bucket: its gradients are final
  void* reduced_event_ = nullptr;     // cudaEvent_t: every bucket reduced
};

// What the gradient all-reduce of the steps so far did (for `diffuse bench train`).
struct GradientSyncStats {
  int64_t steps = 0;
  int64_t buckets = 0;                  // reductions started
  int64_t buckets_during_backward = 0;  // of which started before backward returned
  double wait_seconds = 0;   // from the end of backward until every reduction had completed: the
                             // communication time backward did not hide
  double total_seconds = 0;  // from the first reduction's start to the last one's completion
};

// The data-parallel gradient all-reduce, bucketed and overlapped with backward
// (docs/distributed.md, "Overlap"). The parameters are cut, in reverse order (the order backward
// finishes them), into buckets of about grad_bucket_bytes(); the layout is the same on every
// rank and every step. Passed to run_backward as its GradReadyHook, it starts a bucket's
// reduction as soon as every gradient in it is final and every earlier bucket has started, so
// every rank starts the same reductions in the same order. CPU: the bucket is packed into a
// host buffer and summed by MPI_Iallreduce, progressed at each later ready gradient. CUDA: an
// event recorded on the compute stream orders the comm stream after the gradients, and NCCL
// averages them in place there (ncclAvg, one group per bucket). finish() starts what is left (a
// parameter whose gradient never arrived is reduced as zeros and keeps that zero gradient),
// waits for everything within the communicator's deadline, and on CUDA makes the compute stream
// wait for the comm stream. Averaging is per element, so neither the bucket layout nor the
// overlap changes a bit of the result. With one rank every call is a no-op.
//
// Inside a CUDA graph capture (the training step's, engine/train_step.cpp) the same host logic
// runs once: the events fork the comm stream off the capturing compute stream and join it back,
// so the NCCL calls become graph nodes in bucket order, and every replay repeats those reductions
// in that order on every rank. finish() then makes no host wait (the host waits for a replay
// within the deadline at its read-back, Communicator::wait_for_device) and the captured run is
// not counted in stats() (it ran nothing).
class GradientSync final : public GradReadyHook {
 public:
  GradientSync(Communicator& communicator, std::vector<Tensor> params);
  ~GradientSync();
  GradientSync(const GradientSync&) = delete;
  GradientSync& operator=(const GradientSync&) = delete;

  // Before backward: `what` names the reductions in errors ("the gradients of step 12" gives
  // "the all-reduce of the gradients of step 12 did not complete within ...").
  void begin(const std::string& what);
  void grad_ready(AutogradMeta& leaf) override;
  // After backward: every parameter's grad is the mean over the ranks.
  void finish();

  int64_t num_buckets() const { return static_cast<int64_t>(buckets_.size()); }
  const GradientSyncStats& stats() const { return stats_; }

 private:
  struct Bucket {
    std::vector<size_t> params;  // indices into params_, in reverse parameter order
    int64_t numel = 0;
    std::vector<float> host;     // CPU: the packed gradients while MPI reduces them
  };
  struct Impl;  // the MPI requests (collective.cpp)
  void launch(size_t bucket);
  void launch_ready(bool during_backward);
  void progress();

  Communicator& comm_;
  std::vector<Tensor> params_;
  std::vector<Bucket> buckets_;
  std::vector<std::pair<const AutogradMeta*, size_t>> meta_index_;  // sorted: the meta's param
  std::vector<size_t> bucket_of_;   // per parameter
  std::vector<size_t> waiting_;     // per bucket: gradients not yet final this step
  size_t next_ = 0;                 // the next bucket to start
  bool in_backward_ = false;
  std::string what_;
  double first_start_ = 0;          // seconds since the epoch of the steady clock
  GradientSyncStats stats_;
  GradientSyncStats stats_before_;  // at begin(): what a captured run leaves the stats at
  std::unique_ptr<Impl> impl_;
};

// The job's communicator, created at the first call: MPI is initialised (and finalised at exit)
// only when this process was launched by mpirun (OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK in
// the environment) and the build has MPI; otherwise one rank.
Communicator& world();

// True when the build has MPI / NCCL (for `diffuse info`).
bool built_with_mpi();
bool built_with_nccl();
// "Open MPI v4.1.4, ..." or "not built in".
std::string mpi_library_version();

// A cheap, order-sensitive checksum of tensors' bytes (any device: copied to the host), for
// check_agreement.
uint64_t checksum(const std::vector<Tensor>& tensors);

}  // namespace diffuse::collective
