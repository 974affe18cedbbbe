// How much memory a training or sampling run needs, estimated from the UNet config and the batch
// before anything is allocated (issue 13 class 4, docs/design.md §8): an absurd request
// (`--batch 1000000`, a config with `layers_per_block: 1e9`) is refused at once, naming the flag
// or file and the size in GiB, instead of allocating for a minute and ending in std::bad_alloc.
// The estimate counts what a run cannot do without (weights, gradients, AdamW moments, EMA
// weights, the activations kept for the backward pass, the dataset) and no allocator slack, so it
// stays below the real peak: it refuses only what cannot fit.
#pragma once
#include <cstdint>
#include <string>

#include "diffuse/device.h"
#include "diffuse/error.h"
#include "nn/unet_config.h"

namespace diffuse {

struct MemoryEstimate {
  double weight_bytes = 0;      // parameters and everything sized like them (grads, moments, EMA)
  double activation_bytes = 0;  // the forward pass's tensors for one batch
  double dataset_bytes = 0;     // the decoded training images
  double total() const { return weight_bytes + activation_bytes + dataset_bytes; }
};

// The UNet's parameter count, walked from the config the way nn/unet2d.cpp builds it (a double:
// an absurd config must not overflow). Equals UNet2D(config).parameters()' total for a valid one.
double unet_parameter_count(const UNet2DConfig& config);
// Elements of the activations one sample's forward pass keeps for the backward pass (training) or
// holds at once (sampling: the skip connections plus the largest layer).
double unet_activation_elements(const UNet2DConfig& config, bool training);

MemoryEstimate training_memory(const UNet2DConfig& config, int64_t batch, double dataset_bytes);
// `batch` counts the UNet's forward batch (twice the images with classifier-free guidance).
MemoryEstimate sampling_memory(const UNet2DConfig& config, int64_t batch);

// Bytes `device` can give a run now: MemAvailable from /proc/meminfo for the CPU, the device's
// memory for CUDA (the device seam reports its total). 0 when unknown (nothing is refused).
double available_memory(Device device);

// Throws diffuse::Error when `estimate` exceeds available_memory(device). The message names
// `batch_name` (e.g. "--batch 1000000") when the activations are most of it, else `config_name`
// (the config file or name), with both sizes in GiB; ErrorKind::usage for the batch, bad_input for
// the config.
void require_memory(const MemoryEstimate& estimate, Device device, const std::string& what,
                    const std::string& batch_name, const std::string& config_name);

}  // namespace diffuse
