// The shape family under the emulator (kernels/cuda/shape.cu) against the CPU twin: concat along
// the last dim and its split (either destination optional), nearest 2x upsampling and its
// backward, on odd channel counts (scalar path) and multiples of 4 (float4 path), aligned and
// shifted buffers, a grid cap that forces several grid-stride passes, every thread order.
// Pure copies and the twin's addition order: the results must be identical bit for bit; each case
// also runs the bf16 launchers, whose results are the twin's (on the widened bf16 inputs) rounded.
#include <catch2/catch.hpp>
#include <cstdint>

#include "emu/emu_test_helpers.h"
#include "emu/kernel_test_support.h"
#include "kernels/compat.cuh"
#include "kernels/cuda/grid_helpers.cuh"
#include "kernels/shape.h"

using namespace diffuse;
using diffuse::test::Bf16Buf;
using diffuse::test::Buf;
using diffuse::test::randn_buf;
using diffuse::test::same_as_rounded;
using diffuse::test::same_values;

namespace {

const auto& kOrders = diffuse::test::kAllOrders;

// A concat and a split into fresh buffers B (Buf<float>, or Bf16Buf for the bf16 launchers), each
// output compared with its want by `same`.
template <typename B, typename T, typename Same>
void concat_and_split(const kernels::ConcatDesc& d, int shift, const T* a, const T* b, const T* g,
                      const Buf<float>& want, const Buf<float>& want_ga, const Buf<float>& want_gb, Same same) {
  const int64_t c = d.ca + d.cb;
  B out(d.rows * c, shift), ga(d.rows * d.ca, shift), gb(d.rows * d.cb, shift);
  kernels::emu::concat_last(d, a, b, out.p, nullptr);
  kernels::emu::split_last(d, g, ga.p, gb.p, nullptr);
  CHECK(same(out.p, want.p, d.rows * c));
  CHECK(same(ga.p, want_ga.p, d.rows * d.ca));
  CHECK(same(gb.p, want_gb.p, d.rows * d.cb));
  CHECK((out.guard_intact() && ga.guard_intact() && gb.guard_intact()));
}

void check_concat(int64_t rows, int64_t ca, int64_t cb, int shift, int64_t cap) {
  kernels::ConcatDesc d{rows, ca, cb};
  const int64_t c = ca + cb;
  Buf<float> a = randn_buf(rows * ca, 1, shift), b = randn_buf(rows * cb, 2, shift), g = randn_buf(rows * c, 3, shift);
  Buf<float> want(rows * c), want_ga(rows * ca), want_gb(rows * cb);
  kernels::cpu::concat_last<float>(d, a.p, b.p, want.p);
  kernels::cpu::split_last<float>(d, g.p, want_ga.p, want_gb.p);
  // The bf16 launchers on the inputs rounded to bf16: the twin's result on those values, rounded.
  const Bf16Buf a16(a.p, rows * ca, shift), b16(b.p, rows * cb, shift), g16(g.p, rows * c, shift);
  const Buf<float> wa = a16.widened(), wb = b16.widened(), wg = g16.widened();
  Buf<float> want16(rows * c), want16_ga(rows * ca), want16_gb(rows * cb);
  kernels::cpu::concat_last<float>(d, wa.p, wb.p, want16.p);
  kernels::cpu::split_last<float>(d, wg.p, want16_ga.p, want16_gb.p);
  for (emulator::ThreadOrder order : kOrders) {
    emulator::ScopedThreadOrder scoped(order);
    kernels::emu::grid::ScopedBlockCap block_cap(cap);
    INFO("rows " << rows << " ca " << ca << " cb " << cb << " shift " << shift << " cap " << cap << " order "
                 << emulator::thread_order_name(order));
    concat_and_split<Buf<float>>(d, shift, a.p, b.p, g.p, want, want_ga, want_gb,
                                 [](const float* x, const float* y, int64_t n) { return same_values(x, y, n); });
    concat_and_split<Bf16Buf>(d, shift, a16.p, b16.p, g16.p, want16, want16_ga, want16_gb, same_as_rounded);
    // Only one destination wanted: the other stays untouched.
    Buf<float> only_a(rows * ca, shift), only_b(rows * cb, shift);
    kernels::emu::split_last(d, g.p, only_a.p, nullptr, nullptr);
    kernels::emu::split_last(d, g.p, nullptr, only_b.p, nullptr);
    CHECK(same_values(only_a.p, want_ga.p, rows * ca));
    CHECK(same_values(only_b.p, want_gb.p, rows * cb));
  }
}

void check_upsample(int64_t n, int64_t h, int64_t w, int64_t c, int shift, int64_t cap) {
  kernels::Upsample2xDesc d{n, h, w, c};
  const int64_t in = n * h * w * c, out_n = 4 * in;
  Buf<float> x = randn_buf(in, 4, shift), gy = randn_buf(out_n, 5, shift);
  Buf<float> want_y(out_n), want_gx(in);
  kernels::cpu::upsample_nearest2x<float>(d, x.p, want_y.p);
  kernels::cpu::upsample_nearest2x_backward<float>(d, gy.p, want_gx.p);
  const Bf16Buf x16(x.p, in, shift), gy16(gy.p, out_n, shift);
  const Buf<float> wx = x16.widened(), wgy = gy16.widened();
  Buf<float> want16_y(out_n), want16_gx(in);
  kernels::cpu::upsample_nearest2x<float>(d, wx.p, want16_y.p);
  kernels::cpu::upsample_nearest2x_backward<float>(d, wgy.p, want16_gx.p);
  for (emulator::ThreadOrder order : kOrders) {
    emulator::ScopedThreadOrder scoped(order);
    kernels::emu::grid::ScopedBlockCap block_cap(cap);
    INFO("n " << n << " h " << h << " w " << w << " c " << c << " shift " << shift << " cap " << cap << " order "
              << emulator::thread_order_name(order));
    Buf<float> y(out_n, shift), gx(in, shift);
    kernels::emu::upsample_nearest2x(d, x.p, y.p, nullptr);
    kernels::emu::upsample_nearest2x_backward(d, gy.p, gx.p, nullptr);
    CHECK(same_values(y.p, want_y.p, out_n));
    CHECK(same_values(gx.p, want_gx.p, in));
    CHECK((y.guard_intact() && gx.guard_intact()));
    Bf16Buf y16(out_n, shift), gx16(in, shift);
    kernels::emu::upsample_nearest2x(d, x16.p, y16.p, nullptr);
    kernels::emu::upsample_nearest2x_backward(d, gy16.p, gx16.p, nullptr);
    CHECK(same_as_rounded(y16.p, want16_y.p, out_n));
    CHECK(same_as_rounded(gx16.p, want16_gx.p, in));
    CHECK((y16.guard_intact() && gx16.guard_intact()));
  }
}

}  // namespace

