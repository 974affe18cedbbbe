// The embedding family under the emulator (kernels/cuda/embedding.cu) against the CPU twin:
// lookups and the scatter-add backward with repeated and unused ids, i32 and i64 indices, odd
// widths (scalar) and multiples of 4 (float4), more ids than one shared-memory pass holds, a grid
// cap that forces grid-stride loops, every thread order. The backward adds in index order
// like the twin, so both directions must match bit for bit. The sinusoidal timestep embedding too:
// f32, i32 and i64 timesteps, both column orders, an odd width, one t broadcast to every row.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <vector>

#include "emu/emu_test_helpers.h"
#include "emu/kernel_test_support.h"
#include "kernels/compat.cuh"
#include "kernels/cuda/grid_helpers.cuh"
#include "kernels/embedding.h"

using namespace diffuse;
using diffuse::test::Buf;
using diffuse::test::randn_buf;
using diffuse::test::same_values;

namespace {

const auto& kOrders = diffuse::test::kAllOrders;

template <typename I>
void check_embedding(int64_t n, int64_t v, int64_t width, int shift, int64_t cap) {
  kernels::EmbeddingDesc d{n, v, width};
  std::vector<I> index(n);
  for (int64_t i = 0; i < n; ++i) index[i] = static_cast<I>((i * 5 + i / 3) % (v > 1 ? v - 1 : 1));  // row v-1 unused
  Buf<float> table = randn_buf(v * width, 1, shift), gout = randn_buf(n * width, 2, shift);
  Buf<float> want(n * width), want_g(v * width);
  kernels::cpu::embedding_forward<float, I>(d, table.p, index.data(), want.p);
  kernels::cpu::embedding_backward<float, I>(d, index.data(), gout.p, want_g.p);
  for (emulator::ThreadOrder order : kOrders) {
    emulator::ScopedThreadOrder scoped(order);
    kernels::emu::grid::ScopedBlockCap block_cap(cap);
    INFO("n " << n << " v " << v << " d " << width << " index bytes " << sizeof(I) << " shift " << shift << " cap "
              << cap << " order " << emulator::thread_order_name(order));
    Buf<float> out(n * width, shift), gtable(v * width, shift);
    kernels::emu::embedding_forward(d, table.p, index.data(), out.p, nullptr);
    kernels::emu::embedding_backward(d, index.data(), gout.p, gtable.p, nullptr);
    CHECK(same_values(out.p, want.p, n * width));
    CHECK(same_values(gtable.p, want_g.p, v * width));
    CHECK((out.guard_intact() && gtable.guard_intact()));
  }
}

}  // namespace

TEST_CASE("embedding: lookup and scatter-add backward match the CPU twin", "[emu][embedding]") {
  for (int shift : {0, 1}) {
    check_embedding<int32_t>(11, 7, 6, shift, 0);
    check_embedding<int64_t>(11, 7, 8, shift, 0);
    check_embedding<int32_t>(5, 3, 300, shift, 0);  // rows wider than a block
  }
  check_embedding<int64_t>(300, 5, 5, 0, 0);  // two passes of the staged ids
  check_embedding<int32_t>(300, 9, 12, 0, 1);
  check_embedding<int64_t>(13, 6, 600, 0, 1);  // one block: grid-stride over rows and columns
  check_embedding<int32_t>(0, 4, 6, 0, 0);     // no ids: the grad table is all zeros
}

TEST_CASE("embedding: an index outside the table reads nothing and gives a NaN row", "[emu][embedding]") {
  kernels::EmbeddingDesc d{3, 4, 8};
  const int64_t index[3] = {1, 4, -1};
  Buf<float> table = randn_buf(32, 1), out(24, 0, 0.0f), gout = randn_buf(24, 2), gtable(32);
  kernels::emu::embedding_forward(d, table.p, index, out.p, nullptr);
  for (int k = 0; k < 8; ++k) {
    CHECK(out.p[k] == table.p[8 + k]);
    CHECK(std::isnan(out.p[8 + k]));
    CHECK(std::isnan(out.p[16 + k]));
  }
  kernels::emu::embedding_backward(d, index, gout.p, gtable.p, nullptr);
  for (int k = 0; k < 32; ++k) CHECK(gtable.p[k] == (k / 8 == 1 ? gout.p[k - 8] : 0.0f));
}

namespace {

// The timestep embedding under the emulator against the CPU twin, bit for bit: the kernel runs
// the twin's f32 operations in the twin's order, and the emulator's expf/sinf/cosf are the host's.
template <typename TIn>
void check_timestep_embedding(kernels::TimestepEmbeddingDesc d, const std::vector<TIn>& t, int shift, int64_t cap) {
  Buf<float> want(d.n * d.dim);
  kernels::cpu::timestep_embedding<float, TIn>(d, t.data(), want.p);
  for (emulator::ThreadOrder order : kOrders) {
    emulator::ScopedThreadOrder scoped(order);
    kernels::emu::grid::ScopedBlockCap block_cap(cap);
    INFO("n " << d.n << " dim " << d.dim << " flip " << d.flip_sin_to_cos << " shift " << d.freq_shift << " broadcast "
              << d.broadcast_t << " t bytes " << sizeof(TIn) << " out shift " << shift << " cap " << cap << " order "
              << emulator::thread_order_name(order));
    Buf<float> out(d.n * d.dim, shift);
    kernels::emu::timestep_embedding(d, t.data(), out.p, nullptr);
    CHECK(same_values(out.p, want.p, d.n * d.dim));
    CHECK(out.guard_intact());
  }
}

}  // namespace

TEST_CASE("embedding: the sinusoidal timestep embedding matches the CPU twin bit for bit", "[emu][embedding]") {
  const std::vector<float> tf = {0.0f, 1.0f, 999.0f, 0.5f, 421.25f, 17.0f, 980.0f};
  const std::vector<int32_t> ti = {0, 1, 999, 500, 3, 250, 998};
  const std::vector<int64_t> tl = {999, 0, 1, 640, 12, 7, 100};
  for (int shift : {0, 1})
    for (int64_t cap : {0, 1}) {
      // tiny's and ddpm-cifar10's widths; diffusers' UNet2DModel: flip_sin_to_cos true, shift 0.
      check_timestep_embedding<float>({7, 32, true, 0.0, false}, tf, shift, cap);
      check_timestep_embedding<int32_t>({7, 128, true, 0.0, false}, ti, shift, cap);
      check_timestep_embedding<int64_t>({7, 64, false, 1.0, false}, tl, shift, cap);
    }
  check_timestep_embedding<float>({5, 33, true, 0.0, true}, tf, 0, 0);  // one t for every row; odd width
  check_timestep_embedding<int32_t>({3, 7, false, 1.0, false}, ti, 1, 1);
  check_timestep_embedding<int64_t>({0, 32, true, 0.0, false}, tl, 0, 0);  // no rows
}
