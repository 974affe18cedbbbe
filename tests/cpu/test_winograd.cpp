// The CPU's Winograd convolutions (kernels/cpu/winograd.h): F(2×2, 3×3) and F(4×4, 3×3) forward and
// input gradient, the weight gradient as F(2×2)'s adjoint and as F(3×3, 4×4), with the bias
// gradient from the same pass, on every instruction-set path this CPU runs, against the
// f64 convolution kernel (im2col + dgemm, exact up to f64 rounding) on the same inputs: partial
// tiles (odd h, w; a 1×1 image; 7×7 and 10×6 for F(4×4)'s 4-pixel tiles), batch 1, Cin ≠ Cout,
// channel counts that are not a multiple of any path's vector width, a reduction longer than one
// packed block (400 channels; F(4×4)'s 32-channel blocks from 33 channels on), enough tiles for
// several blocks over threads; that conv2d_forward/backward route the shapes the rule picks
// through it, F(4×4) or F(2×2) as the rule says; that neither tile's result depends on the thread
// count; the error for another shape.
//
// Bounds: max |f32 − f64| / max |f64| ≤ 2e-6 for F(2×2), ≤ 6e-6 for F(4×4). Measured on this
// table: F(2×2) worst 5.5e-7 over every path (forward, dx and dw alike; the implicit GEMM's own
// f32 error on such data is 2–4e-7), F(4×4) worst 2.2e-6 (forward 1.5e-6, dx 2.1e-6, dw 2.2e-6;
// on UNet-sized layers, 32 to 256 channels: F(2×2) 2.4–6.4e-7, F(4×4) 1.1–2.2e-6;
// kernels/cpu/winograd.h). A transform bug is off by O(1).
#include <catch2/catch.hpp>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <random>
#include <vector>

#include "kernels/conv2d.h"
#include "kernels/cpu/winograd.h"
#include "kernels/cpu_isa.h"
#include "support/cpu_isa_guard.h"
#include "support/f32_vs_f64.h"

