// Data-parallel training on CPU ranks (docs/distributed.md), through mpirun and the CLI: two ranks
// at --batch 8 train the same model as one process at --batch 16 (same loss curve and weights up
// to float summation order), rank 0 alone writes the run, a 2-rank run resumes with 1 rank on
// the same curve, and a rank that hangs or dies ends the job within 60 s naming it; the gradient
// all-reduce overlapped with backward (collective::GradientSync) gives the exact mean, changes no
// bit of a run, starts buckets during backward, and gives up on a hung rank by its deadline. Tagged
// [slow]: several short training runs (about a minute), and Open MPI's own allocations at exit
// would be reported by the sanitizer flavour's leak checker, which runs the cpu label only.
#include <catch2/catch.hpp>

#include <filesystem>

#include "mpi/distributed_run.h"
#include "support/metrics.h"
#include "support/temp_dir.h"

using namespace diffuse;
using namespace diffuse::test;

namespace {

// Tolerances, from the arithmetic: the ranks sum their shards' gradients (and the loss) in
// another order than one process summing the whole batch, an f32 rounding difference (~1e-7
// relative) per step that AdamW carries into the weights. Measured over these 20 steps: loss
// within 1.4e-7 and gradient norm within 1.4e-6 relative, weights (largest |w| 1.01) within
// 7.3e-6 absolute, the EMA weights within 5.7e-6. The bounds below are over 10x that; a wrong
// shard (another example, timestep or noise) moves the step-1 loss by percents.
constexpr double kCurveTolerance = 2e-5;
constexpr double kWeightTolerance = 1e-4;

const char* const kWeights = "/checkpoints/step-20/model/unet/diffusion_pytorch_model.safetensors";
const char* const kEmaWeights = "/checkpoints/step-20/ema/unet/diffusion_pytorch_model.safetensors";

std::vector<std::string> tiny_run(const std::string& out, int batch, int steps) {
  return {"train", "--data", "fashion-mnist", "--max-images", "96", "--config", "tiny", "--out", out,
          "--steps", std::to_string(steps), "--batch", std::to_string(batch), "--lr", "1e-3", "--seed", "3",
          "--threads", "1", "--log-every", "5"};
}

void check_same_curve(const std::string& a, const std::string& b) {
  for (const char* field : {"loss", "grad_norm", "lr"}) {
    INFO(field);
    CHECK(max_relative_difference(metric(a, field), metric(b, field), 1e-3) < kCurveTolerance);
  }
}

}  // namespace

TEST_CASE("two ranks at batch 8 train like one process at batch 16", "[mpi][slow]") {
  DIFFUSE_MPI_TEST_GUARD();
  TempDir dir;
  const std::string one = dir.file("one"), two = dir.file("two");
  require_ok(run_cli(tiny_run(one, 16, 20)), "one process at batch 16");
  const RunResult r2 = run_cli_ranks(2, tiny_run(two, 8, 20));
  require_ok(r2, "two ranks at batch 8");

  REQUIRE(metric(two, "loss").size() == 20);
  check_same_curve(one, two);
  CHECK(max_weight_difference(one + kWeights, two + kWeights) < kWeightTolerance);
  CHECK(max_weight_difference(one + kEmaWeights, two + kEmaWeights) < kWeightTolerance);
  // Rank 0 alone wrote: the same files as one process, and config.json holds the global batch.
  CHECK(run_files(one) == run_files(two));
  const auto config = nlohmann::json::parse(slurp(two + "/config.json"));
  CHECK(config.at("train").at("batch") == 16);
  // One progress display: rank 1 prints nothing of its own.
  CHECK(r2.output.find("train finished") == r2.output.rfind("train finished"));
}

// Run by every rank of the test below (hidden: only under mpirun).
TEST_CASE("gradient sync rank (CPU)", "[.mpi_rank]") { check_gradient_sync_on_this_rank(Device::cpu); }

TEST_CASE("the bucketed all-reduce during backward gives the exact mean as after backward", "[mpi][slow]") {
  DIFFUSE_MPI_TEST_GUARD();
  check_self_ranks_pass("gradient sync rank (CPU)");
}

