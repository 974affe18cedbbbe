// The op profiler (nn/op_profile.h) with its CUDA clock (events on the stream, read once after the
// step): a profiled tiny training step counts what the model must call, its GPU times add up to
// the step's, and it changes none of the step's bits (support/op_profile_check.h).
#include <catch2/catch.hpp>

#include "support/cuda_guard.h"
#include "support/op_profile_check.h"

using namespace diffuse;
using namespace diffuse::test;

TEST_CASE("op profile of a tiny CUDA training step: calls per op, times that add up, the same bits",
          "[cuda][profile]") {
  DIFFUSE_CUDA_TEST_GUARD();
  check_training_profile(Device::cuda);
}
