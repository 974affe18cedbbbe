// The `group_norm` family under the emulator: kernels/cuda/group_norm_{forward,backward}.cu against
// the CPU twin (kernels/cpu/group_norm.cpp, f32) on odd NHWC shapes, with and without SiLU and
// add_nc, on the one-read path and (by lowering smem_limit_bytes) the chunked two-pass path, float4
// and scalar loads; and the bf16 launchers on bf16-rounded inputs. Outputs, statistics and
// workspace are NaN-poisoned before each launch, so an unwritten element fails. The thread order is
// the ambient one: CTest runs this binary under all three.
#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "emu/kernel_test_support.h"
#include "kernels/bf16.h"
#include "kernels/emulator/runtime.h"
#include "kernels/group_norm.h"

using namespace diffuse;
using diffuse::test::Buf;
using diffuse::test::max_rel;
using kernels::GroupNormDesc;

namespace {

struct Shape {
  int64_t n, s, c, g;
};

GroupNormDesc desc_of(Shape sh, bool silu, int64_t smem_limit, int backward_path = 0) {
  GroupNormDesc d;
  d.n = sh.n;
  d.spatial = sh.s;
  d.channels = sh.c;
  d.groups = sh.g;
  d.eps = 1e-5;
  d.silu = silu;
  d.smem_limit_bytes = smem_limit;
  d.backward_path = backward_path;
  return d;
}

// Inputs with a per-image offset (so the statistics matter) and a spread that differs by group;
// f32 parameters and add_nc.
float x_at(const GroupNormDesc& d, size_t i) {
  const size_t C = static_cast<size_t>(d.channels), c = i % C, n = i / static_cast<size_t>(d.spatial * d.channels);
  return static_cast<float>(0.5 * n - 0.3 + (1.0 + 0.1 * (c % 5)) * std::sin(0.37 * i + 0.11 * c));
}
float dy_at(const GroupNormDesc& d, size_t i) {
  return static_cast<float>(std::cos(0.53 * i) * 0.8 + 0.05 * (i % static_cast<size_t>(d.channels)));
}
struct Params {
  std::vector<float> add, gamma, beta;
  explicit Params(const GroupNormDesc& d)
      : add(static_cast<size_t>(d.n * d.channels)), gamma(static_cast<size_t>(d.channels)),
        beta(static_cast<size_t>(d.channels)) {
    for (size_t i = 0; i < add.size(); ++i) add[i] = static_cast<float>(0.4 * std::sin(1.7 * i + 0.2));
    for (size_t c = 0; c < gamma.size(); ++c) {
      gamma[c] = static_cast<float>(1.0 + 0.3 * std::cos(0.9 * c));
      beta[c] = static_cast<float>(0.2 * std::sin(1.3 * c) - 0.1);
    }
  }
};

// The CPU twin's forward and backward (f32), what every device result is compared with.
struct CpuReference {
  std::vector<float> y, dx, dg, db, da;
  std::vector<double> mean, rstd;
  CpuReference(const GroupNormDesc& d, const float* x, const float* add, const Params& p, const float* dy)
      : y(static_cast<size_t>(d.n * d.spatial * d.channels)), dx(y.size()), dg(p.gamma.size()), db(p.gamma.size()),
        da(p.add.size()), mean(static_cast<size_t>(d.n * d.groups)), rstd(mean.size()) {
    kernels::cpu::group_norm_forward<float>(d, x, add, p.gamma.data(), p.beta.data(), y.data(), mean.data(),
                                            rstd.data());
    kernels::cpu::group_norm_backward<float>(d, x, add, p.gamma.data(), p.beta.data(), mean.data(), rstd.data(), dy,
                                             dx.data(), dg.data(), db.data(), add ? da.data() : nullptr);
  }
};

// Device results against the CPU twin: y and dx within act_tol (their storage's precision), the
// statistics and the f32 grads of γ, β, add_nc within f32 bounds.
void compare(const CpuReference& cpu, const std::vector<float>& y, const std::vector<float>& dx,
             const std::vector<double>& mean, const std::vector<double>& rstd, const std::vector<float>& dg,
             const std::vector<float>& db, const std::vector<float>& da, bool with_add, double act_tol) {
  const auto n = [](const auto& v) { return static_cast<int64_t>(v.size()); };
  CHECK(max_rel(y.data(), cpu.y.data(), n(y)) < act_tol);
  CHECK(max_rel(mean.data(), cpu.mean.data(), n(mean)) < 1e-6);
  CHECK(max_rel(rstd.data(), cpu.rstd.data(), n(rstd)) < 1e-5);
  CHECK(max_rel(dx.data(), cpu.dx.data(), n(dx)) < act_tol);
  CHECK(max_rel(dg.data(), cpu.dg.data(), n(dg)) < 1e-5);
  CHECK(max_rel(db.data(), cpu.db.data(), n(db)) < 1e-5);
  if (with_add) CHECK(max_rel(da.data(), cpu.da.data(), n(da)) < 1e-5);
}

// Runs forward and backward and compares them with the CPU twin.
// smem_limit 0 keeps the one-read forward; a small one forces chunks of a few rows. backward_path
// (GroupNormDesc) 0 lets the plan choose, 2 forces the dy-slab backward, 3 the chunked one.
void check_group_norm(Shape sh, bool silu, bool with_add, int64_t smem_limit, int shift, int backward_path = 0) {
  const GroupNormDesc d = desc_of(sh, silu, smem_limit, backward_path);
  const size_t total = static_cast<size_t>(sh.n * sh.s * sh.c), nc = static_cast<size_t>(sh.n * sh.c);
  const size_t stats = static_cast<size_t>(sh.n * sh.g), C = static_cast<size_t>(sh.c);
  Buf<float> x(total, shift, 0.0f), dy(total, shift, 0.0f);
  for (size_t i = 0; i < total; ++i) x.p[i] = x_at(d, i), dy.p[i] = dy_at(d, i);
  const Params prm(d);
  const float* add_p = with_add ? prm.add.data() : nullptr;
  const CpuReference cpu(d, x.p, add_p, prm, dy.p);

  const size_t ws_fwd = kernels::emu::group_norm_forward_workspace_bytes(d);
  const size_t ws_bwd = kernels::emu::group_norm_backward_workspace_bytes(d);
  if (smem_limit < 1024) {  // the tiny limits force the chunked paths (larger ones: the caller checks)
    CHECK((smem_limit > 0) == (ws_fwd > 0));  // the small limit must really take the chunked path
    // The slab backwards need only the per-(n, c) sums; the chunked one its partials as well.
    const bool chunked_bwd = backward_path == 3 || (backward_path == 0 && smem_limit > 0);
    CHECK(chunked_bwd == (ws_bwd > 2 * nc * sizeof(float)));
  }
  INFO("N=" << sh.n << " S=" << sh.s << " C=" << sh.c << " G=" << sh.g << " silu=" << silu << " add=" << with_add
            << " smem_limit=" << smem_limit << " shift=" << shift << " backward_path=" << backward_path
            << " order=" << emulator::thread_order_name(emulator::thread_order()));
  Buf<float> y(total, shift, NAN);
  std::vector<double> mean(stats, NAN), rstd(stats, NAN);
  std::vector<float> ws(std::max(ws_fwd, ws_bwd) / sizeof(float) + 1, NAN);
  kernels::emu::group_norm_forward(d, x.p, add_p, prm.gamma.data(), prm.beta.data(), y.p, mean.data(),
                                   rstd.data(), ws_fwd ? ws.data() : nullptr, nullptr);
  CHECK(std::isnan(y.p[total]));  // one past the end stays untouched

  // The backward takes the device's own statistics, as the op does.
  Buf<float> dx(total, shift, NAN);
  std::vector<float> dg(C, NAN), db(C, NAN), da(nc, NAN);
  std::fill(ws.begin(), ws.end(), NAN);
  kernels::emu::group_norm_backward(d, x.p, add_p, prm.gamma.data(), prm.beta.data(), mean.data(), rstd.data(),
                                    dy.p, dx.p, dg.data(), db.data(), with_add ? da.data() : nullptr, ws.data(),
                                    nullptr);
  CHECK(std::isnan(dx.p[total]));
  compare(cpu, std::vector<float>(y.p, y.p + total), std::vector<float>(dx.p, dx.p + total), mean, rstd, dg, db, da,
          with_add, 1e-5);
}

// The bf16 launchers: x and dy rounded to bf16, the CPU twin run in f32 on those values. The device
// computes in f32 and rounds y and dx once, so each is within half a bf16 ulp (2^-8 of the value,
// 2^-9 absolute below 1: max_rel's measure) plus f32 noise: bound 5e-3. γ, β, add_nc and their
// grads are f32, as f32 as the f32 launchers' (1e-5). shift 1 puts the activations 2 bytes off
// alignment: the scalar path.
void check_group_norm_bf16(Shape sh, bool silu, bool with_add, int64_t smem_limit, int shift,
                           int backward_path = 0) {
  const GroupNormDesc d = desc_of(sh, silu, smem_limit, backward_path);
  const size_t total = static_cast<size_t>(sh.n * sh.s * sh.c), nc = static_cast<size_t>(sh.n * sh.c);
  const size_t stats = static_cast<size_t>(sh.n * sh.g), C = static_cast<size_t>(sh.c);
  const uint16_t poison = kernels::float_to_bf16(NAN);
  std::vector<uint16_t> x16(total + 8), dy16(total + 8), y16(total + 8, poison), dx16(total + 8, poison);
  std::vector<float> x(total), dy(total);
  for (size_t i = 0; i < total; ++i) {
    x16[shift + i] = kernels::float_to_bf16(x_at(d, i));
    dy16[shift + i] = kernels::float_to_bf16(dy_at(d, i));
    x[i] = kernels::bf16_to_float(x16[shift + i]);
    dy[i] = kernels::bf16_to_float(dy16[shift + i]);
  }
  const Params prm(d);
  const float* add_p = with_add ? prm.add.data() : nullptr;
  const CpuReference cpu(d, x.data(), add_p, prm, dy.data());

  INFO("bf16 N=" << sh.n << " S=" << sh.s << " C=" << sh.c << " G=" << sh.g << " silu=" << silu << " add="
                 << with_add << " smem_limit=" << smem_limit << " shift=" << shift
                 << " order=" << emulator::thread_order_name(emulator::thread_order()));
  const size_t ws_fwd = kernels::emu::group_norm_forward_workspace_bytes(d);
  const size_t ws_bwd = kernels::emu::group_norm_backward_workspace_bytes(d);
  if (smem_limit < 1024) {  // the tiny limits force the chunked paths (larger ones: the caller checks)
    CHECK((smem_limit > 0) == (ws_fwd > 0));
    CHECK((backward_path == 3 || (backward_path == 0 && smem_limit > 0)) == (ws_bwd > 2 * nc * sizeof(float)));
  }
  std::vector<double> mean(stats, NAN), rstd(stats, NAN);
  std::vector<float> ws(std::max(ws_fwd, ws_bwd) / sizeof(float) + 1, NAN);
  kernels::emu::group_norm_forward(d, x16.data() + shift, add_p, prm.gamma.data(), prm.beta.data(),
                                   y16.data() + shift, mean.data(), rstd.data(), ws_fwd ? ws.data() : nullptr, nullptr);
  CHECK(y16[shift + total] == poison);  // one past the end stays untouched

  std::vector<float> dg(C, NAN), db(C, NAN), da(nc, NAN);
  std::fill(ws.begin(), ws.end(), NAN);
  kernels::emu::group_norm_backward(d, x16.data() + shift, add_p, prm.gamma.data(), prm.beta.data(), mean.data(),
                                    rstd.data(), dy16.data() + shift, dx16.data() + shift, dg.data(), db.data(),
                                    with_add ? da.data() : nullptr, ws.data(), nullptr);
  CHECK(dx16[shift + total] == poison);
  std::vector<float> y(total), dx(total);
  for (size_t i = 0; i < total; ++i) {
    y[i] = kernels::bf16_to_float(y16[shift + i]);
    dx[i] = kernels::bf16_to_float(dx16[shift + i]);
  }
  compare(cpu, y, dx, mean, rstd, dg, db, da, with_add, 5e-3);
}

}  // namespace

