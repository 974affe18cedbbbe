// Data-parallel training on CUDA ranks (docs/distributed.md), the NCCL path: two ranks at
// --batch 2 with --device cuda train the same model as one process at --batch 4, and rank 0 alone
// writes the run. In the -DDIFFUSE_CUDA=EMULATED build every rank process has its own emulated
// device and the NCCL calls are served by kernels/emulated_device/nccl.cpp over MPI, so this runs
// in CI; on a real machine it needs two GPUs (NCCL refuses two ranks on one GPU). Steps are few
// and batches small: under the emulated device every custom kernel runs thread by thread.
#include <catch2/catch.hpp>

#include "mpi/distributed_run.h"
#include "support/cuda_guard.h"
#include "support/temp_dir.h"

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

TEST_CASE("two CUDA ranks at batch 2 (NCCL) train like one process at batch 4", "[cuda][mpi]") {
  DIFFUSE_CUDA_TEST_GUARD();
  DIFFUSE_MPI_TEST_GUARD();
#if !DIFFUSE_CUDA_EMULATED
  if (cuda_device_count() < 2) {
    WARN("skipped: two CUDA ranks need two GPUs (NCCL refuses two ranks on one GPU)");
    return;
  }
#endif
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
