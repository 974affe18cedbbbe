// The element-wise family under the emulator (kernels/cuda/elementwise.cu and
// elementwise_reduce.cu) against the CPU twin: every broadcast pattern the paths distinguish
// (same shape, trailing vector, scalar, [N,1,1,C], per-sample, other), float4 and scalar paths,
// grid caps that force several grid-stride passes, reductions with several splits, every
// thread order; and the bf16 launchers (binary, scale, SiLU) on bf16-rounded inputs. Outputs and
// workspaces are NaN-poisoned first.
#include <catch2/catch.hpp>
#include <cmath>
#include <bit>
#include <cstdint>
#include <string>
#include <vector>

#include "emu/emu_test_helpers.h"
#include "kernels/compat.cuh"
#include "kernels/cuda/grid_helpers.cuh"
#include "kernels/elementwise.h"
#include "emu/kernel_test_support.h"

using namespace diffuse;
using diffuse::test::Bf16Buf;
using diffuse::test::Buf;
using diffuse::test::max_rel;
using diffuse::test::randn_buf;
using diffuse::test::same_as_rounded;
using diffuse::test::same_values;
using kernels::BinaryOp;
using kernels::BroadcastDesc;
using Shape = std::vector<int64_t>;

namespace {

const auto& kOrders = diffuse::test::kAllOrders;

std::string str(const Shape& s) {
  std::string o = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) o += ',';
    o += std::to_string(s[i]);
  }
  return o + "]";
}

// b shapes over a = [3, 5, 7, 6]: same, [C], scalar, [N,1,1,C], per-sample, and general patterns.
const Shape kA = {3, 5, 7, 6};
const std::vector<Shape> kBShapes = {{3, 5, 7, 6}, {6}, {1}, {}, {3, 1, 1, 6}, {3, 1, 1, 1}, {1, 1, 1, 1},
                                     {7, 6}, {5, 1, 6}, {3, 1, 7, 1}, {5, 7, 1}, {3, 5, 1, 6}};

void check_binary(const Shape& as, const Shape& bs, int shift_a, int shift_b, int64_t block_cap) {
  BroadcastDesc d = kernels::make_broadcast(as, bs, "test");
  Buf<float> a = randn_buf(d.numel, 1, shift_a), b = randn_buf(d.b_numel, 2, shift_b);
  for (BinaryOp op : {BinaryOp::add, BinaryOp::sub, BinaryOp::mul}) {
    Buf<float> want(d.numel, shift_a);
    kernels::cpu::binary<float>(op, d, a.p, b.p, want.p);
    for (emulator::ThreadOrder order : kOrders) {
      emulator::ScopedThreadOrder scoped(order);
      kernels::emu::grid::ScopedBlockCap cap(block_cap);
      INFO("a " << str(as) << " b " << str(bs) << " op " << static_cast<int>(op) << " shifts " << shift_a << "/"
                << shift_b << " cap " << block_cap << " order " << emulator::thread_order_name(order));
      Buf<float> out(d.numel, shift_a);
      kernels::emu::binary(op, d, a.p, b.p, out.p, nullptr);
      CHECK(same_values(out.p, want.p, d.numel));  // one float op per element: identical bits
      CHECK(out.guard_intact());
    }
  }
}

void check_reduce(const Shape& as, const Shape& bs, bool weighted, int shift) {
  BroadcastDesc d = kernels::make_broadcast(as, bs, "test");
  Buf<float> g = randn_buf(d.numel, 3, shift), w = randn_buf(d.numel, 4, shift);
  Buf<float> want(d.b_numel);
  kernels::cpu::reduce_to_broadcast<float>(d, g.p, weighted ? w.p : nullptr, want.p);
  const int64_t ws = kernels::emu::reduce_to_broadcast_workspace(d);
  for (emulator::ThreadOrder order : kOrders) {
    emulator::ScopedThreadOrder scoped(order);
    INFO("g " << str(as) << " b " << str(bs) << " weighted " << weighted << " shift " << shift << " workspace " << ws
              << " order " << emulator::thread_order_name(order));
    Buf<float> out(d.b_numel, shift), workspace(ws);
    kernels::emu::reduce_to_broadcast(d, g.p, weighted ? w.p : nullptr, out.p, ws ? workspace.p : nullptr, nullptr);
    CHECK(max_rel(out.p, want.p, d.b_numel) < 1e-5);
    CHECK(out.guard_intact());
  }
}

}  // namespace