TEST_CASE("group_norm: the bf16 launchers match the CPU twin on the rounded inputs", "[emu][group_norm]") {
  for (bool silu : {false, true}) {
    check_group_norm_bf16({2, 15, 12, 4}, silu, true, 0, 0);  // 3 channels per group: scalar loads
    check_group_norm_bf16({3, 5, 16, 2}, silu, true, 0, 0);   // 8 per group: four-wide bf16 loads
    check_group_norm_bf16({3, 5, 16, 2}, silu, false, 0, 1);  // misaligned: scalar loads
  }
  check_group_norm_bf16({3, 5, 16, 2}, true, true, 96, 0);  // chunked, four-wide
  check_group_norm_bf16({1, 13, 6, 3}, false, true, 16, 1);  // chunked, 7 chunks, scalar
}

TEST_CASE("group_norm: bf16 takes the one-read backward where the f32 slabs would not fit", "[emu][group_norm]") {
  // The one-read backward keeps x's and dy's slabs in their storage type, beside 6·8 per-channel
  // floats and 192 floats of reduction scratch: with (3, 5, 16, 2) 960 + 2·5·8·2 = 1120 bytes in
  // bf16, 1280 in f32, within half the limit; the dy-slab path needs 3264 + its one slab. At 2400
  // bf16 fits (1120 <= 1200) and f32 takes neither (the chunked path): the workspace (the f32
  // plan's) is the chunked one, the bf16 launch runs one-read inside it.
  const GroupNormDesc d = desc_of({3, 5, 16, 2}, true, 2400);
  CHECK(kernels::emu::group_norm_forward_workspace_bytes(d) == 0);
  CHECK(kernels::emu::group_norm_backward_workspace_bytes(d) > 2 * 3 * 16 * sizeof(float));
  for (bool silu : {false, true}) check_group_norm_bf16({3, 5, 16, 2}, silu, true, 2400, 0);
}

