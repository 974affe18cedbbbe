// The arithmetic a UNet step costs, counted from its config and batch alone, so a measured step time
// becomes a sustained GFLOP/s that can stand beside the machine's sgemm peak (docs/performance.md).
// Only the GEMM-shaped work is counted — convolutions, linears and attention's two batched
// matrix products — because that is what the peak measures and it is nearly all of a step; the
// element-wise ops (GroupNorm, SiLU, softmax, the optimizer) are left out. A multiply-add is 2.
// `diffuse bench train` uses this one definition for its own GFLOP/s and writes the count into
// its JSON, where scripts/compare-cpu.sh divides PyTorch's step time by it too.
#pragma once
#include <cstdint>

#include "nn/unet_config.h"

namespace diffuse::bench {

// One UNet forward over `batch` images of the config's sample size.
double unet_forward_flops(const UNet2DConfig& config, int64_t batch);
// One training step: the forward, then the backward's two products per GEMM (the input gradient
// and the weight gradient, each as large as the forward's), so 3x the forward.
double unet_train_step_flops(const UNet2DConfig& config, int64_t batch);

}  // namespace diffuse::bench