TEST_CASE("elementwise: binary ops match the CPU twin for every broadcast pattern", "[emu][elementwise]") {
  for (const Shape& bs : kBShapes)
    for (int shift_a : {0, 1})
      for (int shift_b : {0, 1}) check_binary(kA, bs, shift_a, shift_b, 0);
  // C % 4 == 0: b's float4 loads in the trailing-vector path.
  for (const Shape& bs : std::vector<Shape>{{8}, {3, 1, 1, 8}, {3, 1, 1, 1}}) check_binary({3, 5, 3, 8}, bs, 0, 0, 0);
}

TEST_CASE("elementwise: binary ops are right when the grid strides several times", "[emu][elementwise]") {
  // One or two blocks of 256 threads over ~1900 elements: every path wraps its cursor or channel
  // counter across grid-stride passes.
  const Shape as = {3, 9, 11, 7};
  for (const Shape& bs : std::vector<Shape>{{3, 9, 11, 7}, {7}, {1}, {3, 1, 1, 7}, {3, 1, 11, 1}, {9, 1, 7}})
    for (int64_t cap : {1, 2})
      for (int shift : {0, 1}) check_binary(as, bs, shift, 0, cap);
  check_binary({5, 9, 11, 8}, {8}, 0, 0, 1);
  check_binary({5, 9, 11, 8}, {5, 1, 1, 8}, 0, 0, 1);
}

TEST_CASE("elementwise: reduce_to_broadcast matches the CPU twin", "[emu][elementwise]") {
  for (const Shape& bs : kBShapes)
    for (bool weighted : {false, true})
      for (int shift : {0, 1}) check_reduce(kA, bs, weighted, shift);
  // Several stage-1 splits: long columns (float4 and scalar channels) and a long row.
  check_reduce({2, 150, 8}, {2, 1, 8}, true, 0);
  check_reduce({2, 150, 8}, {8}, false, 1);
  check_reduce({300, 5}, {5}, false, 0);
  check_reduce({2, 20000}, {2, 1}, true, 0);
  check_reduce({40001}, {1}, false, 1);
  // Empty a: b's grad is zero (including the broadcast dims of size 0).
  check_reduce({0, 6}, {1, 6}, false, 0);
}

TEST_CASE("elementwise: reductions with many blocks and a small grid cap", "[emu][elementwise]") {
  kernels::emu::grid::ScopedBlockCap cap(2);
  check_reduce({2, 150, 8}, {2, 1, 8}, false, 0);
  check_reduce({3, 30000}, {3, 1}, false, 0);
  check_reduce({3, 5, 7, 6}, {3, 1, 7, 1}, true, 0);
}

TEST_CASE("elementwise: sum matches the CPU twin", "[emu][elementwise]") {
  for (int64_t n : {0, 1, 5, 630, 40001})
    for (int shift : {0, 1}) {
      Buf<float> x = randn_buf(n, 5, shift);
      const float want = kernels::cpu::sum<float>(n, x.p);
      const int64_t ws = kernels::emu::sum_workspace(n);
      for (emulator::ThreadOrder order : kOrders) {
        emulator::ScopedThreadOrder scoped(order);
        INFO("n " << n << " shift " << shift << " order " << emulator::thread_order_name(order));
        Buf<float> out(1), workspace(ws);
        kernels::emu::sum(n, x.p, out.p, ws ? workspace.p : nullptr, nullptr);
        CHECK(max_rel(out.p, &want, 1) < 1e-5);
      }
    }
  Buf<float> out(1);
  CHECK_THROWS_AS(kernels::emu::sum(40001, out.p, out.p, nullptr, nullptr), Error);  // workspace is required
}

