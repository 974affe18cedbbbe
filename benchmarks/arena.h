// Benchmark buffers: an Arena owns the buffers of one rotation set (filled on creation, so every
// page is touched before timing), and make_sets builds as many sets as it takes to keep the
// rotated working set larger than the cache (rotation_sets), each set made by the same function.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "benchmarks/cases.h"
#include "benchmarks/measure.h"

namespace diffuse::bench {

class Arena {
 public:
  float* random(int64_t n, uint64_t seed, float lo = -1.f, float hi = 1.f) {
    float* p = take<float>(n);
    fill_uniform(p, n, seed, lo, hi);
    return p;
  }
  float* zeros(int64_t n) { return take<float>(n); }
  double* zeros_f64(int64_t n) { return take<double>(n); }
  size_t bytes() const { return bytes_; }

 private:
  template <typename T>
  T* take(int64_t n) {
    auto block = std::make_unique<T[]>(static_cast<size_t>(n));  // value-initialised: zeros, pages touched
    T* p = block.get();
    owned_.push_back(std::shared_ptr<void>(block.release(), [](void* q) { delete[] static_cast<T*>(q); }));
    bytes_ += static_cast<size_t>(n) * sizeof(T);
    return p;
  }
  std::vector<std::shared_ptr<void>> owned_;
  size_t bytes_ = 0;
};

// A Set type holds an Arena named `arena` and the pointers make(set, index) takes from it.
template <typename Set>
std::vector<std::unique_ptr<Set>> make_sets(size_t rotate_bytes, const std::function<void(Set&, int)>& make) {
  std::vector<std::unique_ptr<Set>> sets;
  sets.push_back(std::make_unique<Set>());
  make(*sets[0], 0);
  const int count = rotation_sets(double(sets[0]->arena.bytes()), rotate_bytes);
  for (int i = 1; i < count; ++i) {
    sets.push_back(std::make_unique<Set>());
    make(*sets.back(), i);
  }
  return sets;
}

}  // namespace diffuse::bench
