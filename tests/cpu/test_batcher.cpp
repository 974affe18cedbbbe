// The Batcher: every image once per epoch in a seed-determined order, a fresh permutation each
// epoch, identical batches after resuming from a saved position, and flips exactly where the
// Philox augment stream says.
#include <catch2/catch.hpp>
#include <cmath>
#include <set>

#include "engine/dataset.h"

using namespace diffuse;
using Catch::Contains;

namespace {

// A dataset of n 2x2 gray images where image i is filled with value i (so a batch shows which).
Dataset numbered(int64_t n, bool labels = true) {
  std::vector<uint8_t> px;
  std::vector<int64_t> lab;
  for (int64_t i = 0; i < n; ++i) {
    for (int p = 0; p < 4; ++p) px.push_back(static_cast<uint8_t>(i * 4 + p));
    if (labels) lab.push_back(i % 3);
  }
  return Dataset("numbered", 2, 1, std::move(px), std::move(lab), {});
}

std::vector<int64_t> ids(const Batch& b) {
  std::vector<int64_t> out;
  auto v = b.images.to_vector();
  for (int64_t k = 0; k < b.images.dim(0); ++k) {
    double a = v[static_cast<size_t>(k * 4)], c = v[static_cast<size_t>(k * 4 + 1)];
    double first = std::min(a, c);  // flips swap columns 0 and 1
    out.push_back(std::lround((first + 1) * 127.5) / 4);
  }
  return out;
}

}  // namespace

TEST_CASE("Batcher visits every image once per epoch in a seed-determined order", "[dataset][batcher]") {
  Dataset d = numbered(10);
  Batcher b(d, 4, 123);
  std::vector<int64_t> seen;
  for (int k = 0; k < 5; ++k) {  // 20 draws = two epochs
    Batch batch = b.next();
    CHECK(batch.images.shape() == Shape{4, 2, 2, 1});
    CHECK(batch.labels.dtype() == DType::i64);
    auto got = ids(batch);
    auto labels = batch.labels.to_vector();
    for (size_t j = 0; j < got.size(); ++j) CHECK(labels[j] == got[j] % 3);
    seen.insert(seen.end(), got.begin(), got.end());
  }
  std::vector<int64_t> e0(seen.begin(), seen.begin() + 10), e1(seen.begin() + 10, seen.end());
  CHECK(std::set<int64_t>(e0.begin(), e0.end()).size() == 10);
  CHECK(std::set<int64_t>(e1.begin(), e1.end()).size() == 10);
  CHECK(e0 != e1);  // a new permutation each epoch
  CHECK(b.position() == BatchPosition{1, 10});

  Batcher same(d, 4, 123), other(d, 4, 124);
  CHECK(ids(same.next()) == std::vector<int64_t>(seen.begin(), seen.begin() + 4));
  std::vector<int64_t> other_order;
  for (int k = 0; k < 10; ++k) other_order.push_back(other.draw(0, k));
  CHECK(other_order != e0);
  CHECK_FALSE(numbered(3, false).has_labels());
  Dataset unlabeled = numbered(3, false);
  CHECK_FALSE(Batcher(unlabeled, 2, 1).next().labels.defined());
}

TEST_CASE("Batcher resumed from a saved position continues the same stream", "[dataset][batcher]") {
  Dataset d = numbered(7);
  Batcher a(d, 3, 99, true);
  a.next();
  a.next();
  BatchPosition saved = a.position();
  CHECK(saved == BatchPosition{0, 6});
  std::vector<Tensor> rest;
  for (int k = 0; k < 4; ++k) rest.push_back(a.next().images);

  Batcher resumed(d, 3, 99, true);
  resumed.set_position(saved);
  for (int k = 0; k < 4; ++k) CHECK(resumed.next().images.to_vector() == rest[static_cast<size_t>(k)].to_vector());
  CHECK(resumed.position() == a.position());
  CHECK_THROWS_WITH(resumed.set_position({0, 8}), Contains("numbered") && Contains("index 8"));
  CHECK_THROWS_WITH(Batcher(d, 0, 1), Contains("batch size"));
}

TEST_CASE("Batcher random flips mirror exactly the draws its Philox word selects", "[dataset][batcher]") {
  Dataset d = numbered(50);
  Batcher b(d, 50, 7, true);
  Batch batch = b.next();
  auto v = batch.images.to_vector();
  int flips = 0;
  for (int64_t k = 0; k < 50; ++k) {
    int64_t i = b.draw(0, k);
    bool flip = b.flipped(0, k);
    flips += flip;
    const uint8_t* px = d.pixels(i);
    // 2x2 image: a flip swaps the columns of each row.
    for (int y = 0; y < 2; ++y)
      for (int x = 0; x < 2; ++x)
        CHECK(v[static_cast<size_t>(k * 4 + y * 2 + x)] == Approx(px[y * 2 + (flip ? 1 - x : x)] / 127.5 - 1.0).margin(1e-6));
  }
  CHECK(flips > 10);
  CHECK(flips < 40);
}