TEST_CASE("elementwise: scale, silu, silu backward and fill match the CPU twin", "[emu][elementwise]") {
  for (int64_t n : {1, 7, 630, 1283})
    for (int shift : {0, 1})
      for (int64_t cap : {0, 1}) {
        Buf<float> x = randn_buf(n, 6, shift), gy = randn_buf(n, 7, shift);
        for (int i = 0; i < n; i += 5) x.p[i] *= 12.0f;  // the saturated ends of the sigmoid too
        Buf<float> scaled(n, shift), y(n, shift), gx(n, shift), filled(n, shift);
        kernels::cpu::scale<float>(n, -1.75f, x.p, scaled.p);
        kernels::cpu::silu_forward<float>(n, x.p, y.p);
        kernels::cpu::silu_backward<float>(n, x.p, gy.p, gx.p);
        const float value = 0.625f;
        for (emulator::ThreadOrder order : kOrders) {
          emulator::ScopedThreadOrder scoped(order);
          kernels::emu::grid::ScopedBlockCap block_cap(cap);
          INFO("n " << n << " shift " << shift << " cap " << cap << " order " << emulator::thread_order_name(order));
          Buf<float> s(n, shift), fy(n, shift), bx(n, shift), f(n, shift);
          kernels::emu::scale(n, -1.75f, x.p, s.p, nullptr);
          kernels::emu::silu_forward(n, x.p, fy.p, nullptr);
          kernels::emu::silu_backward(n, x.p, gy.p, bx.p, nullptr);
          kernels::emu::fill(n, &value, f.p, nullptr);
          CHECK(same_values(s.p, scaled.p, n));
          CHECK(max_rel(fy.p, y.p, n) < 1e-6);
          CHECK(max_rel(bx.p, gx.p, n) < 1e-6);
          for (int64_t i = 0; i < n; ++i) REQUIRE(f.p[i] == value);
          CHECK((s.guard_intact() && fy.guard_intact() && bx.guard_intact() && f.guard_intact()));
        }
      }
}

TEST_CASE("elementwise: the bf16 launchers round the twin's f32 result once", "[emu][elementwise]") {
  // Inputs rounded to bf16 and widened for the twin; binary and scale are one f32 operation, so
  // the device's bf16 result is the twin's f32 result rounded, bit for bit. SiLU differs from the
  // twin in f32 by < 1e-6 (the f32 case above), which can move a rounding tie: half a bf16 ulp
  // (2^-8 of the value) plus that.
  for (const Shape& bs : kBShapes)
    for (int shift : {0, 1})
      for (int64_t cap : {0, 1}) {
        const BroadcastDesc d = kernels::make_broadcast(kA, bs, "test");
        const Buf<float> a32 = randn_buf(d.numel, 1, shift), b32 = randn_buf(d.b_numel, 2, shift);
        const Bf16Buf a(a32.p, d.numel, shift), b(b32.p, d.b_numel, shift);
        const Buf<float> wa = a.widened(), wb = b.widened();
        for (BinaryOp op : {BinaryOp::add, BinaryOp::sub, BinaryOp::mul}) {
          Buf<float> want(d.numel);
          kernels::cpu::binary<float>(op, d, wa.p, wb.p, want.p);
          for (emulator::ThreadOrder order : kOrders) {
            emulator::ScopedThreadOrder scoped(order);
            kernels::emu::grid::ScopedBlockCap block_cap(cap);
            INFO("bf16 b " << str(bs) << " op " << static_cast<int>(op) << " shift " << shift << " cap " << cap
                           << " order " << emulator::thread_order_name(order));
            Bf16Buf out(d.numel, shift);
            kernels::emu::binary(op, d, a.p, b.p, out.p, nullptr);
            CHECK(same_as_rounded(out.p, want.p, d.numel));
            CHECK(out.guard_intact());
          }
        }
      }
  for (int64_t n : {7, 1283})
    for (int shift : {0, 1})
      for (int64_t cap : {0, 1}) {
        Buf<float> x32 = randn_buf(n, 6, shift);
        for (int64_t i = 0; i < n; i += 5) x32.p[i] *= 12.0f;
        const Buf<float> gy32 = randn_buf(n, 7, shift);
        const Bf16Buf x(x32.p, n, shift), gy(gy32.p, n, shift);
        const Buf<float> wx = x.widened(), wgy = gy.widened();
        Buf<float> scaled(n), y(n), gx(n);
        kernels::cpu::scale<float>(n, -1.75f, wx.p, scaled.p);
        kernels::cpu::silu_forward<float>(n, wx.p, y.p);
        kernels::cpu::silu_backward<float>(n, wx.p, wgy.p, gx.p);
        for (emulator::ThreadOrder order : kOrders) {
          emulator::ScopedThreadOrder scoped(order);
          kernels::emu::grid::ScopedBlockCap block_cap(cap);
          INFO("bf16 n " << n << " shift " << shift << " cap " << cap << " order " << emulator::thread_order_name(order));
          Bf16Buf s(n, shift), fy(n, shift), bx(n, shift);
          kernels::emu::scale(n, -1.75f, x.p, s.p, nullptr);
          kernels::emu::silu_forward(n, x.p, fy.p, nullptr);
          kernels::emu::silu_backward(n, x.p, gy.p, bx.p, nullptr);
          CHECK(same_as_rounded(s.p, scaled.p, n));
          CHECK(max_rel(fy.widened().p, y.p, n) < 5e-3);
          CHECK(max_rel(bx.widened().p, gx.p, n) < 5e-3);
          CHECK((s.guard_intact() && fy.guard_intact() && bx.guard_intact()));
        }
      }
}

