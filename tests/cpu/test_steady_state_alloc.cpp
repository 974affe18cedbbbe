// A steady-state training step and sampling step allocate nothing on the heap (issue 12, item 4):
// from the third step on, TrainStep::run (q_sample, UNet forward, loss, backward, clipping,
// AdamW + EMA, zero_grad) and one Sampler::sample step with the UNet denoiser must find every
// block they need in the caches of the first two.
//
// What is counted, on every thread while a step runs: each call of the global operator new /
// new[] in all their forms (plain, nothrow, aligned, aligned nothrow), which this file replaces
// for the whole test_cpu binary (counting only while `g_counting` is set), plus the blocks the
// host allocator (nn/allocator.h) took from the C library and the blocks the object pool
// (nn/object_pool.h) took from operator new. malloc calls made inside C libraries (libgomp's and
// OpenBLAS's own bookkeeping) are not seen.
#include <catch2/catch.hpp>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>
#include <algorithm>

#include "engine/train_step.h"
#include "engine/sampler.h"
#include "engine/unet_denoiser.h"
#include "kernels/philox.h"
#include "nn/allocator.h"
#include "nn/object_pool.h"

namespace {

std::atomic<bool> g_counting{false};
std::atomic<uint64_t> g_new_calls{0};

void* counted_new(size_t bytes, size_t align, bool nothrow) {
  if (g_counting.load(std::memory_order_relaxed)) g_new_calls.fetch_add(1, std::memory_order_relaxed);
  if (bytes == 0) bytes = 1;
  void* p = align > alignof(std::max_align_t) ? std::aligned_alloc(align, (bytes + align - 1) / align * align)
                                                : std::malloc(bytes);
  if (!p && !nothrow) throw std::bad_alloc();
  return p;
}

}  // namespace

void* operator new(size_t n) { return counted_new(n, 0, false); }
void* operator new[](size_t n) { return counted_new(n, 0, false); }
void* operator new(size_t n, const std::nothrow_t&) noexcept { return counted_new(n, 0, true); }
void* operator new[](size_t n, const std::nothrow_t&) noexcept { return counted_new(n, 0, true); }
void* operator new(size_t n, std::align_val_t a) { return counted_new(n, static_cast<size_t>(a), false); }
void* operator new[](size_t n, std::align_val_t a) { return counted_new(n, static_cast<size_t>(a), false); }
void* operator new(size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return counted_new(n, static_cast<size_t>(a), true);
}
void* operator new[](size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return counted_new(n, static_cast<size_t>(a), true);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }

using namespace diffuse;

namespace {

struct AllocationCount {
  uint64_t operator_new = 0;
  uint64_t host_blocks = 0;  // host allocator cache misses
  uint64_t pool_blocks = 0;  // object pool misses (also seen by operator new)
};

// Counts what `fn` allocates, on every thread.
template <typename Fn>
AllocationCount count_allocations(Fn&& fn) {
  const uint64_t host0 = host_memory_stats().system_allocations, pool0 = object_pool_stats().operator_new_calls;
  g_new_calls = 0;
  g_counting = true;
  fn();
  g_counting = false;
  return {g_new_calls.load(), host_memory_stats().system_allocations - host0,
          object_pool_stats().operator_new_calls - pool0};
}

void require_none(const AllocationCount& c) {
  INFO("operator new calls " << c.operator_new << ", host allocator misses " << c.host_blocks
                             << ", object pool misses " << c.pool_blocks);
  REQUIRE(c.operator_new == 0);
  REQUIRE(c.host_blocks == 0);
  REQUIRE(c.pool_blocks == 0);
}

Batch make_batch(int64_t classes, int64_t n, int64_t size) {
  Batch b;
  b.images = Tensor::randn({n, size, size, 1}, 11);
  if (classes > 0) {
    std::vector<double> labels;
    for (int64_t i = 0; i < n; ++i) labels.push_back(static_cast<double>(1 + 2 * (i % 2)));
    b.labels = Tensor::from(labels, {n}, DType::i64);
  }
  return b;
}

void check_training_steps(TrainOptions o, int64_t n = 2, int64_t size = 16) {
  o.config = "tiny";
  o.lr = 1e-3;
  o.steps = 10;
  o.seed = 5;
  TrainStep step(training_unet_config(o), o);
  const Batch batch = make_batch(o.classes, n, size);
  for (int64_t s = 1; s <= 4; ++s) {
    TrainStepResult r;
    AllocationCount c = count_allocations([&] { r = step.run(s, batch); });
    REQUIRE(r.non_finite.empty());
    if (s >= 3) require_none(c);
  }
}

}  // namespace

