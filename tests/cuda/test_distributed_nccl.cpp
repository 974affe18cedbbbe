// Data-parallel training on CUDA ranks (docs/distributed.md), the NCCL path: two ranks at
// --batch 2 with --device cuda train the same model as one process at --batch 4, and rank 0 alone
// writes the run; the gradient all-reduce on its own stream, overlapped with backward, changes no
// bit and does overlap; a rank that hangs or dies (during training, the all-reduce or the NCCL
// set-up) ends the job within 60 s, naming it. In the -DDIFFUSE_CUDA=EMULATED build every rank process has its own emulated
// device and the NCCL calls are served by kernels/emulated_device/nccl.cpp over MPI, so this runs
// in CI; on a real machine it needs two GPUs (NCCL refuses two ranks on one GPU). Steps are few
// and batches small: under the emulated device every custom kernel runs thread by thread.
#include <catch2/catch.hpp>

#include <csignal>

#include "mpi/distributed_run.h"
#include "support/cuda_guard.h"
#include "support/temp_dir.h"

#if DIFFUSE_WITH_NCCL
// The C API only, as in the library (cmake/mpi.cmake): no deprecated C++ bindings (libmpi_cxx).
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <nccl.h>
#endif

using namespace diffuse;
using namespace diffuse::test;

namespace {

// As in tests/cpu/test_distributed.cpp: the two runs differ only in the order f32 sums are taken
// (the shards' gradients summed by the all-reduce against one batch's reduction inside the
// kernels), ~1e-7 relative per step, which AdamW carries into the weights. Measured on the
// emulated device over these 8 steps: loss within 3.0e-7 and gradient norm within 7.7e-6
// relative, weights (largest |w| 1.01) within 2.7e-5 absolute. The bounds are over 10x that (a
// GPU sums in other orders again); a wrong shard moves the step-1 loss by percents.
constexpr double kCurveTolerance = 1e-4;
constexpr double kWeightTolerance = 3e-4;

std::vector<std::string> cuda_run(const std::string& out, int batch) {
  return {"train", "--device", "cuda", "--data", "fashion-mnist", "--max-images", "32", "--config", "tiny",
          "--out", out, "--steps", "8", "--batch", std::to_string(batch), "--lr", "1e-3", "--seed", "5",
          "--threads", "1", "--log-every", "4"};
}

}  // namespace

// Opens every test case: the CUDA backend and MPI, and on a real machine two GPUs.
#if DIFFUSE_CUDA_EMULATED
#define DIFFUSE_TWO_CUDA_RANKS_GUARD() \
  DIFFUSE_CUDA_TEST_GUARD();           \
  DIFFUSE_MPI_TEST_GUARD()
#else
#define DIFFUSE_TWO_CUDA_RANKS_GUARD()                                                      \
  DIFFUSE_CUDA_TEST_GUARD();                                                                \
  DIFFUSE_MPI_TEST_GUARD();                                                                 \
  if (cuda_device_count() < 2) {                                                            \
    WARN("skipped: two CUDA ranks need two GPUs (NCCL refuses two ranks on one GPU)");      \
    return;                                                                                 \
  }                                                                                         \
  static_assert(true)
#endif

TEST_CASE("two CUDA ranks at batch 2 (NCCL) train like one process at batch 4", "[cuda][mpi]") {
  DIFFUSE_TWO_CUDA_RANKS_GUARD();
  TempDir dir;
  const std::string one = dir.file("one"), two = dir.file("two");
  require_ok(run_cli(cuda_run(one, 4)), "one process at batch 4");
  require_ok(run_cli_ranks(2, cuda_run(two, 2)), "two ranks at batch 2");

  REQUIRE(metric(two, "loss").size() == 8);
  for (const char* field : {"loss", "grad_norm"}) {
    INFO(field);
    CHECK(max_relative_difference(metric(one, field), metric(two, field), 1e-3) < kCurveTolerance);
  }
  const std::string weights = "/checkpoints/step-8/model/unet/diffusion_pytorch_model.safetensors";
  CHECK(max_weight_difference(one + weights, two + weights) < kWeightTolerance);
  CHECK(run_files(one) == run_files(two));
}

// Run by every rank of the test below (hidden: only under mpirun).
TEST_CASE("gradient sync rank (CUDA)", "[.mpi_rank]") { check_gradient_sync_on_this_rank(Device::cuda); }

