// Tensor basics, the Philox generator against Random123's known answers, and the autograd tape.
#include <catch2/catch.hpp>
#include <cmath>

#include "kernels/philox.h"
#include "nn/autograd.h"
#include "nn/ops.h"
#include "nn/tensor.h"

using namespace diffuse;

TEST_CASE("philox4x32-10 matches Random123's known-answer vectors", "[philox]") {
  // From Random123's kat_vectors (philox4x32 10 rounds).
  auto r = philox::philox4x32_10({{0, 0, 0, 0}}, 0, 0);
  CHECK(r.v[0] == 0x6627e8d5u);
  CHECK(r.v[1] == 0xe169c58du);
  CHECK(r.v[2] == 0xbc57ac4cu);
  CHECK(r.v[3] == 0x9b00dbd8u);
  r = philox::philox4x32_10({{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}}, 0xffffffffu, 0xffffffffu);
  CHECK(r.v[0] == 0x408f276du);
  CHECK(r.v[1] == 0x41c83b0eu);
  CHECK(r.v[2] == 0xa20bc7c6u);
  CHECK(r.v[3] == 0x6d5451fdu);
  r = philox::philox4x32_10({{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}, 0xa4093822u, 0x299f31d0u);
  CHECK(r.v[0] == 0xd16cfe09u);
  CHECK(r.v[1] == 0x94fdccebu);
  CHECK(r.v[2] == 0x5001e420u);
  CHECK(r.v[3] == 0x24126ea1u);
}

TEST_CASE("philox normals have the moments of N(0,1) and are pure functions of their inputs", "[philox]") {
  const int n = 200000;
  double s = 0, s2 = 0;
  for (int i = 0; i < n; ++i) {
    double x = philox::normal_at(7, philox::kNoise, 0, i);
    s += x;
    s2 += x * x;
  }
  CHECK(std::fabs(s / n) < 0.01);
  CHECK(std::fabs(s2 / n - 1.0) < 0.02);
  CHECK(philox::normal_at(7, 3, 10, 5) == philox::normal_at(7, 3, 10, 5));
  CHECK(philox::normal_at(7, 3, 10, 5) != philox::normal_at(8, 3, 10, 5));
  CHECK(philox::normal_at(7, 3, 10, 5) != philox::normal_at(7, 4, 10, 5));
  Tensor a = Tensor::randn({3, 5}, 42, philox::kNoise, 2);
  auto v = a.to_vector();
  for (int i = 0; i < 15; ++i) CHECK(v[i] == Approx(philox::normal_at(42, philox::kNoise, 2, i)));
}

TEST_CASE("tensor views share storage, copies do not", "[tensor]") {
  Tensor t = Tensor::from({0, 1, 2, 3, 4, 5}, {3, 2});
  Tensor v = t.view({2, 3});
  CHECK(v.same_storage(t));
  CHECK(v.shape() == Shape{2, 3});
  Tensor rows = t.slice0(1, 3);
  CHECK(rows.to_vector() == std::vector<double>{2, 3, 4, 5});
  Tensor c = t.clone();
  c.fill(9);
  CHECK(t.to_vector()[0] == 0);
  CHECK(reinterpret_cast<uintptr_t>(Tensor::empty({7}).raw()) % 64 == 0);
  CHECK_THROWS_WITH(t.view({4, 2}), Catch::Contains("cannot view f32[3, 2]"));
  CHECK_THROWS_WITH(t.data<double>(), Catch::Contains("accessed as f64"));
  CHECK_THROWS_WITH(t.slice0(2, 5), Catch::Contains("rows [2, 5)"));
}

TEST_CASE("dtype conversions round-trip, bf16 rounds to nearest even", "[tensor]") {
  Tensor t = Tensor::from({1.0, -2.5, 3.140625, 1e-3}, {4});
  auto back = t.to(DType::bf16).to(DType::f32).to_vector();
  CHECK(back[0] == 1.0);
  CHECK(back[1] == -2.5);
  CHECK(back[2] == 3.140625);
  CHECK(std::fabs(back[3] - 1e-3) < 1e-5);
  CHECK(t.to(DType::f64).to_vector()[2] == 3.140625);
}

TEST_CASE("CUDA tensors without a device give one clear error", "[tensor]") {
  if (device_allocator_available()) return;
  CHECK_THROWS_WITH(Tensor::empty({2}, DType::f32, Device::cuda), Catch::Contains("no CUDA device"));
}

TEST_CASE("autograd accumulates through shared inputs and frees the tape", "[autograd]") {
  Tensor x = Tensor::from({1, 2, 3}, {3}, DType::f64).set_requires_grad(true);
  Tensor y = ops::add(ops::mul(x, x), x);  // x^2 + x
  Tensor loss = ops::sum(y);
  CHECK(tape_size() > 0);
  loss.backward();
  CHECK(tape_size() == 0);
  CHECK(x.grad().to_vector() == std::vector<double>{3, 5, 7});
  // A second backward accumulates into .grad.
  ops::sum(ops::scale(x, 2.0)).backward();
  CHECK(x.grad().to_vector() == std::vector<double>{5, 7, 9});
  {
    NoGrad guard;
    Tensor z = ops::mul(x, x);
    CHECK_FALSE(z.requires_grad());
    CHECK(tape_size() == 0);
  }
  Tensor c = Tensor::from({1.0}, {1});
  CHECK_THROWS_WITH(ops::sum(c).backward(), Catch::Contains("does not depend"));
}
