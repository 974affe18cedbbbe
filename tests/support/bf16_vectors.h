// Whole vectors to and from bf16 bits (round to nearest even, as the kernels round), for tests that
// feed bf16 buffers to a kernel or a library and read them back; defined once for all test folders.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/bf16.h"

namespace diffuse::test {

inline std::vector<uint16_t> to_bf16(const std::vector<float>& values) {
  std::vector<uint16_t> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = kernels::float_to_bf16(values[i]);
  return out;
}

inline std::vector<float> from_bf16(const std::vector<uint16_t>& bits) {
  std::vector<float> out(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) out[i] = kernels::bf16_to_float(bits[i]);
  return out;
}

}  // namespace diffuse::test
