// Data-parallel training on CUDA ranks (docs/distributed.md), the NCCL path: two ranks at
// --batch 2 with --device cuda train the same model as one process at --batch 4, and rank 0 alone
// writes the run; the gradient all-reduce on its own stream, overlapped with backward, changes no
// bit (within a job, and across two jobs with `--conv-search heuristic`) and does overlap; a rank that hangs or dies (during training, the all-reduce or the NCCL
// set-up) ends the job within 60 s, naming it. The step is one CUDA graph on CUDA ranks too (its
// NCCL all-reduce captured into it): replays give the eager steps' bits on every rank, and a rank
// that hangs while the others replay is named within the deadline. In the -DDIFFUSE_CUDA=EMULATED build every rank process has its own emulated
// device and the NCCL calls are served by kernels/emulated_device/nccl.cpp over MPI, so this runs
// in CI; on a real machine it needs two GPUs (NCCL refuses two ranks on one GPU). Steps are few
// and batches small: under the emulated device every custom kernel runs thread by thread.
#include <catch2/catch.hpp>
#include <cuda_runtime_api.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "diffuse/diffuse.h"
#include "engine/train_step.h"
#include "mpi/distributed_run.h"
#include "nn/device_context.h"
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

// tiny at 8x8, 2 rows per rank of a global batch of 4: the in-process data-parallel steps below.
TrainOptions graph_step_options(bool graphs) {
  TrainOptions o;
  o.config = "tiny";
  o.device = Device::cuda;
  o.batch = 2;
  o.lr = 1e-3;
  o.seed = 5;
  o.steps = 5;
  o.warmup = 1;
  o.cuda_graphs = graphs;
  return o;
}

UNet2DConfig graph_step_config(const TrainOptions& o) {
  UNet2DConfig c = training_unet_config(o);
  c.sample_size = 8;
  return c;
}

// This rank's rows of step s's global batch, as the batcher hands them out.
Batch graph_step_batch(int64_t s, int rank) {
  Batch b;
  b.images = Tensor::randn({4, 8, 8, 1}, 300 + static_cast<uint64_t>(s)).slice0(2 * rank, 2 * rank + 2);
  return b;
}

struct GraphStepRun {
  std::vector<double> losses, norms;
  std::vector<Tensor> weights;
  std::vector<std::string> notices;
  bool replaying = false;
  int64_t host_reductions = 0;  // steps whose gradient all-reduce ran from the host (GradientSync's count)
};

// `steps` data-parallel steps of a fresh TrainStep (the same initial weights on every rank: one seed).
GraphStepRun train_graph_steps(collective::Communicator& comm, bool graphs, int64_t steps) {
  const TrainOptions o = graph_step_options(graphs);
  TrainStep step(graph_step_config(o), o);
  step.set_communicator(&comm);
  GraphStepRun r;
  step.set_cuda_graphs(graphs, [&](const std::string& why) { r.notices.push_back(why); });
  for (int64_t s = 1; s <= steps; ++s) {
    const TrainStepResult res = step.run(s, graph_step_batch(s, comm.rank()));
    REQUIRE(res.non_finite.empty());
    r.losses.push_back(res.loss);
    r.norms.push_back(res.grad_norm);
  }
  r.replaying = step.replaying();
  r.host_reductions = step.gradient_sync() ? step.gradient_sync()->stats().steps : 0;
  for (const Tensor& p : step.parameters()) r.weights.push_back(p.to(Device::cpu));
  return r;
}

bool same_bits(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].nbytes() != b[i].nbytes() || std::memcmp(a[i].raw(), b[i].raw(), a[i].nbytes()) != 0) return false;
  return true;
}

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
  // The ranks read their steps back in groups of 3 (3, 6, 8), the one process in one group.
  std::vector<std::string> args = cuda_run(two, 2);
  args.insert(args.end(), {"--status-every", "3"});
  const RunResult ranks = run_cli_ranks(2, args);
  require_ok(ranks, "two ranks at batch 2");
  // Both replay the step's CUDA graph from step 3 on (--cuda-graphs defaults to on): no fallback
  // line. (That the replays ran, and give the eager steps' bits, is the in-process test's.)
  CHECK(ranks.output.find("cuda graphs:") == std::string::npos);

  REQUIRE(metric(two, "loss").size() == 8);
  for (const char* field : {"loss", "grad_norm"}) {
    INFO(field);
    CHECK(max_relative_difference(metric(one, field), metric(two, field), 1e-3) < kCurveTolerance);
  }
  const std::string weights = "/checkpoints/step-8/model/unet/diffusion_pytorch_model.safetensors";
  CHECK(max_weight_difference(one + weights, two + weights) < kWeightTolerance);
  CHECK(run_files(one) == run_files(two));
}

