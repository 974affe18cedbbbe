// See flops.h. The walk mirrors UNet2D's constructor (nn/unet2d.cpp): the same blocks, channel
// counts and resolutions, each GEMM-shaped op counted where the forward runs it.
#include "benchmarks/flops.h"

#include <algorithm>

namespace diffuse::bench {

namespace {

// Sums one forward's FLOPs for `n` images; `side` is the resolution the next op runs at.
struct Counter {
  double n = 0;
  double flops = 0;

  void conv(double side, int kernel, int in, int out) { flops += 2 * n * side * side * kernel * kernel * in * out; }
  void linear(double rows, int in, int out) { flops += 2 * rows * in * out; }

  // conv1 3x3, the time-embedding projection, conv2 3x3, and a 1x1 shortcut when the width changes.
  void resnet(double side, int in, int out, int temb) {
    conv(side, 3, in, out);
    linear(n, temb, out);
    conv(side, 3, out, out);
    if (in != out) conv(side, 1, in, out);
  }

  // q, k, v and out projections over every position, then softmax(q kᵀ) v: two batched GEMMs of
  // L x L x C each (the heads split C, they do not change the count).
  void attention(double side, int channels) {
    const double positions = side * side;
    linear(n * positions, channels, channels);
    linear(n * positions, channels, channels);
    linear(n * positions, channels, channels);
    linear(n * positions, channels, channels);
    flops += 2 * (2 * n * positions * positions * channels);
  }
};

}  // namespace

double unet_forward_flops(const UNet2DConfig& config, int64_t batch) {
  Counter c;
  c.n = static_cast<double>(batch);
  const auto& ch = config.block_out_channels;
  const int levels = static_cast<int>(ch.size());
  const int temb = config.time_embed_dim();
  const auto side_at = [&](int level) { return static_cast<double>(config.sample_size >> level); };

  c.conv(side_at(0), 3, config.in_channels, ch[0]);
  c.linear(c.n, ch[0], temb);  // the timestep embedding's two linears
  c.linear(c.n, temb, temb);

  int out = ch[0];
  for (int i = 0; i < levels; ++i) {
    const int in = out;
    out = ch[i];
    const bool attn = config.down_block_types[i] == "AttnDownBlock2D";
    for (int j = 0; j < config.layers_per_block; ++j) {
      c.resnet(side_at(i), j == 0 ? in : out, out, temb);
      if (attn) c.attention(side_at(i), out);
    }
    if (i != levels - 1) c.conv(side_at(i + 1), 3, out, out);  // the stride-2 downsampler
  }

  const int mid = ch.back();
  c.resnet(side_at(levels - 1), mid, mid, temb);
  c.attention(side_at(levels - 1), mid);
  c.resnet(side_at(levels - 1), mid, mid, temb);

  out = ch.back();
  for (int i = 0; i < levels; ++i) {
    const int level = levels - 1 - i;
    const int prev = out;
    out = ch[level];
    const int in = ch[std::max(levels - 2 - i, 0)];
    const bool attn = config.up_block_types[i] == "AttnUpBlock2D";
    for (int j = 0; j <= config.layers_per_block; ++j) {
      const int skip = j == config.layers_per_block ? in : out;
      c.resnet(side_at(level), (j == 0 ? prev : out) + skip, out, temb);
      if (attn) c.attention(side_at(level), out);
    }
    if (i != levels - 1) c.conv(side_at(level - 1), 3, out, out);  // the conv after the nearest 2x upsample
  }

  c.conv(side_at(0), 3, ch[0], config.out_channels);
  return c.flops;
}

double unet_train_step_flops(const UNet2DConfig& config, int64_t batch) {
  return 3 * unet_forward_flops(config, batch);
}

}  // namespace diffuse::bench