// The exact mean and the overlap proven on the tensors themselves: a whole CUDA training run is
// not bit-reproducible even in one process (cuDNN's algorithm search times its candidates), so
// the bit-for-bit comparison of two runs is the CPU test's.
TEST_CASE("CUDA ranks: the all-reduce on its own stream during backward gives the exact mean and overlaps",
          "[cuda][mpi]") {
  DIFFUSE_TWO_CUDA_RANKS_GUARD();
  const RunResult r = run_self_ranks(2, "gradient sync rank (CUDA)");
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("All tests passed"));
  // And through the trainer: tiny's gradients in 64 KiB buckets start during backward.
  TempDir dir;
  const std::vector<std::string> bench = {"--device", "cuda", "--config", "tiny", "--batch", "1", "--warmup", "1",
                                          "--iters", "1", "--threads", "1"};
  const auto overlapped = bench_two_ranks(dir.file("overlapped.json"), bench, {{"DIFFUSE_GRAD_BUCKET_MB", "0.0625"}});
  CHECK(overlapped.at("allreduce_buckets").get<double>() > 10);
  CHECK(overlapped.at("allreduce_buckets_during_backward").get<double>() > 0);
}

TEST_CASE("CUDA ranks: a rank that hangs or dies ends the job within 60 s, naming the rank", "[cuda][mpi]") {
  DIFFUSE_TWO_CUDA_RANKS_GUARD();
  TempDir dir;
  const std::vector<std::string> data = {"--device", "cuda", "--data", "fashion-mnist", "--max-images", "16",
                                         "--config", "tiny", "--batch", "1", "--log-every", "1"};
  SECTION("hung (SIGSTOP): rank 0's deadline passes (the host's or the NCCL stream's) and it names rank 1") {
    check_rank_kill_ends_job(dir.file("run-stop"), "STOP", data, "rank 1 did not answer (dead or hung)");
  }
  SECTION("dead (SIGKILL): mpirun ends the job and names rank 1") {
    check_rank_kill_ends_job(dir.file("run-kill"), "KILL", data, "process rank 1");
  }
}

// Run by every rank of the test below (hidden: only under mpirun).
TEST_CASE("gradient sync with a hung rank (CUDA)", "[.mpi_rank]") { hang_rank_1_during_gradient_sync(Device::cuda); }

// Deterministically the device path's deadline (the kill test above may stop rank 1 anywhere,
// often where rank 0 waits in a host collective): rank 0 waits on the NCCL stream.
TEST_CASE("CUDA ranks: a hung rank ends the NCCL gradient all-reduce within its deadline", "[cuda][mpi]") {
  DIFFUSE_TWO_CUDA_RANKS_GUARD();
  check_hung_rank_ends_gradient_sync("gradient sync with a hung rank (CUDA)");
}

// Run by every rank of the test below (hidden: only under mpirun). The first CUDA collective sets
// NCCL up (Communicator::ensure_nccl): rank 0's unique id is broadcast over MPI (MPI_Ibcast),
// then every rank creates the communicator. Rank 1 plays its part of that broadcast itself and
// then stops (SIGSTOP, a hung process), so rank 0 is certain to be waiting in the set-up, which
// must give up within the communicator's 5 s deadline and end the job naming rank 1.
TEST_CASE("NCCL set-up with a hung rank (CUDA)", "[.mpi_rank]") {
#if DIFFUSE_WITH_NCCL
  collective::Communicator& comm = collective::world();
  REQUIRE(comm.size() == 2);
  comm.set_timeout(5);
  Tensor weights = Tensor::rand({100}, 7).to(Device::cuda);
  if (comm.rank() == 1) {
    ncclUniqueId id;
    MPI_Request req;
    REQUIRE(MPI_Ibcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD, &req) == MPI_SUCCESS);
    REQUIRE(MPI_Wait(&req, MPI_STATUS_IGNORE) == MPI_SUCCESS);
    std::raise(SIGSTOP);
  }
  try {
    comm.broadcast({weights}, 0, "the test's weights");
  } catch (const std::exception& e) {
    comm.abort(e.what());
  }
  comm.abort("the NCCL communicator was set up although rank 1 was stopped");
#endif
}

TEST_CASE("CUDA ranks: a rank that hangs during NCCL set-up ends the job within its deadline", "[cuda][mpi]") {
  DIFFUSE_TWO_CUDA_RANKS_GUARD();
  check_hung_rank_ends_job("NCCL set-up with a hung rank (CUDA)",
                           "rank 0 of 2: the set-up of the NCCL communicator did not complete within 5 s: "
                           "rank 1 did not answer (dead or hung)");
}
