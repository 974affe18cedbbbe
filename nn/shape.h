// Shape: a tensor's dimensions, held inline (at most kMaxRank of them) so that making, copying and
// comparing shapes never touches the heap — every op makes a few, and a steady-state training or
// sampling step must allocate nothing (docs/design.md §4). It reads like the std::vector<int64_t>
// it replaces (size, indexing, iteration, push_back, ==) and converts from one implicitly.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <iterator>
#include <span>
#include <vector>

namespace diffuse {

class Shape {
 public:
  static constexpr size_t kMaxRank = 8;  // the UNet's tensors have at most 5 dims
  using value_type = int64_t;
  using size_type = size_t;
  using iterator = int64_t*;
  using const_iterator = const int64_t*;

  Shape() = default;
  Shape(std::initializer_list<int64_t> dims) { assign(dims.begin(), dims.end()); }
  explicit Shape(size_t rank, int64_t value = 0) { resize(rank, value); }
  Shape(const std::vector<int64_t>& dims) { assign(dims.begin(), dims.end()); }  // NOLINT: implicit on purpose
  explicit Shape(std::span<const int64_t> dims) { assign(dims.begin(), dims.end()); }
  template <std::input_iterator It>
  Shape(It first, It last) {
    assign(first, last);
  }

  template <typename It>
  void assign(It first, It last) {
    rank_ = 0;
    for (; first != last; ++first) push_back(*first);
  }

  size_t size() const { return rank_; }
  bool empty() const { return rank_ == 0; }
  int64_t* data() { return dims_; }
  const int64_t* data() const { return dims_; }
  int64_t* begin() { return dims_; }
  int64_t* end() { return dims_ + rank_; }
  const int64_t* begin() const { return dims_; }
  const int64_t* end() const { return dims_ + rank_; }
  int64_t& operator[](size_t i) { return dims_[i]; }
  int64_t operator[](size_t i) const { return dims_[i]; }
  int64_t& front() { return dims_[0]; }
  int64_t front() const { return dims_[0]; }
  int64_t& back() { return dims_[rank_ - 1]; }
  int64_t back() const { return dims_[rank_ - 1]; }

  void push_back(int64_t d) {
    if (rank_ == kMaxRank) throw_rank_too_high();
    dims_[rank_++] = d;
  }
  void pop_back() { --rank_; }
  void resize(size_t rank, int64_t value = 0) {
    if (rank > kMaxRank) throw_rank_too_high();
    for (size_t i = rank_; i < rank; ++i) dims_[i] = value;
    rank_ = static_cast<uint8_t>(rank);
  }
  void clear() { rank_ = 0; }

  std::vector<int64_t> to_vector() const { return {begin(), end()}; }
  operator std::span<const int64_t>() const { return {dims_, rank_}; }  // NOLINT: implicit on purpose

  friend bool operator==(const Shape& a, const Shape& b) {
    return a.rank_ == b.rank_ && std::equal(a.begin(), a.end(), b.begin());
  }

 private:
  [[noreturn]] static void throw_rank_too_high();
  int64_t dims_[kMaxRank] = {};
  uint8_t rank_ = 0;
};

}  // namespace diffuse