TEST_CASE("group_norm: one-read forward and backward match the CPU twin on odd shapes", "[emu][group_norm]") {
  for (bool silu : {false, true})
    for (bool with_add : {false, true}) {
      check_group_norm({2, 15, 12, 4}, silu, with_add, 0, 0);  // H=5 W=3, 3 channels per group
      check_group_norm({2, 7, 6, 3}, silu, with_add, 0, 1);    // 2 channels per group
    }
  check_group_norm({3, 5, 16, 2}, true, true, 0, 0);   // 8 per group: float4 loads
  check_group_norm({3, 5, 16, 2}, true, true, 0, 1);   // same, misaligned: scalar loads
  check_group_norm({1, 1, 5, 5}, false, true, 0, 0);   // one value per group: x̂ = 0
  // dγ, dβ over 12 images in 8 slices (two images in some), 40 channels: two blocks, one part-full.
  check_group_norm({12, 3, 40, 2}, true, true, 0, 0);
  // 4098 channel packs in a group: a 256-thread forward block where two 16 KiB f32 slabs fit the
  // limit, the 1024-thread one where only one does (a 20000-byte limit; the backward then takes
  // the dy-slab path, f32 and bf16).
  check_group_norm({1, 1366, 3, 1}, true, true, 0, 0);
  check_group_norm_bf16({1, 1366, 3, 1}, false, true, 0, 0);
  const GroupNormDesc big = desc_of({1, 1366, 3, 1}, true, 20000);
  CHECK(kernels::emu::group_norm_forward_workspace_bytes(big) == 0);             // one read
  CHECK(kernels::emu::group_norm_backward_workspace_bytes(big) == 2 * 3 * sizeof(float));  // a slab path
  check_group_norm({1, 1366, 3, 1}, true, true, 20000, 0);
  check_group_norm_bf16({1, 1366, 3, 1}, false, true, 20000, 0);
}