TEST_CASE("elementwise: the storage casts round f32 to bf16 to nearest even and widen bf16 exactly",
          "[emu][elementwise][bf16]") {
  // Random values and the cases rounding must get right: ties to even both ways, a carry into the
  // exponent, the largest finite values (just past them rounds to infinity), ±0, subnormals, ±∞
  // and NaN (kept a NaN; its payload is not compared).
  auto f32 = [](uint32_t bits) { return std::bit_cast<float>(bits); };
  const std::vector<float> special = {
      0.0f, -0.0f, 1.0f, -2.5f,
      f32(0x3f808000),  // a tie whose lower neighbour is even: down
      f32(0x3f818000),  // a tie whose lower neighbour is odd: up
      f32(0x3f808001),  // just past a tie: up
      f32(0x3fffffff),  // rounds up into the next exponent
      f32(0x7f7f7fff), -f32(0x7f7f7fff),  // stays the largest finite bf16
      f32(0x7f7f8000),  // a tie above the largest finite bf16: infinity
      f32(0x00000001), f32(0x00418000), -f32(0x00400000),  // subnormals
      INFINITY, -INFINITY, NAN, -NAN};
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{3}, int64_t{4}, int64_t{5}, int64_t{18}, int64_t{1001}})
    for (int shift_x : {0, 1})
      for (int shift_y : {0, 1})
        for (int64_t cap : {0, 1}) {
          Buf<float> x = randn_buf(n, 8, shift_x);
          for (int64_t i = 0; i < n && i < static_cast<int64_t>(special.size()); ++i) x.p[i] = special[i];
          for (emulator::ThreadOrder order : kOrders) {
            emulator::ScopedThreadOrder scoped(order);
            kernels::emu::grid::ScopedBlockCap block_cap(cap);
            INFO("n " << n << " shifts " << shift_x << "/" << shift_y << " cap " << cap << " order "
                      << emulator::thread_order_name(order));
            Bf16Buf y(n, shift_y);
            kernels::emu::cast_f32_to_bf16(n, x.p, y.p, nullptr);
            Buf<float> back(n, shift_x);
            kernels::emu::cast_bf16_to_f32(n, y.p, back.p, nullptr);
            int64_t wrong_rounding = 0, wrong_widening = 0;
            for (int64_t i = 0; i < n; ++i) {
              const bool nan_kept = std::isnan(x.p[i]) && (y.p[i] & 0x7fffu) > 0x7f80u;
              if (!nan_kept && y.p[i] != kernels::float_to_bf16(x.p[i])) ++wrong_rounding;
              if (std::bit_cast<uint32_t>(back.p[i]) != static_cast<uint32_t>(y.p[i]) << 16) ++wrong_widening;
            }
            CHECK(wrong_rounding == 0);
            CHECK(wrong_widening == 0);
            CHECK((y.guard_intact() && back.guard_intact()));
          }
        }
  // The table's rounding, spelled out: the host helper the test compares with is itself right.
  CHECK(kernels::float_to_bf16(f32(0x3f808000)) == 0x3f80);
  CHECK(kernels::float_to_bf16(f32(0x3f818000)) == 0x3f82);
  CHECK(kernels::float_to_bf16(f32(0x3fffffff)) == 0x4000);
  CHECK(kernels::float_to_bf16(f32(0x7f7f8000)) == 0x7f80);
}