// Two jobs are the same bits only when their ranks choose the same cuDNN algorithms:
// `--conv-search heuristic`, even though the second job's emulated cuDNN ranks its timings
// slowest first (DIFFUSE_EMU_CUDNN_FIND=reverse), so the CPU's check that the all-reduce's
// schedule changes no bit holds across CUDA jobs too.
TEST_CASE("two CUDA ranks with --conv-search heuristic: two jobs, the all-reduce after or during backward, "
          "give the same bits",
          "[cuda][mpi]") {
  DIFFUSE_TWO_CUDA_RANKS_GUARD();
  TempDir dir;
  check_overlap_changes_no_bit(
      dir.path().string(),
      [](const std::string& out) {
        std::vector<std::string> args = cuda_run(out, 2);
        args.insert(args.end(), {"--conv-search", "heuristic"});
        return args;
      },
      "/checkpoints/step-8/model/unet/diffusion_pytorch_model.safetensors", {{"DIFFUSE_EMU_CUDNN_FIND", "reverse"}});
}

// Run by every rank of the test below (hidden: only under mpirun). The same five steps (two eager,
// the capture, two replays) with graphs and without, in one process, so that cuDNN's timed
// algorithm choice (per process, kernels/cuda/conv2d.cpp) is the same for both: the replays,
// whose gradient all-reduce is NCCL calls captured into the graph, give the eager steps' losses,
// gradient norms and weights bit for bit, and the weights are the same bits on both ranks.
TEST_CASE("train steps with and without the CUDA graph (CUDA rank)", "[.mpi_rank]") {
  collective::Communicator& comm = collective::world();
  REQUIRE(comm.size() == 2);
  const GraphStepRun graphed = train_graph_steps(comm, true, 5);
  const GraphStepRun eager = train_graph_steps(comm, false, 5);
  INFO("rank " << comm.rank());
  CHECK(graphed.notices.empty());  // no fallback
  CHECK(graphed.replaying);
  CHECK(graphed.host_reductions == TrainStep::kWarmupSteps);  // the capture and the replays ran none
  CHECK(!eager.replaying);
  CHECK(eager.host_reductions == 5);
  CHECK(graphed.losses == eager.losses);
  CHECK(graphed.norms == eager.norms);
  CHECK(same_bits(graphed.weights, eager.weights));
  comm.check_agreement(collective::checksum(graphed.weights), "the replayed steps' weights");
}

TEST_CASE("CUDA ranks: the data-parallel step replayed as a CUDA graph gives the eager steps' bits",
          "[cuda][mpi]") {
  DIFFUSE_TWO_CUDA_RANKS_GUARD();
  check_self_ranks_pass("train steps with and without the CUDA graph (CUDA rank)");
  // And what `bench train` reports of it: the timed step after two eager ones is a replay, its
  // all-reduce inside the graph.
  TempDir dir;
  const auto replayed = bench_two_ranks(dir.file("replayed.json"),
                                        {"--device", "cuda", "--config", "tiny", "--batch", "1", "--warmup", "2",
                                         "--iters", "1", "--threads", "1"},
                                        {});
  CHECK(replayed.at("cuda_graphs").get<bool>());
  CHECK(replayed.at("allreduce_in_graph").get<bool>());
  CHECK(replayed.at("allreduce_buckets").get<double>() == 1);  // tiny's 2.8 MB: one 4 MiB bucket
}

// A host function on the step's stream that sleeps `seconds` (captured into the step's graph, so
// every replay sleeps too): a step that takes that much longer on the device.
void slow_down_step(double* seconds) {
  REQUIRE(cudaLaunchHostFunc(
              static_cast<cudaStream_t>(current_stream()),
              [](void* p) { std::this_thread::sleep_for(std::chrono::duration<double>(*static_cast<double*>(p))); },
              seconds) == cudaSuccess);
}

