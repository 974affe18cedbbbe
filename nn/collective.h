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
#include <string>
#include <vector>

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

  // Replaces every tensor by its mean over the ranks, in place. All tensors f32 on one device:
  // CPU tensors are packed into flat buckets and summed with MPI; CUDA tensors are averaged by
  // NCCL (ncclAvg, in one group) on the current stream. `what` names the call in errors
  // ("the gradients of step 12").
  void allreduce_mean(const std::vector<Tensor>& tensors, const std::string& what);
  // The mean of a host value over the ranks.
  double allreduce_mean(double value, const std::string& what);
  // Copies rank `root`'s tensors into every other rank's (same shapes on every rank).
  void broadcast(const std::vector<Tensor>& tensors, int root, const std::string& what);
  // Every rank's `value`, indexed by rank (for reports: per-rank throughput).
  std::vector<double> allgather(double value, const std::string& what);
  // Throws, on every rank, an Error naming the ranks whose `checksum` differs from rank 0's.
  void check_agreement(uint64_t checksum, const std::string& what);
  void barrier(const std::string& what);

  // Seconds spent inside allreduce_mean(tensors) so far (for `diffuse bench train`).
  double allreduce_seconds() const { return allreduce_seconds_; }

  // Ends every rank of the job after printing "rank R: message" on stderr: what a rank does with
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
  void allreduce_host_floats(float* data, int64_t count, const std::string& what);
  void nccl_allreduce_mean(const std::vector<Tensor>& tensors, const std::string& what);
  void nccl_broadcast(const std::vector<Tensor>& tensors, int root, const std::string& what);
  void select_gpu();
  void ensure_nccl();
  void destroy_nccl();
  void wait_for_stream(const std::string& what);

  int rank_ = 0, size_ = 1, local_rank_ = 0;
  bool mpi_ = false;  // MPI initialised by us (launched by mpirun, built with MPI)
  double timeout_s_ = 600;
  double allreduce_seconds_ = 0;
  void* nccl_comm_ = nullptr;  // ncclComm_t, created at the first CUDA collective
  std::vector<float> bucket_;  // the flat host buffer CPU gradients are packed into
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