TEST_CASE("group_norm: the chunked two-pass path matches the CPU twin", "[emu][group_norm]") {
  // 96 bytes of "shared memory" hold 24 floats: 8 rows of 3 channels, so 15 rows are 2 chunks.
  for (bool silu : {false, true})
    for (bool with_add : {false, true}) check_group_norm({2, 15, 12, 4}, silu, with_add, 96, 0);
  check_group_norm({3, 5, 16, 2}, true, true, 96, 0);  // float4, chunks of 3 and 2 rows
  check_group_norm({1, 13, 6, 3}, false, true, 16, 1);  // 4 floats: 2 rows per chunk, 7 chunks
}

TEST_CASE("group_norm: the dy-slab backward (x re-read from global memory) matches the CPU twin",
          "[emu][group_norm]") {
  // 1024-thread blocks holding dy's slab in shared memory, the path of slabs too big for both.
  for (bool silu : {false, true})
    for (bool with_add : {false, true}) {
      check_group_norm({2, 15, 12, 4}, silu, with_add, 0, 0, 2);  // 3 channels per group: 4 lanes
      check_group_norm({2, 7, 6, 3}, silu, with_add, 0, 1, 2);
    }
  check_group_norm({3, 5, 16, 2}, true, true, 0, 0, 2);  // float4, 2 lanes
  check_group_norm({3, 5, 16, 2}, true, true, 0, 1, 2);  // misaligned: scalar
  check_group_norm({1, 1, 5, 5}, false, true, 0, 0, 2);
  check_group_norm({1, 4, 33, 1}, false, true, 0, 0, 2);  // 64 lanes
  check_group_norm({2, 3, 72, 1}, true, true, 0, 1, 2);   // scalar: 128 lanes
  check_group_norm({1, 2, 260, 1}, true, false, 0, 1, 2);  // wider than 256 lanes: channel tiles
  check_group_norm({2, 15, 12, 4}, true, true, 0, 0, 3);   // and the chunked path forced, unlimited
  for (bool silu : {false, true}) {
    check_group_norm_bf16({3, 5, 16, 2}, silu, true, 0, 0, 2);
    check_group_norm_bf16({2, 15, 12, 4}, silu, true, 0, 1, 2);
  }
}

