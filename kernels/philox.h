// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): the one
// random generator of diffuse, identical in host code, CUDA kernels and the emulator.
// A draw is a pure function of (seed, stream, counter): key = seed, counter block =
// (counter lo, counter hi, stream, 0). Element i of a tensor filled from `offset` uses block
// offset + i/4, lane i%4, so the same seed gives the same numbers on every device.
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/common.h"

namespace diffuse::philox {

struct U32x4 {
  uint32_t v[4];
};

// Named streams (docs/design.md §6): independent sequences under one seed.
enum Stream : uint32_t {
  kDataShuffle = 1,
  kTimesteps = 2,
  kNoise = 3,
  kDropout = 4,
  kSampler = 5,
  kInit = 6,
  kLabelDrop = 7,
  kAugment = 8,
};

DIFFUSE_HD inline void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

// The raw bijection: 10 rounds of Philox4x32 on counter `c` with key `k`.
DIFFUSE_HD inline U32x4 philox4x32_10(U32x4 c, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(0xD2511F53u, c.v[0], hi0, lo0);
    mulhilo(0xCD9E8D57u, c.v[2], hi1, lo1);
    c = U32x4{{hi1 ^ c.v[1] ^ k0, lo1, hi0 ^ c.v[3] ^ k1, lo0}};
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c;
}

// Four random words for block `counter` of `stream` under `seed`.
DIFFUSE_HD inline U32x4 block(uint64_t seed, uint32_t stream, uint64_t counter) {
  U32x4 c{{static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32), stream, 0u}};
  return philox4x32_10(c, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// A uniform float in the open interval (0, 1): 24 random bits, centred in their bucket, so
// log() in Box-Muller never sees 0.
DIFFUSE_HD inline float to_uniform(uint32_t x) {
  return (static_cast<float>(x >> 8) + 0.5f) * (1.0f / 16777216.0f);
}

// Four standard normals from one block: two Box-Muller pairs (lanes 0,1 and 2,3).
DIFFUSE_HD inline void normals4(uint64_t seed, uint32_t stream, uint64_t counter, float out[4]) {
  U32x4 r = block(seed, stream, counter);
  for (int pair = 0; pair < 2; ++pair) {
    float u1 = to_uniform(r.v[2 * pair]);
    float u2 = to_uniform(r.v[2 * pair + 1]);
    float radius = sqrtf(-2.0f * logf(u1));
    float theta = 6.28318530717958647692f * u2;
#if defined(__CUDA_ARCH__)
    // One argument reduction for both: CUDA's sincosf gives sinf's and cosf's bits (the same
    // reduction and polynomials), and the draw is arithmetic-bound in q_sample and denoise_step.
    float s, c;
    sincosf(theta, &s, &c);
    out[2 * pair] = radius * c;
    out[2 * pair + 1] = radius * s;
#else
    out[2 * pair] = radius * cosf(theta);
    out[2 * pair + 1] = radius * sinf(theta);
#endif
  }
}

// Element `i` of the normal sequence starting at block `offset`.
DIFFUSE_HD inline float normal_at(uint64_t seed, uint32_t stream, uint64_t offset, uint64_t i) {
  float n[4];
  normals4(seed, stream, offset + i / 4, n);
  return n[i % 4];
}

// Element `i` of the uniform (0,1) sequence starting at block `offset`.
DIFFUSE_HD inline float uniform_at(uint64_t seed, uint32_t stream, uint64_t offset, uint64_t i) {
  return to_uniform(block(seed, stream, offset + i / 4).v[i % 4]);
}

// How many counter blocks a draw of n elements consumes (callers advance their offset by this).
DIFFUSE_HD inline uint64_t blocks_for(uint64_t n) { return (n + 3) / 4; }

}  // namespace diffuse::philox
