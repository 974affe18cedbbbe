// The whole UNet on CUDA against the CPU (DESIGN.md §5 item 4, §11): `tiny`, `fmnist-small` and a
// class-conditional `tiny` with dropout in training mode, batch 2; the output and the grad of
// weighted_sum(output) for every parameter and the input, f32 error relative to each tensor's
// peak at most 1e-3 with TF32 off. And the allocator's steady state: after one warm-up training
// step a second one makes no cudaMalloc (DESIGN.md §4). Without a CUDA device each case says so.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "engine/q_sample.h"
#include "engine/schedule.h"
#include "nn/cuda/blas.h"
#include "nn/cuda/caching_allocator.h"
#include "nn/device_context.h"
#include "nn/ops.h"
#include "nn/optim.h"
#include "nn/unet2d.h"
#include "support/cuda_compare.h"
#include "support/cuda_guard.h"

using namespace diffuse;
using namespace diffuse::test;

namespace {

// Builds the model on the CPU from `seed`, clones its weights into a second model (built from
// another seed, so a missed copy shows) moved to CUDA, and compares forward and backward.
void check_unet(const std::string& name, UNet2DConfig config, bool training) {
  INFO("UNet " << name);
  cuda::set_allow_tf32(false);
  UNet2D cpu(config, 11), gpu(config, 12);
  {
    ParamList from = cpu.named_parameters(), to = gpu.named_parameters();
    REQUIRE(from.size() == to.size());
    for (size_t i = 0; i < from.size(); ++i) {
      REQUIRE(from[i].first == to[i].first);
      to[i].second->copy_from(*from[i].second);
    }
  }
  gpu.to(Device::cuda);
  REQUIRE(gpu.device() == Device::cuda);
  for (UNet2D* m : {&cpu, &gpu}) {
    m->set_requires_grad(true);
    m->set_training(training);
    m->set_dropout_state(77, 0);
  }

  const int64_t size = config.sample_size;
  Tensor x_cpu = Tensor::randn({2, size, size, config.in_channels}, 5);
  Tensor x_gpu = x_cpu.to(Device::cuda);
  x_cpu.set_requires_grad(true);
  x_gpu.set_requires_grad(true);
  const Tensor t = Tensor::from({17, 803}, {2}, DType::i64);
  Tensor labels;
  if (config.num_class_embeds)  // a class and the null class (the last embedding)
    labels = Tensor::from({3, static_cast<double>(*config.num_class_embeds - 1)}, {2}, DType::i64);

  // Each backward right after its forward: a backward consumes the whole (shared) tape.
  const Tensor want = cpu.forward(x_cpu, t, labels);
  weighted_sum(want, 99).backward();
  const Tensor got = gpu.forward(x_gpu, t, labels.defined() ? labels.to(Device::cuda) : labels);
  weighted_sum(got, 99).backward();
  REQUIRE(got.device() == Device::cuda);
  REQUIRE(got.shape() == want.shape());
  CHECK(gpu.dropout_offset() == cpu.dropout_offset());
  if (training && config.dropout > 0) CHECK(cpu.dropout_offset() > 0);  // masks were drawn
  const double out_err = rel_to_peak_error(got, want);
  INFO("output error " << out_err);
  CHECK(out_err <= 1e-3);

  ParamList pc = cpu.named_parameters(), pg = gpu.named_parameters();
  REQUIRE(pc.size() == pg.size());
  double worst = 0;
  std::string worst_name;
  for (size_t i = 0; i < pc.size(); ++i) {
    INFO("grad of " << pc[i].first << " " << pc[i].second->describe());
    REQUIRE(pc[i].second->grad().defined());
    REQUIRE(pg[i].second->grad().defined());
    CHECK(pg[i].second->grad().device() == Device::cuda);
    const double err = rel_to_peak_error(pg[i].second->grad(), pc[i].second->grad());
    CHECK(err <= 1e-3);
    if (worst_name.empty() || !(err <= worst)) {
      worst = err;
      worst_name = pc[i].first;
    }
  }
  const double x_err = rel_to_peak_error(x_gpu.grad(), x_cpu.grad());
  CHECK(x_err <= 1e-3);
  WARN(name << ": output error " << out_err << ", input grad error " << x_err << ", worst parameter grad error "
            << worst << " (" << worst_name << ") over " << pc.size() << " parameters");
}

}  // namespace