TEST_CASE("group_norm: wide groups take every per-channel reduction layout", "[emu][group_norm]") {
  check_group_norm({2, 3, 72, 1}, true, true, 0, 0);   // 18 float4 packs: 32 lanes per row
  check_group_norm({1, 4, 33, 1}, false, true, 0, 0);  // 33 scalar channels: 64 lanes per row
  check_group_norm({1, 2, 260, 1}, true, false, 0, 1);  // wider than a block: channel tiles
  check_group_norm({1, 2, 200, 1}, true, true, 0, 1);   // 400 packs, a 64-thread block: 4 tiles of 64 lanes
}

TEST_CASE("group_norm: slabs of 513..4095 packs take the 256-thread one-read kernels", "[emu][group_norm]") {
  // 300 rows of 2 groups of 4 channels: one block over both groups (a 32-byte run), 600 packs.
  // Smaller slabs (every other shape here) take the 64-thread kernels.
  check_group_norm({1, 300, 8, 2}, true, true, 0, 0);
  check_group_norm_bf16({1, 300, 8, 2}, true, true, 0, 0);
}

TEST_CASE("group_norm: device launchers reject bad descriptors and handle empty input", "[emu][group_norm]") {
  GroupNormDesc d;
  d.n = 1;
  d.spatial = 2;
  d.channels = 6;
  d.groups = 4;  // does not divide 6
  float buf[16] = {};
  double stats[4] = {};
  CHECK_THROWS_AS(kernels::emu::group_norm_forward(d, buf, nullptr, buf, buf, buf, stats, stats, buf, nullptr), Error);
  CHECK_THROWS_AS(kernels::emu::group_norm_backward_workspace_bytes(d), Error);
  d.groups = 3;
  CHECK_THROWS_AS(kernels::emu::group_norm_forward(d, nullptr, nullptr, buf, buf, buf, stats, stats, buf, nullptr),
                  Error);
  d.smem_limit_bytes = 16;  // chunked: the forward needs its workspace
  CHECK(kernels::emu::group_norm_forward_workspace_bytes(d) > 0);
  CHECK_THROWS_AS(kernels::emu::group_norm_forward(d, buf, nullptr, buf, buf, buf, stats, stats, nullptr, nullptr),
                  Error);
  // No images: nothing to write except zero parameter grads.
  d.n = 0;
  float dg[6], db[6];
  std::fill(dg, dg + 6, NAN);
  std::fill(db, db + 6, NAN);
  const float* none = nullptr;  // the f32 launchers (a bare nullptr would match the bf16 ones too)
  kernels::emu::group_norm_forward(d, none, nullptr, buf, buf, nullptr, nullptr, nullptr, nullptr, nullptr);
  kernels::emu::group_norm_backward(d, none, nullptr, buf, buf, nullptr, nullptr, none, nullptr, dg, db, nullptr,
                                    nullptr, nullptr);
  for (int c = 0; c < 6; ++c) {
    CHECK(dg[c] == 0.0f);
    CHECK(db[c] == 0.0f);
  }
}
