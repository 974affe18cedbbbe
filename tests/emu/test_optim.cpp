// The optim family under the emulator (kernels/cuda/optim.cu) against the CPU twin: several AdamW
// + EMA steps in one multi-tensor launch each over tensors of odd sizes (one spanning several
// chunks, one misaligned so it takes the scalar path, one EMA-only, one AdamW-only, one empty),
// the global sum of squares (grad norm) to 1e-6 relative, and grad scaling; a grid cap forces
// blocks to stride over chunks; every thread order runs.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <vector>

#include "emu/emu_test_helpers.h"
#include "emu/kernel_test_support.h"
#include "kernels/compat.cuh"
#include "kernels/cuda/grid_helpers.cuh"
#include "kernels/optim.h"

using namespace diffuse;
using diffuse::test::Buf;
using diffuse::test::max_rel;
using diffuse::test::randn_buf;
using diffuse::test::same_values;
using kernels::OptimEntry;
using kernels::Span;

namespace {

const auto& kOrders = diffuse::test::kAllOrders;

// One parameter tensor with its grad, moments and EMA shadow.
struct Param {
  int64_t n;
  bool has_grad, has_ema;
  Buf<float> p, g, m, v, ema;
  Param(int64_t count, int shift, bool grad, bool ema_on, uint64_t seed)
      : n(count), has_grad(grad), has_ema(ema_on), p(randn_buf(count, seed, shift)), g(randn_buf(count, seed + 1, shift)),
        m(count, shift, 0.0f), v(count, shift, 0.0f), ema(randn_buf(count, seed + 2, shift)) {}
  OptimEntry<float> entry(int64_t step, double lr, double beta1, double beta2) {
    OptimEntry<float> e;
    e.param = p.p;
    e.n = n;
    if (has_grad) {
      e.grad = g.p;
      e.exp_avg = m.p;
      e.exp_avg_sq = v.p;
      e.step_size = lr / (1.0 - std::pow(beta1, static_cast<double>(step)));
      e.bias_correction2_sqrt = std::sqrt(1.0 - std::pow(beta2, static_cast<double>(step)));
    }
    if (has_ema) e.ema = ema.p;
    return e;
  }
};

// Sizes: several chunks with an odd tail, small odd, misaligned, EMA-only, AdamW-only, empty.
std::vector<Param> make_params() {
  std::vector<Param> ps;
  ps.emplace_back(2 * kernels::kDeviceChunk + 37, 0, true, true, 10);
  ps.emplace_back(5, 0, true, true, 20);
  ps.emplace_back(0, 0, true, true, 30);
  ps.emplace_back(1001, 1, true, true, 40);
  ps.emplace_back(33, 0, false, true, 50);
  ps.emplace_back(70, 0, true, false, 60);
  return ps;
}

template <typename Entry>
kernels::MultiTensorTable<Entry> table_of(const std::vector<Entry>& entries, std::vector<int64_t>& first) {
  first = kernels::chunk_offsets(entries.data(), static_cast<int64_t>(entries.size()));
  return {entries.data(), first.data(), static_cast<int64_t>(entries.size()), first.back()};
}

}  // namespace

