// The loss family under the emulator (kernels/cuda/loss.cu) against the CPU twin: dropout must
// draw the CPU's Philox mask exactly (same elements dropped, same scaled values), the weighted MSE
// loss through its two-stage sum (one and several splits per item, float4 and scalar paths) and
// its backward with the upstream grad read from memory; dropout's bf16 launcher (the twin's f32
// result rounded, bit for bit); grid caps force grid-stride loops, every thread order runs,
// outputs are NaN-poisoned.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>

#include "emu/emu_test_helpers.h"
#include "emu/kernel_test_support.h"
#include "kernels/compat.cuh"
#include "kernels/cuda/grid_helpers.cuh"
#include "kernels/loss.h"

using namespace diffuse;
using diffuse::test::Bf16Buf;
using diffuse::test::Buf;
using diffuse::test::max_rel;
using diffuse::test::randn_buf;
using diffuse::test::same_as_rounded;
using diffuse::test::same_values;

namespace {

const auto& kOrders = diffuse::test::kAllOrders;

void check_dropout(int64_t n, float p, uint64_t offset, int shift, int64_t cap) {
  kernels::DropoutDesc d;
  d.n = n;
  d.p = p;
  d.scale = 1.0 / (1.0 - p);
  d.seed = 0x5eedf00dull;
  d.offset = offset;
  Buf<float> x = randn_buf(n, 1, shift), want(n);
  kernels::cpu::dropout_apply<float>(d, x.p, want.p);
  int64_t dropped = 0;
  for (int64_t i = 0; i < n; ++i) dropped += want.p[i] == 0.0f;
  if (n >= 600) CHECK(std::fabs(double(dropped) / double(n) - p) < 0.08);  // the twin really drops ~p
  // The bf16 launcher on x rounded to bf16: the twin's f32 result on those values, rounded.
  const Bf16Buf x16(x.p, n, shift);
  const Buf<float> wx16 = x16.widened();
  Buf<float> want16(n);
  kernels::cpu::dropout_apply<float>(d, wx16.p, want16.p);
  for (emulator::ThreadOrder order : kOrders) {
    emulator::ScopedThreadOrder scoped(order);
    kernels::emu::grid::ScopedBlockCap block_cap(cap);
    INFO("n " << n << " p " << p << " offset " << offset << " shift " << shift << " cap " << cap << " order "
              << emulator::thread_order_name(order));
    Buf<float> y(n, shift);
    kernels::emu::dropout_apply(d, x.p, y.p, nullptr);
    CHECK(same_values(y.p, want.p, n));
    CHECK(y.guard_intact());
    Bf16Buf y16(n, shift);
    kernels::emu::dropout_apply(d, x16.p, y16.p, nullptr);
    CHECK(same_as_rounded(y16.p, want16.p, n));
    CHECK(y16.guard_intact());
  }
}

void check_mse(int64_t batch, int64_t per_item, bool weighted, int shift, int64_t cap) {
  kernels::MseDesc d{batch, per_item};
  const int64_t n = batch * per_item;
  Buf<float> pred = randn_buf(n, 2, shift), target = randn_buf(n, 3, shift), w(batch);
  for (int64_t b = 0; b < batch; ++b) w.p[b] = 0.25f + 0.5f * static_cast<float>(b);
  const float* wp = weighted ? w.p : nullptr;
  const double scale = n ? 1.0 / static_cast<double>(n) : 0.0;
  const float want_loss = static_cast<float>(kernels::cpu::mse_weighted_sum<float>(d, pred.p, target.p, wp) * scale);
  const float upstream = -0.7f;
  const double coef = 2.0 * scale;
  Buf<float> want_g(n);
  kernels::cpu::mse_backward<float>(d, coef * static_cast<double>(upstream), pred.p, target.p, wp, want_g.p);
  Buf<float> want_g1(n);
  kernels::cpu::mse_backward<float>(d, coef, pred.p, target.p, wp, want_g1.p);
  const int64_t ws = kernels::emu::mse_loss_workspace(d);
  for (emulator::ThreadOrder order : kOrders) {
    emulator::ScopedThreadOrder scoped(order);
    kernels::emu::grid::ScopedBlockCap block_cap(cap);
    INFO("batch " << batch << " per_item " << per_item << " weighted " << weighted << " shift " << shift << " cap "
                  << cap << " workspace " << ws << " order " << emulator::thread_order_name(order));
    Buf<float> loss(1), g(n, shift), g1(n, shift);
    Buf<double> workspace(ws);
    kernels::emu::mse_loss(d, scale, pred.p, target.p, wp, loss.p, workspace.p, nullptr);
    CHECK(max_rel(loss.p, &want_loss, 1) < 1e-5);
    kernels::emu::mse_backward(d, coef, &upstream, pred.p, target.p, wp, g.p, nullptr);
    kernels::emu::mse_backward(d, coef, nullptr, pred.p, target.p, wp, g1.p, nullptr);
    CHECK(same_values(g.p, want_g.p, n));  // the twin's f64 coefficient, then one f32 product
    CHECK(same_values(g1.p, want_g1.p, n));
    CHECK((g.guard_intact() && g1.guard_intact()));
  }
}

}  // namespace

TEST_CASE("loss: dropout reproduces the CPU twin's Philox mask exactly", "[emu][loss]") {
  for (int shift : {0, 1})
    for (float p : {0.1f, 0.5f}) {
      check_dropout(3 * 5 * 7 * 6, p, 0, shift, 0);
      check_dropout(1283, p, 17, shift, 0);
    }
  for (int64_t n : {1, 2, 3, 5}) check_dropout(n, 0.5f, 3, 0, 0);  // a partial Philox quad
  check_dropout(3001, 0.3f, 9, 0, 1);                               // several grid-stride passes
  check_dropout(3001, 0.3f, 9, 1, 2);
}

TEST_CASE("loss: weighted MSE and its backward match the CPU twin", "[emu][loss]") {
  for (bool weighted : {false, true})
    for (int shift : {0, 1}) {
      check_mse(3, 5 * 7 * 6, weighted, shift, 0);  // odd per-item size
      check_mse(3, 4 * 7 * 8, weighted, shift, 0);  // float4
      check_mse(2, 40000, weighted, shift, 0);      // several splits per item
    }
  check_mse(1, 1, true, 0, 0);
  check_mse(5, 3001, true, 0, 1);  // one block strides over every (item, split) and every column
  check_mse(2, 40000, false, 0, 2);
}

TEST_CASE("loss: an empty MSE is zero and a workspace is required otherwise", "[emu][loss]") {
  kernels::MseDesc empty{0, 5};
  Buf<float> loss(1);
  kernels::emu::mse_loss(empty, 1.0, nullptr, nullptr, nullptr, loss.p, nullptr, nullptr);
  CHECK(loss.p[0] == 0.0f);
  kernels::MseDesc d{2, 6};
  Buf<float> x = randn_buf(12, 1);
  CHECK_THROWS_AS(kernels::emu::mse_loss(d, 1.0, x.p, x.p, nullptr, loss.p, nullptr, nullptr), Error);
}