TEST_CASE("unet cuda: tiny forward and backward match the CPU", "[cuda][unet]") {
  DIFFUSE_CUDA_TEST_GUARD();
  PoisonDeviceAllocations poison;
  check_unet("tiny", resolve_unet_config("tiny"), false);
}

TEST_CASE("unet cuda: fmnist-small forward and backward match the CPU", "[cuda][unet]") {
  DIFFUSE_CUDA_TEST_GUARD();
  PoisonDeviceAllocations poison;
  check_unet("fmnist-small", resolve_unet_config("fmnist-small"), false);
}

TEST_CASE("unet cuda: class-conditional tiny with dropout in training mode matches the CPU", "[cuda][unet]") {
  DIFFUSE_CUDA_TEST_GUARD();
  PoisonDeviceAllocations poison;
  UNet2DConfig config = resolve_unet_config("tiny");
  config.num_class_embeds = 11;
  config.dropout = 0.1;
  check_unet("tiny+classes+dropout", config, true);
}

TEST_CASE("unet cuda: a second training step makes no cudaMalloc", "[cuda][unet][allocator]") {
  DIFFUSE_CUDA_TEST_GUARD();
  const UNet2DConfig config = resolve_unet_config("tiny");
  UNet2D model(config, 3);
  model.to(Device::cuda);
  model.set_requires_grad(true);
  model.set_training(true);
  std::vector<Tensor> params = model.parameters();
  optim::AdamW adam(params, {});
  optim::EMA ema(params, {});
  const NoiseSchedule schedule;
  // What the trainer does per step: q_sample on the device, forward, MSE, backward, clipping,
  // AdamW with the fused EMA; everything the step allocates is released before the next.
  auto step = [&](int k) {
    const std::vector<int64_t> timesteps = {static_cast<int64_t>(100 * k + 7), static_cast<int64_t>(900 - k)};
    const Tensor x0 = Tensor::randn({2, config.sample_size, config.sample_size, config.in_channels}, 40 + k);
    const QSampleResult q = q_sample(x0.to(Device::cuda), schedule.q_sample_coefs(timesteps),
                                     PredictionType::epsilon, 9, static_cast<uint64_t>(k) << 20);
    const Tensor t = Tensor::from({static_cast<double>(timesteps[0]), static_cast<double>(timesteps[1])}, {2},
                                  DType::i64);
    Tensor loss = ops::mse_loss(model.forward(q.x_t, t), q.target);
    loss.backward();
    optim::clip_grad_norm(params, 1.0);
    adam.step(1e-4, &ema);
    adam.zero_grad();
    const double value = loss.item();
    synchronize_device();
    return value;
  };
  const double first = step(1);
  const cuda::AllocatorStats before = cuda::allocator_stats();
  const double second = step(2);
  const cuda::AllocatorStats after = cuda::allocator_stats();
  INFO("losses " << first << ", " << second << "; cudaMalloc calls " << before.cuda_mallocs << " -> "
                 << after.cuda_mallocs << "; allocations " << before.allocations << " -> " << after.allocations);
  CHECK(std::isfinite(first));
  CHECK(std::isfinite(second));
  CHECK(after.allocations > before.allocations);  // the step did allocate, from the cache
  CHECK(after.cuda_mallocs == before.cuda_mallocs);
  CHECK(after.allocated_bytes == before.allocated_bytes);  // nothing the step made outlives it
}