// Run by every rank of the test below (hidden: only under mpirun). Seven steps queued and read
// back as one group (the trainer's --status-every; the capture at step 3, replays after it) give
// the bits of the same steps each read back at once. Every step sleeps 0.6 s on the device and
// the deadline is 2.5 s: the group's read-back waits over 3 s for the replays, so it passes only
// because each step's all-reduce gets the whole deadline (TrainStep::collect waits step by step).
TEST_CASE("train steps queued and read back as one group (CUDA rank)", "[.mpi_rank]") {
  collective::Communicator& comm = collective::world();
  REQUIRE(comm.size() == 2);
  constexpr int64_t kSteps = 7;
  double sleep_s = 0.6;
  const auto train = [&](bool grouped) {
    const TrainOptions o = graph_step_options(true);
    TrainStep step(graph_step_config(o), o);
    step.set_communicator(&comm);
    step.set_cuda_graphs(true);
    step.set_inside_step_for_test([&] { slow_down_step(&sleep_s); });
    std::vector<TrainStepResult> results;
    if (grouped) {
      for (int64_t s = 1; s <= kSteps; ++s) step.enqueue(s, graph_step_batch(s, comm.rank()));
      const auto t0 = std::chrono::steady_clock::now();
      results = step.collect();
      CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > comm.timeout());
    } else {
      for (int64_t s = 1; s <= kSteps; ++s) results.push_back(step.run(s, graph_step_batch(s, comm.rank())));
    }
    CHECK(step.replaying());
    GraphStepRun r;
    for (const TrainStepResult& res : results) {
      CHECK(res.non_finite.empty());
      r.losses.push_back(res.loss);
      r.norms.push_back(res.grad_norm);
    }
    for (const Tensor& p : step.parameters()) r.weights.push_back(p.to(Device::cpu));
    return r;
  };
  const GraphStepRun one_by_one = train(false);
  comm.set_timeout(2.5);
  const GraphStepRun grouped = train(true);
  INFO("rank " << comm.rank());
  REQUIRE(grouped.losses.size() == kSteps);
  CHECK(grouped.losses == one_by_one.losses);  // the global batch's losses, averaged in one collective
  CHECK(grouped.norms == one_by_one.norms);
  CHECK(same_bits(grouped.weights, one_by_one.weights));
}

TEST_CASE("CUDA ranks: train steps read back in a group give the bits of steps read one by one, each step within "
          "the deadline",
          "[cuda][mpi]") {
  DIFFUSE_TWO_CUDA_RANKS_GUARD();
  check_self_ranks_pass("train steps queued and read back as one group (CUDA rank)");
}

// Run by every rank of the test below (hidden: only under mpirun), which names the run directory
// in DIFFUSE_TEST_RUN_DIR (rank 0 writes it). Six steps read back in groups of 4; rank 0's
// callback asks to stop at step 2 (only rank 0's is called: it reports and writes the run). The
// ranks vote step by step as each group is read, rank 0's answer deciding, so every rank ends
// after step 4, the group's last, with the checkpoint of step 4: rank 1 stops by the vote alone.
TEST_CASE("a stop asked on rank 0 ends every rank after the same group (CUDA rank)", "[.mpi_rank]") {
  collective::Communicator& comm = collective::world();
  REQUIRE(comm.size() == 2);
  const char* run_dir = std::getenv("DIFFUSE_TEST_RUN_DIR");
  REQUIRE(run_dir != nullptr);
  TrainRequest t;
  t.data = "fashion-mnist";
  t.max_images = 16;
  t.config = "tiny";
  t.out = run_dir;
  t.steps = 6;
  t.batch = 2;
  t.lr = 1e-3;
  t.seed = 5;
  t.threads = 1;
  t.device = Device::cuda;
  t.status_every = 4;
  std::vector<int64_t> steps;
  const TrainSummary s = train(t, [&](const TrainUpdate& u) {
    if (!u.event.empty()) return true;
    steps.push_back(u.step);
    return u.step < 2;
  });
  INFO("rank " << comm.rank());
  CHECK(s.cancelled);
  CHECK(s.last_step == 4);
  if (comm.rank() == 0) {
    CHECK(steps == std::vector<int64_t>{1, 2, 3, 4});
    CHECK_THAT(s.checkpoint, Catch::EndsWith("step-4"));
  } else {
    CHECK(steps.empty());
  }
}

TEST_CASE("CUDA ranks: a stop on rank 0 ends every rank after the group it was read in", "[cuda][mpi]") {
  DIFFUSE_TWO_CUDA_RANKS_GUARD();
  TempDir dir;
  const std::string run = dir.file("run");
  check_self_ranks_pass("a stop asked on rank 0 ends every rank after the same group (CUDA rank)",
                        {{"DIFFUSE_TEST_RUN_DIR", run}});
  CHECK(metric(run, "loss").size() == 4);  // steps 1-4 logged, nothing after
  CHECK(std::filesystem::is_directory(run + "/checkpoints/step-4"));
  CHECK_FALSE(std::filesystem::exists(run + "/checkpoints/step-6"));
}