TEST_CASE("shape: concat_last and split_last match the CPU twin", "[emu][shape]") {
  for (int shift : {0, 1}) {
    check_concat(3 * 5 * 7, 6, 5, shift, 0);    // odd widths: scalar lanes
    check_concat(3 * 5 * 7, 8, 12, shift, 0);   // float4 when aligned
    check_concat(7, 72, 140, shift, 0);         // rows wider than a warp's step
    check_concat(5, 0, 7, shift, 0);            // an empty side
  }
  check_concat(3 * 5 * 7 * 3, 6, 5, 0, 1);  // 315 rows on one block of 8 warps: grid-stride
  check_concat(3 * 5 * 7 * 3, 8, 4, 0, 1);
}

TEST_CASE("shape: nearest 2x upsample and its backward match the CPU twin", "[emu][shape]") {
  for (int shift : {0, 1}) {
    check_upsample(3, 5, 7, 6, shift, 0);
    check_upsample(2, 3, 5, 8, shift, 0);
    check_upsample(1, 1, 1, 3, shift, 0);
    check_upsample(2, 2, 3, 164, shift, 0);  // more channels than a warp's step
  }
  check_upsample(3, 5, 7, 6, 0, 1);  // 105 pixels on one block of 8 warps: grid-stride
  check_upsample(3, 5, 7, 4, 0, 2);
}