TEST_CASE("a steady-state training step allocates nothing", "[alloc]") {
  SECTION("plain, with gradient clipping") { check_training_steps(TrainOptions{}); }
  SECTION("class-conditional with label dropout, min-SNR weights, v-prediction, weight decay") {
    TrainOptions o;
    o.classes = 4;
    o.p_uncond = 0.5;
    o.snr_gamma = 5;
    o.prediction = "v_prediction";
    o.weight_decay = 0.01;
    check_training_steps(o);
  }
  // The benchmark's shape (bench train's default: batch 32 of 32x32): a step's blocks span many
  // more size classes, and the forward's and the backward's are not the same ones.
  SECTION("tiny at batch 32 of 32x32") { check_training_steps(TrainOptions{}, 32, 32); }
}

TEST_CASE("a steady-state sampling step allocates nothing", "[alloc]") {
  UNet2DConfig cfg = resolve_unet_config("tiny");
  cfg.num_class_embeds = 3;
  UNet2D model(cfg, 7);
  for (SamplerKind kind : {SamplerKind::ddpm, SamplerKind::ddim, SamplerKind::dpmpp_2m}) {
    for (bool guided : {false, true}) {
      INFO(sampler_kind_name(kind) << (guided ? ", guided" : ""));
      SchedulerConfig config;
      config.kind = kind;
      Sampler sampler(config, 6);
      SampleOptions opt;
      opt.seed = 2;
      if (guided) opt.guidance = 2.0;
      const Tensor labels = guided ? Tensor::from({2, 2, 0, 1}, {4}, DType::i64) : Tensor::from({0, 1}, {2}, DType::i64);
      Sampler::ModelFn denoise = unet_denoiser(model, labels, guided);
      const Tensor x_T = Sampler::initial_noise({2, 16, 16, 1}, 9);
      // Each step's count is what ran between two on_step calls: the model, then the update.
      std::vector<uint64_t> new_calls, host_blocks, pool_blocks;
      new_calls.reserve(8), host_blocks.reserve(8), pool_blocks.reserve(8);
      auto snapshot = [&] {
        new_calls.push_back(g_new_calls.load());
        host_blocks.push_back(host_memory_stats().system_allocations);
        pool_blocks.push_back(object_pool_stats().operator_new_calls);
      };
      g_new_calls = 0;
      snapshot();
      g_counting = true;
      sampler.sample(denoise, x_T, opt, [&](int64_t, int64_t, const Tensor&, const Tensor&) {
        g_counting = false;
        snapshot();
        g_counting = true;
        return true;
      });
      g_counting = false;
      REQUIRE(new_calls.size() == 7);
      for (size_t i = 3; i < new_calls.size(); ++i) {  // entry i ends step i - 1: steps 3 to 6
        INFO("step " << i);
        require_none({new_calls[i] - new_calls[i - 1], host_blocks[i] - host_blocks[i - 1],
                      pool_blocks[i] - pool_blocks[i - 1]});
      }
    }
  }
}

// The host cache is process-wide and bounded (twice the most ever in use). When an earlier
// workload's blocks fill it (an embedder that trains one model and then samples another; this
// binary running one case after another: the training case above missed 57 times a step after
// the torch-parity case had run in the same process), the blocks in use now must displace them,
// not be refused every step. Block sizes scale with the process's high-water mark so far, so the
// earlier workloads here always fill the whole budget, whatever ran before this case.
TEST_CASE("the host cache makes room for the blocks in use by dropping a finished workload's", "[alloc]") {
  release_cached_host_memory();
  Allocator& host = host_allocator();
  const size_t mib = size_t{1} << 20;
  const size_t blocks = std::max<size_t>(4, host_memory_stats().peak_bytes_in_use / (8 * mib) + 1);
  // Three size classes (eight per power of two above 64 KiB): two finished workloads, then the
  // one running now. Blocks are never touched, so their pages are never made resident.
  auto run = [&](size_t bytes) {
    std::vector<void*> held;
    for (size_t i = 0; i < blocks; ++i) held.push_back(host.allocate(bytes));
    for (void* p : held) host.deallocate(p, bytes);
  };
  run(8 * mib);  // the high-water mark becomes blocks · 8 MiB or more; the budget twice it
  run(9 * mib);
  run(9 * mib);  // both finished workloads cached: the budget is (nearly) full
  const HostMemoryStats full = host_memory_stats();
  CHECK(full.bytes_cached > full.peak_bytes_in_use);
  run(10 * mib);  // the first step of the new workload misses, and its blocks must stay
  const uint64_t misses = host_memory_stats().system_allocations;
  for (int step = 0; step < 3; ++step) run(10 * mib);
  const HostMemoryStats after = host_memory_stats();
  CHECK(after.system_allocations == misses);  // steady: every block from the cache
  CHECK(after.bytes_cached <= 2 * after.peak_bytes_in_use);
  release_cached_host_memory();
  CHECK(host_memory_stats().bytes_cached == 0);
}