TEST_CASE("elementwise: add_bias_residual is the twin's bias add then residual add", "[emu][elementwise]") {
  // y += bias[c] + residual, as (y + bias) + residual: in f32 the twin's two binary adds bit for
  // bit; in bf16 their f32 result on the widened inputs rounded once. Column counts for the
  // four-wide bias (8), a bias that wraps inside a quad (6) and one column; no bias; grid caps.
  for (int64_t cols : {8, 6, 1})
    for (bool with_bias : {true, false})
      for (int shift : {0, 1})
        for (int64_t cap : {0, 1}) {
          const int64_t rows = 37, n = rows * cols;
          const BroadcastDesc rowvec = kernels::make_broadcast({rows, cols}, {cols}, "test");
          const BroadcastDesc same = kernels::make_broadcast({rows, cols}, {rows, cols}, "test");
          const Buf<float> y0 = randn_buf(n, 11, shift), bias = randn_buf(cols, 12, shift), r = randn_buf(n, 13, shift);
          const Bf16Buf y16(y0.p, n, shift), bias16(bias.p, cols, shift), r16(r.p, n, shift);
          for (bool bf16 : {false, true}) {
            const Buf<float> wy = bf16 ? y16.widened() : Buf<float>(n), wb = bf16 ? bias16.widened() : Buf<float>(cols),
                             wr = bf16 ? r16.widened() : Buf<float>(n);
            const float* ty = bf16 ? wy.p : y0.p;
            const float* tb = bf16 ? wb.p : bias.p;
            const float* tr = bf16 ? wr.p : r.p;
            Buf<float> with_b(n), want(n);
            if (with_bias) {
              kernels::cpu::binary<float>(BinaryOp::add, rowvec, ty, tb, with_b.p);
            } else {
              for (int64_t i = 0; i < n; ++i) with_b.p[i] = ty[i];
            }
            kernels::cpu::binary<float>(BinaryOp::add, same, with_b.p, tr, want.p);
            for (emulator::ThreadOrder order : kOrders) {
              emulator::ScopedThreadOrder scoped(order);
              kernels::emu::grid::ScopedBlockCap block_cap(cap);
              INFO("cols " << cols << " bias " << with_bias << " shift " << shift << " cap " << cap << " bf16 " << bf16
                           << " order " << emulator::thread_order_name(order));
              if (bf16) {
                Bf16Buf out(y0.p, n, shift);
                kernels::emu::add_bias_residual(rows, cols, with_bias ? bias16.p : nullptr, r16.p, out.p, nullptr);
                CHECK(same_as_rounded(out.p, want.p, n));
                CHECK(out.guard_intact());
              } else {
                Buf<float> out(n, shift);
                for (int64_t i = 0; i < n; ++i) out.p[i] = y0.p[i];
                kernels::emu::add_bias_residual(rows, cols, with_bias ? bias.p : nullptr, r.p, out.p, nullptr);
                CHECK(same_values(out.p, want.p, n));
                CHECK(out.guard_intact());
              }
            }
          }
        }
}