TEST_CASE("optim: several fused AdamW + EMA steps match the CPU twin", "[emu][optim]") {
  for (int64_t cap : {0, 2}) {
    for (emulator::ThreadOrder order : kOrders) {
      emulator::ScopedThreadOrder scoped(order);
      kernels::emu::grid::ScopedBlockCap block_cap(cap);
      INFO("cap " << cap << " order " << emulator::thread_order_name(order));
      std::vector<Param> cpu = make_params(), dev = make_params();
      kernels::AdamWHyper h;
      h.beta1 = 0.9, h.beta2 = 0.999, h.eps = 1e-8, h.weight_decay = 0.01;
      for (int64_t step = 1; step <= 4; ++step) {
        h.lr = 1e-3 * static_cast<double>(step);  // a schedule: each step its own rate
        h.ema_decay = (1.0 + static_cast<double>(step)) / (10.0 + static_cast<double>(step));
        std::vector<OptimEntry<float>> ce, de;
        for (size_t i = 0; i < cpu.size(); ++i) {
          ce.push_back(cpu[i].entry(step, h.lr, h.beta1, h.beta2));
          de.push_back(dev[i].entry(step, h.lr, h.beta1, h.beta2));
        }
        kernels::cpu::adamw_ema_step<float>(h, ce.data(), static_cast<int64_t>(ce.size()));
        std::vector<int64_t> first;
        kernels::emu::adamw_ema_step(h, table_of(de, first), nullptr);
        for (size_t i = 0; i < cpu.size(); ++i) {
          const Param &c = cpu[i], &d = dev[i];
          INFO("step " << step << " tensor " << i << " n " << c.n);
          CHECK(max_rel(d.p.p, c.p.p, c.n) < 1e-6);
          CHECK(max_rel(d.m.p, c.m.p, c.n) < 1e-6);
          CHECK(max_rel(d.v.p, c.v.p, c.n) < 1e-6);
          CHECK(max_rel(d.ema.p, c.ema.p, c.n) < 1e-6);
          CHECK(d.p.guard_intact());
        }
      }
      // The EMA-only tensor's parameter and the AdamW-only tensor's shadow never change.
      const std::vector<Param> fresh = make_params();
      CHECK(same_values(dev[4].p.p, fresh[4].p.p, dev[4].n));
      CHECK(same_values(dev[5].ema.p, fresh[5].ema.p, dev[5].n));
      CHECK(!same_values(dev[0].p.p, fresh[0].p.p, dev[0].n));
    }
  }
}

TEST_CASE("optim: the sum of squares matches the CPU twin to 1e-6 and grad scaling is exact", "[emu][optim]") {
  std::vector<Buf<float>> grads;
  for (auto [n, shift] : std::vector<std::pair<int64_t, int>>{{2 * kernels::kDeviceChunk + 37, 0}, {5, 0}, {0, 0}, {1001, 1}, {70, 0}})
    grads.push_back(randn_buf(n, 100 + n, shift));
  std::vector<Span<const float>> cspans;
  std::vector<Span<float>> mspans;
  for (auto& g : grads) {
    cspans.push_back({g.p, g.n});
    mspans.push_back({g.p, g.n});
  }
  const double want = kernels::cpu::sum_of_squares<float>(cspans.data(), static_cast<int64_t>(cspans.size()));
  for (int64_t cap : {0, 1})
    for (emulator::ThreadOrder order : kOrders) {
      emulator::ScopedThreadOrder scoped(order);
      kernels::emu::grid::ScopedBlockCap block_cap(cap);
      INFO("cap " << cap << " order " << emulator::thread_order_name(order));
      std::vector<int64_t> first;
      auto table = table_of(cspans, first);
      Buf<double> partials(table.chunks), out(1);
      kernels::emu::sum_of_squares(table, partials.p, out.p, nullptr);
      CHECK(std::fabs(out.p[0] - want) <= 1e-6 * want);
      CHECK(out.p[0] == out.p[0]);
    }
  // Scaling: every element times the f32 factor, like the twin.
  std::vector<std::vector<float>> want_scaled;
  for (auto& g : grads) {
    want_scaled.emplace_back(g.p, g.p + g.n);
    for (float& x : want_scaled.back()) x *= static_cast<float>(0.37);
  }
  std::vector<int64_t> first;
  kernels::emu::scale_all(table_of(mspans, first), 0.37, nullptr);
  for (size_t i = 0; i < grads.size(); ++i) CHECK(same_values(grads[i].p, want_scaled[i].data(), grads[i].n));
}

TEST_CASE("optim: an empty table is a no-op and its sum of squares is zero", "[emu][optim]") {
  kernels::MultiTensorTable<Span<const float>> empty;
  Buf<double> out(1);
  kernels::emu::sum_of_squares(empty, nullptr, out.p, nullptr);
  CHECK(out.p[0] == 0.0);
  kernels::emu::adamw_ema_step(kernels::AdamWHyper{}, kernels::MultiTensorTable<OptimEntry<float>>{}, nullptr);
  kernels::MultiTensorTable<Span<const float>> bad;
  bad.chunks = 3;
  CHECK_THROWS_AS(kernels::emu::sum_of_squares(bad, out.p, out.p, nullptr), Error);
}