TEST_CASE("gradient sync with a hung rank (CPU)", "[.mpi_rank]") { hang_rank_1_during_gradient_sync(Device::cpu); }

// Deterministically the gradient all-reduce's deadline (the kill test below may stop rank 1
// anywhere): rank 0 waits for its MPI_Iallreduce.
TEST_CASE("a hung rank ends the gradient all-reduce within its deadline", "[mpi][slow]") {
  DIFFUSE_MPI_TEST_GUARD();
  check_hung_rank_ends_gradient_sync("gradient sync with a hung rank (CPU)");
}

TEST_CASE("the gradient all-reduce overlapped with backward changes no bit and overlaps", "[mpi][slow]") {
  DIFFUSE_MPI_TEST_GUARD();
  TempDir dir;
  check_overlap_changes_no_bit(dir.path().string(), [](const std::string& out) { return tiny_run(out, 4, 3); },
                               "/checkpoints/step-3/model/unet/diffusion_pytorch_model.safetensors");
  // tiny's 2.8 MB of gradients in 64 KiB buckets: many, and started while backward runs.
  const std::vector<std::string> bench = {"--config", "tiny", "--batch", "2", "--warmup", "1", "--iters", "1",
                                          "--threads", "1"};
  const auto overlapped = bench_two_ranks(dir.file("overlapped.json"), bench, {{"DIFFUSE_GRAD_BUCKET_MB", "0.0625"}});
  CHECK(overlapped.at("allreduce_buckets").get<double>() > 10);
  CHECK(overlapped.at("allreduce_buckets_during_backward").get<double>() > 0);
  const auto plain = bench_two_ranks(dir.file("plain.json"), bench, {{"DIFFUSE_GRAD_OVERLAP", "0"}});
  CHECK(plain.at("allreduce_buckets").get<double>() == 1);
  CHECK(plain.at("allreduce_buckets_during_backward").get<double>() == 0);
}

TEST_CASE("a 2-rank run resumed with 1 rank continues the same curve", "[mpi][slow]") {
  DIFFUSE_MPI_TEST_GUARD();
  TempDir dir;
  const std::string straight = dir.file("straight"), resumed = dir.file("resumed");
  require_ok(run_cli(tiny_run(straight, 16, 20)), "one process at batch 16");
  require_ok(run_cli_ranks(2, tiny_run(resumed, 8, 10)), "two ranks at batch 8 to step 10");

  // The run's global batch is 16: one rank at --batch 8 is refused, naming the global batch.
  auto args = tiny_run(resumed, 8, 20);
  args.push_back("--resume");
  auto refused = run_cli(args);
  CHECK(refused.exit_code == 2);
  CHECK_THAT(refused.output, Catch::Contains("--batch 8 differs from the run's 16"));
  // Without --batch the one rank takes the whole global batch.
  require_ok(run_cli({"train", "--out", resumed, "--steps", "20", "--resume", "--threads", "1"}),
             "one process resuming to step 20");
  REQUIRE(metric(resumed, "loss").size() == 20);
  check_same_curve(straight, resumed);
  CHECK(max_weight_difference(straight + kWeights, resumed + kWeights) < kWeightTolerance);
}

TEST_CASE("a rank that hangs or dies ends the job within 60 s, naming the rank", "[mpi][slow]") {
  DIFFUSE_MPI_TEST_GUARD();
  TempDir dir;
  const std::vector<std::string> data = {"--data", "fashion-mnist", "--max-images", "96", "--config", "tiny",
                                         "--batch", "4", "--log-every", "1"};
  SECTION("hung (SIGSTOP): rank 0's deadline passes and it names rank 1") {
    check_rank_kill_ends_job(dir.file("run-stop"), "STOP", data, "rank 1 did not answer (dead or hung)");
  }
  SECTION("dead (SIGKILL): mpirun ends the job and names rank 1") {
    check_rank_kill_ends_job(dir.file("run-kill"), "KILL", data, "process rank 1");
  }
}
