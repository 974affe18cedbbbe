// The kernel benchmark's workloads: the shapes each custom kernel family really sees inside the
// named UNet configs (each level's resolution and channel count; each attention block's sequence
// length, heads and head dim; the parameter list the optimizer walks), plus one large shape per
// family, each with the work counted from its shape: the fewest bytes the kernel must read and
// write (f32) and its FLOPs. Counting conventions are in docs/performance.md.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/conv2d.h"
#include "kernels/group_norm.h"
#include "kernels/linear.h"
#include "nn/unet_config.h"

namespace diffuse::bench {

// One resolution level of a UNet: its feature map and whether attention runs there.
struct UNetLevel {
  std::string name;  // "L0".."L3" or "mid"
  int64_t res = 0, channels = 0;
  bool attention = false;
  int64_t heads = 1, head_dim = 0;
};

struct UNetShapes {
  std::string config;
  UNet2DConfig cfg;
  std::vector<UNetLevel> levels;  // the down/up levels, then "mid" (always with attention)
};

UNetShapes unet_shapes(const std::string& config);

enum class Family { noise, group_norm, attention, denoise_step, optim, conv2d, linear };
const char* family_name(Family f);

struct Workload {
  Family family = Family::noise;
  std::string pass;   // "fwd", "bwd", or the variant ("ddpm", "ddim", "adamw+ema")
  std::string where;  // "tiny b64 L1+mid", "large"
  std::string config; // "" for the large shapes
  int64_t batch = 0;
  std::string shape;  // human-readable
  kernels::GroupNormDesc gn;
  kernels::AttentionDesc attn;
  bool bf16 = false;           // attention: bf16 storage (f32 otherwise)
  std::string attention_path;  // attention: "flash" or "gemm" forced, "" the rule (kernels/attention.h)
  kernels::Conv2dDesc conv;
  kernels::LinearDesc lin;
  int64_t numel = 0;         // noise and denoise_step: elements of x
  int64_t per_sample = 0;    // noise and denoise_step: elements of one image
  std::vector<int64_t> param_sizes;  // optim: one entry per parameter tensor
  double bytes = 0, flops = 0;
  std::string label() const;  // "group_norm fwd": what --filter matches
};

struct WorkloadOptions {
  std::vector<std::string> configs;
  std::vector<int64_t> batches;
  bool large = true;
  bool cuda = false;  // the large shapes are larger on a GPU
  std::string filter;
};

// Every workload of every config and batch (deduplicated: a shape that occurs at several levels is
// one workload naming them all), then the large ones; only those whose label contains filter.
std::vector<Workload> kernel_workloads(const WorkloadOptions& options);

}  // namespace diffuse::bench