// Run by every rank of the test below (hidden: only under mpirun): three steps (two eager, then
// the capture and its first replay), then rank 1 stops (SIGSTOP, a hung process) and rank 0
// queues three more replays, whose graphs hold the NCCL all-reduce: their read-back as one group
// (TrainStep::collect) must end within the communicator's 5 s deadline, naming rank 1 and the
// first step it did not reach.
TEST_CASE("replayed train step with a hung rank (CUDA)", "[.mpi_rank]") {
  collective::Communicator& comm = collective::world();
  REQUIRE(comm.size() == 2);
  comm.set_timeout(5);
  const TrainOptions o = graph_step_options(true);
  TrainStep step(graph_step_config(o), o);
  step.set_communicator(&comm);
  step.set_cuda_graphs(true);
  for (int64_t s = 1; s <= 3; ++s) (void)step.run(s, graph_step_batch(s, comm.rank()));
  REQUIRE(step.replaying());
  if (comm.rank() == 1) std::raise(SIGSTOP);
  try {
    for (int64_t s = 4; s <= 6; ++s) step.enqueue(s, graph_step_batch(s, comm.rank()));
    (void)step.collect();
  } catch (const std::exception& e) {
    comm.abort(e.what());
  }
  comm.abort("the replays of steps 4 to 6 completed although rank 1 was stopped");
}

TEST_CASE("CUDA ranks: a rank that hangs while the others replay the step's graph ends the job within its deadline",
          "[cuda][mpi]") {
  DIFFUSE_TWO_CUDA_RANKS_GUARD();
  check_hung_rank_ends_job("replayed train step with a hung rank (CUDA)",
                           "rank 0 of 2: the all-reduce of the gradients of step 4 did not complete within 5 s: "
                           "rank 1 did not answer (dead or hung)");
}

// Run by every rank of the test below (hidden: only under mpirun).
TEST_CASE("gradient sync rank (CUDA)", "[.mpi_rank]") { check_gradient_sync_on_this_rank(Device::cuda); }

// The exact mean and the overlap proven on the tensors themselves, and through the trainer's
// bucket counts (two whole jobs compared bit for bit, with `--conv-search heuristic`, is the test
// above).
TEST_CASE("CUDA ranks: the all-reduce on its own stream during backward gives the exact mean and overlaps",
          "[cuda][mpi]") {
  DIFFUSE_TWO_CUDA_RANKS_GUARD();
  check_self_ranks_pass("gradient sync rank (CUDA)");
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

// Run by every rank of the test below (hidden: only under mpirun). NCCL requires a collective to
// be captured on every rank or on none; here rank 0 replays an all-reduce it captured into a
// graph while rank 1 runs the same all-reduce eagerly. The emulated NCCL refuses the pair: the
// work fails on both ranks, each saying so (on a GPU the two would not pair up at all).
TEST_CASE("an all-reduce captured on one rank only (CUDA rank)", "[.mpi_rank]") {
#if DIFFUSE_WITH_NCCL && DIFFUSE_CUDA_EMULATED
  const collective::Communicator& world = collective::world();  // initialises MPI
  const int rank = world.rank(), size = world.size();
  REQUIRE(size == 2);
  ncclUniqueId id;
  if (rank == 0) REQUIRE(ncclGetUniqueId(&id) == ncclSuccess);
  REQUIRE(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD) == MPI_SUCCESS);
  ncclComm_t comm = nullptr;
  REQUIRE(ncclCommInitRankConfig(&comm, size, id, rank, nullptr) == ncclSuccess);
  cudaStream_t s = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
  float* buf = nullptr;
  REQUIRE(cudaMalloc(&buf, 16 * sizeof(float)) == cudaSuccess);
  REQUIRE(cudaMemsetAsync(buf, 0, 16 * sizeof(float), s) == cudaSuccess);
  if (rank == 0) {
    REQUIRE(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal) == cudaSuccess);
    REQUIRE(ncclAllReduce(buf, buf, 16, ncclFloat32, ncclSum, comm, s) == ncclSuccess);
    cudaGraph_t graph = nullptr;
    REQUIRE(cudaStreamEndCapture(s, &graph) == cudaSuccess);
    cudaGraphExec_t exec = nullptr;
    REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
    REQUIRE(cudaGraphLaunch(exec, s) == cudaSuccess);
  } else {
    REQUIRE(ncclAllReduce(buf, buf, 16, ncclFloat32, ncclSum, comm, s) == ncclSuccess);
  }
  CHECK(cudaStreamSynchronize(s) == cudaErrorLaunchFailure);
#endif
}

#if DIFFUSE_CUDA_EMULATED
TEST_CASE("emulated NCCL: an all-reduce captured into a graph on one rank and run eagerly on another fails on both",
          "[cuda][mpi]") {
  DIFFUSE_TWO_CUDA_RANKS_GUARD();
  // The failed device keeps its buffer: no leak check at exit.
  const RunResult r =
      run_self_ranks(2, "an all-reduce captured on one rank only (CUDA rank)", {{"DIFFUSE_EMU_LEAK_CHECK", "0"}});
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("ncclAllReduce: 1 of 2 ranks ran it from a captured CUDA graph and the others "
                                       "eagerly (rank 0: graph)") &&
                           Catch::Contains("(rank 1: eager)"));
}
#endif
