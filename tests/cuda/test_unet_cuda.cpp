// The whole UNet on CUDA against the CPU (docs/design.md §5 item 4, §11): all three named configs
// (`tiny`, `fmnist-small`, `ddpm-cifar10`) and a class-conditional `tiny` with dropout in training
// mode; the output and the grad of weighted_sum(output) for every parameter and the input, f32
// error relative to each tensor's peak at most 1e-3 with TF32 off; the sampling path (no tape);
// the model's round trip back to the CPU. And the allocator's steady state: after one warm-up
// training step a second one makes no cudaMalloc (docs/design.md §4). Without a CUDA device each case
// says so. Inputs are the smallest that still reach every layer with something to compare: 8x8
// images (16x16 for ddpm-cifar10, whose four levels would leave its mid-block attention a single
// token), batch 1 or 2 — under the emulated device every custom kernel runs thread by thread; the
// kernels' tile and chunk paths at real sizes are the op tests' business (test_ops_cuda.cpp),
// forced there by options.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "nn/autograd.h"

#include "engine/q_sample.h"
#include "engine/noise_schedule.h"
#include "kernels/gemm.h"
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

// A config resolved by name with sample_size set to the test's image size.
UNet2DConfig config_at(const std::string& name, int size) {
  UNet2DConfig c = resolve_unet_config(name);
  c.sample_size = size;
  return c;
}

// The model on the CPU from seed 11 and, with the same weights, on CUDA: the second model is built
// from another seed, so a missed copy shows.
void build_pair(UNet2D& cpu, UNet2D& gpu) {
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
}

// Compares forward and backward of the pair on a batch of `batch` images of config.sample_size.
void check_unet(const std::string& name, UNet2DConfig config, bool training, int64_t batch = 2) {
  INFO("UNet " << name);
  kernels::cuda::set_allow_tf32(false);
  UNet2D cpu(config, 11), gpu(config, 12);
  build_pair(cpu, gpu);
  for (UNet2D* m : {&cpu, &gpu}) {
    m->set_requires_grad(true);
    m->set_training(training);
    m->set_dropout_state(77, 0);
  }

  const int64_t size = config.sample_size;
  Tensor x_cpu = Tensor::randn({batch, size, size, config.in_channels}, 5);
  Tensor x_gpu = x_cpu.to(Device::cuda);
  x_cpu.set_requires_grad(true);
  x_gpu.set_requires_grad(true);
  const Tensor t = Tensor::from(std::vector<double>{17, 803}, {2}, DType::i64).slice0(0, batch);
  Tensor labels;
  if (config.num_class_embeds)  // a class and the null class (the last embedding)
    labels = Tensor::from({3, static_cast<double>(*config.num_class_embeds - 1)}, {2}, DType::i64).slice0(0, batch);

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
  auto grad_of = [&](const std::string& param) {
    for (const auto& [n, p] : pc)
      if (n == param) return p->grad();
    return Tensor();
  };
  for (size_t i = 0; i < pc.size(); ++i) {
    INFO("grad of " << pc[i].first << " " << pc[i].second->describe());
    REQUIRE(pc[i].second->grad().defined());
    REQUIRE(pg[i].second->grad().defined());
    CHECK(pg[i].second->grad().device() == Device::cuda);
    const double err = check_param_grad(pc[i].first, pg[i].second->grad(), pc[i].second->grad(),
                                        grad_of(key_weight_of(pc[i].first)));
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
  check_unet("tiny", config_at("tiny", 8), false);
}

TEST_CASE("unet cuda: fmnist-small forward and backward match the CPU", "[cuda][unet]") {
  DIFFUSE_CUDA_TEST_GUARD();
  PoisonDeviceAllocations poison;
  check_unet("fmnist-small", config_at("fmnist-small", 8), false);
}

TEST_CASE("unet cuda: ddpm-cifar10 forward and backward match the CPU", "[cuda][unet]") {
  DIFFUSE_CUDA_TEST_GUARD();
  PoisonDeviceAllocations poison;
  // 35.7 M parameters, one 256-wide attention head, downsample padding 0: one image of 16x16,
  // not 8x8: the mid block's attention would see a single token there (1x1), where the query and
  // key grads are zero in exact arithmetic and only rounding noise is left to compare.
  check_unet("ddpm-cifar10", config_at("ddpm-cifar10", 16), false, 1);
}

TEST_CASE("unet cuda: class-conditional tiny with dropout in training mode matches the CPU", "[cuda][unet]") {
  DIFFUSE_CUDA_TEST_GUARD();
  PoisonDeviceAllocations poison;
  UNet2DConfig config = config_at("tiny", 8);
  config.num_class_embeds = 11;
  config.dropout = 0.1;
  check_unet("tiny+classes+dropout", config, true);
}

TEST_CASE("unet cuda: the sampling path (eval mode, no tape) matches the CPU", "[cuda][unet]") {
  DIFFUSE_CUDA_TEST_GUARD();
  PoisonDeviceAllocations poison;
  const UNet2DConfig config = config_at("fmnist-small", 8);
  UNet2D cpu(config, 11), gpu(config, 12);
  build_pair(cpu, gpu);
  cpu.set_training(false);
  gpu.set_training(false);
  NoGrad no_grad;
  // One timestep for the whole batch, as the samplers pass it; a float timestep.
  const Tensor x = Tensor::randn({2, 8, 8, 1}, 6);
  const Tensor t = Tensor::from({640.5}, {1}, DType::f32);
  const Tensor want = cpu.forward(x, t, Tensor());
  const Tensor got = gpu.forward(x.to(Device::cuda), t, Tensor());
  CHECK(tape_size() == 0);
  REQUIRE(got.device() == Device::cuda);
  const double err = rel_to_peak_error(got, want);
  INFO("output error " << err);
  CHECK(err <= 1e-3);
}

TEST_CASE("unet cuda: a model moved to CUDA and back keeps every weight bit for bit", "[cuda][unet]") {
  DIFFUSE_CUDA_TEST_GUARD();
  const UNet2DConfig config = config_at("tiny", 8);
  UNet2D original(config, 21), moved(config, 21);
  moved.to(Device::cuda);
  moved.to(Device::cpu);
  REQUIRE(moved.device() == Device::cpu);
  ParamList a = original.named_parameters(), b = moved.named_parameters();
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].first);
    CHECK(b[i].second->device() == Device::cpu);
    CHECK(b[i].second->to_vector() == a[i].second->to_vector());
  }
}

TEST_CASE("unet cuda: a second training step makes no cudaMalloc", "[cuda][unet][allocator]") {
  DIFFUSE_CUDA_TEST_GUARD();
  const UNet2DConfig config = config_at("tiny", 8);
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
