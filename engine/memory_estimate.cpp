// See memory_estimate.h. The walk mirrors UNet2D's constructor (nn/unet2d.cpp) level by level,
// in doubles; tests/cpu/test_memory_estimate.cpp checks the parameter count against the built
// model for every named config.
#include "engine/memory_estimate.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>

#include "nn/runtime.h"

namespace diffuse {

namespace {

constexpr double kFloatBytes = 4;
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

double conv(double in, double out, double k) { return out * in * k * k + out; }
double linear(double in, double out) { return in * out + out; }
double group_norm(double c) { return 2 * c; }
double resnet(double in, double out, double temb) {
  return group_norm(in) + conv(in, out, 3) + linear(temb, out) + group_norm(out) + conv(out, out, 3) +
         (in != out ? conv(in, out, 1) : 0);
}
double attention(double c) { return group_norm(c) + 4 * linear(c, c); }

// Visits the UNet's blocks in build order with the channels and resolution (pixels per channel)
// each works at: resnet(in, out, pixels), attention(channels, pixels), conv(out, pixels).
template <class Resnet, class Attention, class Conv>
void walk(const UNet2DConfig& c, Resnet on_resnet, Attention on_attention, Conv on_conv) {
  const auto& ch = c.block_out_channels;
  const size_t levels = ch.size();
  const double layers = c.layers_per_block;
  double side = c.sample_size;
  on_conv(ch[0], side * side);
  double out = ch[0];
  for (size_t i = 0; i < levels; ++i) {
    const double in = out;
    out = ch[i];
    const bool attn = i < c.down_block_types.size() && c.down_block_types[i] == "AttnDownBlock2D";
    if (layers >= 1) {
      on_resnet(in, out, side * side, 1.0);
      on_resnet(out, out, side * side, layers - 1);
      if (attn) on_attention(out, side * side, layers);
    }
    if (i + 1 != levels) {
      side = std::max(1.0, side / 2);
      on_conv(out, side * side);
    }
  }
  const double mid = ch.back();
  on_resnet(mid, mid, side * side, 2.0);
  on_attention(mid, side * side, 1.0);
  out = mid;
  for (size_t i = 0; i < levels; ++i) {
    const double prev = out;
    out = ch[levels - 1 - i];
    const double in = ch[levels >= 2 + i ? levels - 2 - i : 0];
    const bool attn = i < c.up_block_types.size() && c.up_block_types[i] == "AttnUpBlock2D";
    // j = 0: prev + out; 0 < j < layers: out + out; j = layers: out + in (the last one when layers is 0).
    if (layers >= 1) {
      on_resnet(prev + out, out, side * side, 1.0);
      on_resnet(out + out, out, side * side, layers - 1);
      on_resnet(out + in, out, side * side, 1.0);
    } else {
      on_resnet(prev + in, out, side * side, 1.0);
    }
    if (attn) on_attention(out, side * side, layers + 1);
    if (i + 1 != levels) {
      side *= 2;
      on_conv(out, side * side);
    }
  }
  on_conv(ch[0], side * side);
}

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GiB", bytes / kGiB);
  return buf;
}

}  // namespace

double unet_parameter_count(const UNet2DConfig& c) {
  if (c.block_out_channels.empty()) return 0;
  const auto& ch = c.block_out_channels;
  const double temb = 4.0 * ch[0];
  double n = conv(c.in_channels, ch[0], 3) + linear(ch[0], temb) + linear(temb, temb);
  if (c.num_class_embeds) n += static_cast<double>(*c.num_class_embeds) * temb;
  // Convolutions in the walk are the down/upsamplers (out -> out, 3x3); conv_in and conv_out are
  // counted here, so the walk's first and last conv (the in/out resolutions) add nothing.
  int convs_seen = 0;
  const size_t total_convs = 2 * ch.size();  // conv_in, levels-1 down, levels-1 up, conv_out
  walk(
      c, [&](double in, double out, double, double times) { n += times * resnet(in, out, temb); },
      [&](double channels, double, double times) { n += times * attention(channels); },
      [&](double out, double) {
        ++convs_seen;
        if (convs_seen != 1 && convs_seen != static_cast<int>(total_convs)) n += conv(out, out, 3);
      });
  n += group_norm(ch[0]) + conv(ch[0], c.out_channels, 3);
  return n;
}

double unet_activation_elements(const UNet2DConfig& c, bool training) {
  if (c.block_out_channels.empty()) return 0;
  // Training keeps, per resnet, its input and about four tensors of its output's size (the
  // norms' and convolutions' outputs); per attention block about six token tensors (norm, q, k, v,
  // attention, projection). Sampling holds the skip connections plus the largest layer's working set.
  double kept = 0, largest = 0;
  walk(
      c,
      [&](double in, double out, double pixels, double times) {
        kept += times * (in + 4 * out) * pixels;
        largest = std::max(largest, (in + 2 * out) * pixels);
      },
      [&](double channels, double pixels, double times) {
        kept += times * 6 * channels * pixels;
        largest = std::max(largest, 5 * channels * pixels);
      },
      [&](double out, double pixels) {
        kept += out * pixels;
        largest = std::max(largest, 2 * out * pixels);
      });
  return training ? kept : kept / 4 + largest;
}

MemoryEstimate training_memory(const UNet2DConfig& config, int64_t batch, double dataset_bytes) {
  MemoryEstimate e;
  // The model, its gradients, AdamW's two moments, the EMA and the EMA model used for sample grids.
  e.weight_bytes = 6 * kFloatBytes * unet_parameter_count(config);
  e.activation_bytes = kFloatBytes * static_cast<double>(batch) * unet_activation_elements(config, true);
  e.dataset_bytes = dataset_bytes;
  return e;
}

MemoryEstimate sampling_memory(const UNet2DConfig& config, int64_t batch) {
  MemoryEstimate e;
  e.weight_bytes = kFloatBytes * unet_parameter_count(config);
  e.activation_bytes = kFloatBytes * static_cast<double>(batch) * unet_activation_elements(config, false);
  return e;
}

double available_memory(Device device) {
  if (device == Device::cuda) {
    const auto devices = cuda_devices();
    return devices.empty() ? 0 : static_cast<double>(devices[0].memory_bytes);
  }
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  double kib = 0;
  while (meminfo >> key >> kib) {
    if (key == "MemAvailable:") return kib * 1024;
    meminfo.ignore(64, '\n');
  }
  return 0;
}

void require_memory(const MemoryEstimate& e, Device device, const std::string& what, const std::string& batch_name,
                    const std::string& config_name) {
  const double available = available_memory(device);
  if (available <= 0 || e.total() <= available) return;
  const bool batch_is_why = e.activation_bytes >= e.weight_bytes + e.dataset_bytes;
  std::string parts = "weights and optimizer state " + gib(e.weight_bytes) + ", activations " + gib(e.activation_bytes);
  if (e.dataset_bytes > 0) parts += ", dataset " + gib(e.dataset_bytes);
  const std::string where =
      device == Device::cuda ? "the CUDA device's " + gib(available) : gib(available) + " available (MemAvailable)";
  throw Error((batch_is_why ? batch_name : config_name) + ": " + what + " needs about " + gib(e.total()) + " (" +
                  parts + "), more than " + where,
              batch_is_why ? ErrorKind::usage : ErrorKind::bad_input);
}

}  // namespace diffuse