namespace diffuse {
namespace {

using kernels::Conv2dDesc;
using kernels::cpu::CpuIsa;

constexpr double kBound = 2e-6;
constexpr double kBoundF4 = 6e-6;  // F(4×4)

using kernels::cpu::WinogradPass;
using kernels::cpu::WinogradTile;
struct Tile {
  WinogradTile tile;
  const char* name;
  double bound;
};
constexpr Tile kTiles[] = {{WinogradTile::f2x2, "F(2x2, 3x3)", kBound}, {WinogradTile::f4x4, "F(4x4, 3x3)", kBoundF4}};

using test::normal_values;
using test::rel_to_peak;
using test::to_f32;

Conv2dDesc same3x3(int64_t n, int64_t h, int64_t w, int64_t cin, int64_t cout) {
  Conv2dDesc d;
  d.n = n;
  d.h = h;
  d.w = w;
  d.cin = cin;
  d.cout = cout;
  d.kh = d.kw = 3;
  d.pad_top = d.pad_bottom = d.pad_left = d.pad_right = 1;
  return d;
}

struct Case {
  int64_t n, h, w, cin, cout;
  bool bias;
};

struct Data {
  std::vector<double> x, w, b, dy, y_ref, dx_ref, dw_ref, db_ref;
  std::vector<float> xf, wf, bf, dyf;
};

Data make(const Conv2dDesc& d, bool bias) {
  Data s;
  const size_t in = size_t(d.n * d.h * d.w * d.cin), out = size_t(d.n * d.h * d.w * d.cout);
  s.x = normal_values(in, 1);
  s.w = normal_values(size_t(d.cout * 9 * d.cin), 2, 0.0, 1 / std::sqrt(9.0 * double(d.cin)));
  s.b = normal_values(size_t(d.cout), 3, 0.0, 0.1);
  s.dy = normal_values(out, 4);
  s.xf = to_f32(s.x);
  s.wf = to_f32(s.w);
  s.bf = to_f32(s.b);
  s.dyf = to_f32(s.dy);
  s.y_ref.resize(out);
  s.dx_ref.resize(in);
  s.dw_ref.resize(s.w.size());
  s.db_ref.resize(size_t(d.cout));
  kernels::cpu::conv2d_forward<double>(d, s.x.data(), s.w.data(), bias ? s.b.data() : nullptr, s.y_ref.data());
  kernels::cpu::conv2d_backward<double>(d, s.x.data(), s.w.data(), s.dy.data(), s.dx_ref.data(), s.dw_ref.data(),
                                        s.db_ref.data());
  return s;
}

TEST_CASE("Winograd F(2x2,3x3) and F(4x4,3x3) forward, dx, dw and dbias match the f64 convolution on every ISA path",
          "[conv][winograd]") {
  const std::vector<Case> cases = {
      {1, 1, 1, 4, 3, true},      // one partial tile, every neighbour padding
      {1, 5, 7, 3, 4, true},      // odd sizes, 3 channels (under every vector width)
      {2, 8, 8, 32, 32, false},   // whole tiles, the smallest channel count the rule picks
      {3, 9, 6, 17, 40, true},    // odd h, 17 channels in (a vector and a tail on every path)
      {1, 16, 15, 64, 48, true},  // batch 1, Cin ≠ Cout, odd w
      {4, 16, 16, 40, 33, true},  // 256 tiles: several tile blocks over the threads
      {1, 4, 5, 400, 8, true},    // 400 channels: two packed reduction blocks
      {1, 7, 7, 24, 20, true},    // 7×7: F(4×4)'s second tile row and column partial
      {2, 10, 6, 9, 16, false},   // 10×6: partial F(4×4) tiles on one side only
  };
  test::CpuIsaGuard guard;
  for (const Case& c : cases) {
    const Conv2dDesc d = same3x3(c.n, c.h, c.w, c.cin, c.cout);
    const Data s = make(d, c.bias);
    for (CpuIsa isa : kernels::cpu::available_cpu_isas()) {
      kernels::cpu::set_cpu_isa(isa);
      INFO("x [" << c.n << ", " << c.h << ", " << c.w << ", " << c.cin << "], " << c.cout << " out, "
                 << (c.bias ? "bias" : "no bias") << ", on the " << kernels::cpu::cpu_isa_name(isa) << " path");
      for (const Tile& t : kTiles) {
        INFO(t.name);
        std::vector<float> y(s.y_ref.size(), NAN), dx(s.dx_ref.size(), NAN), dw(s.dw_ref.size(), NAN);
        std::vector<float> db(s.db_ref.size(), NAN);
        kernels::cpu::winograd_conv3x3_forward(d, s.xf.data(), s.wf.data(), c.bias ? s.bf.data() : nullptr, y.data(),
                                               nullptr, t.tile);
        kernels::cpu::winograd_conv3x3_backward_data(d, s.wf.data(), s.dyf.data(), dx.data(), t.tile);
        // With a bias, dbias comes from dw's pass over dy; without, that pass must not need it.
        kernels::cpu::winograd_conv3x3_backward_weights(d, s.xf.data(), s.dyf.data(), dw.data(),
                                                        c.bias ? db.data() : nullptr, t.tile);
        const double ey = rel_to_peak(y, s.y_ref), edx = rel_to_peak(dx, s.dx_ref), edw = rel_to_peak(dw, s.dw_ref);
        const double edb = c.bias ? rel_to_peak(db, s.db_ref) : 0.0;
        INFO("forward " << ey << ", dx " << edx << ", dw " << edw << ", dbias " << edb);
        CHECK(ey <= t.bound);
        CHECK(edx <= t.bound);
        CHECK(edw <= t.bound);
        CHECK(edb <= t.bound);
      }
    }
  }
}

TEST_CASE("conv2d routes 3x3 stride-1 pad-1 convolutions through Winograd", "[conv][winograd]") {
  const Conv2dDesc wide = same3x3(2, 6, 6, 32, 48);
  CHECK(kernels::cpu::winograd_forward_wanted(wide));
  CHECK(kernels::cpu::winograd_backward_data_wanted(wide));
  CHECK(kernels::cpu::winograd_backward_weights_wanted(wide));
  CHECK(kernels::cpu::winograd_forward_wanted(same3x3(1, 5, 7, 3, 4)));  // measured faster at any channel count
  CHECK(kernels::cpu::winograd_backward_data_wanted(same3x3(1, 5, 7, 3, 4)));
  // F(4×4) where its per-call weight transform (36 planes of Cin·Cout) is paid off by enough
  // pixels, F(2×2) below: batch 1 at 8×8 with 128 channels each way.
  CHECK(kernels::cpu::winograd_tile_for(wide, WinogradPass::forward) == WinogradTile::f4x4);
  CHECK(kernels::cpu::winograd_tile_for(wide, WinogradPass::backward_data) == WinogradTile::f4x4);
  CHECK(kernels::cpu::winograd_tile_for(same3x3(1, 8, 8, 128, 128), WinogradPass::forward) == WinogradTile::f2x2);
  CHECK(kernels::cpu::winograd_tile_for(same3x3(1, 8, 8, 128, 128), WinogradPass::backward_data) == WinogradTile::f2x2);
  CHECK(kernels::cpu::winograd_tile_for(same3x3(16, 8, 8, 128, 128), WinogradPass::forward) == WinogradTile::f4x4);
  // dw: F(3×3, 4×4) from 16×16 images, F(2×2)'s adjoint below.
  CHECK(kernels::cpu::winograd_tile_for(wide, WinogradPass::backward_weights) == WinogradTile::f2x2);
  CHECK(kernels::cpu::winograd_tile_for(same3x3(1, 16, 16, 32, 32), WinogradPass::backward_weights) ==
        WinogradTile::f4x4);
  CHECK_FALSE(kernels::cpu::winograd_backward_weights_wanted(same3x3(1, 5, 7, 1, 32)));  // conv_in's dw: slower
  Conv2dDesc strided = wide;
  strided.stride = 2;
  CHECK_FALSE(kernels::cpu::winograd_forward_wanted(strided));
  Conv2dDesc unpadded = wide;
  unpadded.pad_top = unpadded.pad_bottom = unpadded.pad_left = unpadded.pad_right = 0;
  CHECK_FALSE(kernels::cpu::winograd_forward_wanted(unpadded));

  // Through the public kernels: the same numbers as calling Winograd directly, bit for bit.
  const Data s = make(wide, true);
  std::vector<float> y(s.y_ref.size()), dx(s.dx_ref.size()), dw(s.dw_ref.size()), y_w(y.size()), dx_w(dx.size()),
      dw_w(dw.size());
  kernels::cpu::conv2d_forward<float>(wide, s.xf.data(), s.wf.data(), s.bf.data(), y.data());
  kernels::cpu::conv2d_backward<float>(wide, s.xf.data(), s.wf.data(), s.dyf.data(), dx.data(), dw.data(), nullptr);
  kernels::cpu::winograd_conv3x3_forward(wide, s.xf.data(), s.wf.data(), s.bf.data(), y_w.data());
  kernels::cpu::winograd_conv3x3_backward_data(wide, s.wf.data(), s.dyf.data(), dx_w.data());
  kernels::cpu::winograd_conv3x3_backward_weights(wide, s.xf.data(), s.dyf.data(), dw_w.data());
  CHECK(y == y_w);
  CHECK(dx == dx_w);
  CHECK(dw == dw_w);
  CHECK(rel_to_peak(y, s.y_ref) <= kBoundF4);
  CHECK(rel_to_peak(dx, s.dx_ref) <= kBoundF4);
  CHECK(rel_to_peak(dw, s.dw_ref) <= kBoundF4);
}

TEST_CASE("Winograd results do not depend on the thread count", "[conv][winograd]") {
  // 4 × 16 × 16 pixels, 40 → 33 channels: several tile blocks of either tile, two F(4×4)
  // reduction blocks; 48 channels in: a reduction block of 16 after one of 32.
  for (const Conv2dDesc& d : {same3x3(4, 16, 16, 40, 33), same3x3(3, 11, 13, 48, 20)}) {
    const Data s = make(d, true);
    std::vector<std::vector<float>> ys, dxs, dws, dbs;
    const int saved = omp_get_max_threads();
    for (int threads : {1, 2, 3}) {
      omp_set_num_threads(threads);
      for (const Tile& t : kTiles) {
        std::vector<float> y(s.y_ref.size()), dx(s.dx_ref.size()), dw(s.dw_ref.size()), db(s.db_ref.size());
        kernels::cpu::winograd_conv3x3_forward(d, s.xf.data(), s.wf.data(), s.bf.data(), y.data(), nullptr, t.tile);
        kernels::cpu::winograd_conv3x3_backward_data(d, s.wf.data(), s.dyf.data(), dx.data(), t.tile);
        kernels::cpu::winograd_conv3x3_backward_weights(d, s.xf.data(), s.dyf.data(), dw.data(), db.data(), t.tile);
        ys.push_back(y);
        dxs.push_back(dx);
        dws.push_back(dw);
        dbs.push_back(db);
      }
    }
    omp_set_num_threads(saved);
    for (size_t run = 1; run < 3; ++run) {
      INFO(run + 1 << " threads against 1");
      for (size_t t = 0; t < std::size(kTiles); ++t) {
        INFO(kTiles[t].name);
        const size_t i = run * std::size(kTiles) + t;
        CHECK(ys[i] == ys[t]);
        CHECK(dxs[i] == dxs[t]);
        CHECK(dws[i] == dws[t]);
        CHECK(dbs[i] == dbs[t]);
      }
    }
  }
}

TEST_CASE("Winograd refuses a convolution that is not 3x3 stride 1 pad 1", "[conv][winograd]") {
  Conv2dDesc d = same3x3(1, 4, 4, 8, 8);
  d.stride = 2;
  std::vector<float> x(128), w(576), y(128);
  CHECK_THROWS_WITH(kernels::cpu::winograd_conv3x3_forward(d, x.data(), w.data(), nullptr, y.data()),
                    Catch::Contains("3x3 kernel, stride 1, padding 1"));
}

}  // namespace
}  // namespace diffuse
