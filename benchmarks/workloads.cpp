// See workloads.h. Work counts are for f32 and count each tensor once (the fewest bytes a kernel
// must move: inputs read once, outputs written once, no intermediates); FLOPs count multiply-adds
// as two and a transcendental as one, so element-wise FLOPs are approximate by nature — those
// kernels are bandwidth-bound and are judged by GB/s.
#include "benchmarks/workloads.h"

#include <map>

#include "diffuse/error.h"
#include "nn/unet2d.h"

namespace diffuse::bench {

namespace {

constexpr double kF32 = 4;

std::string dims(std::initializer_list<int64_t> d) {
  std::string s = "[";
  for (int64_t v : d) {
    if (s.size() > 1) s += ",";
    s += std::to_string(v);
  }
  return s + "]";
}

Workload make_noise(int64_t batch, int64_t per_sample, const std::string& image) {
  Workload w;
  w.family = Family::noise;
  w.pass = "epsilon";
  w.batch = batch;
  w.numel = batch * per_sample;
  w.per_sample = per_sample;
  w.shape = "x0 [" + std::to_string(batch) + "," + image + "]";
  w.bytes = kF32 * (3.0 * w.numel + 2.0 * batch);  // x0 in; x_t, target out; two coefficients per image
  w.flops = 3.0 * w.numel;                         // the blend only; Philox and Box-Muller are not FLOPs
  return w;
}

Workload make_denoise(const std::string& variant, int64_t batch, int64_t per_sample, const std::string& image) {
  Workload w;
  w.family = Family::denoise_step;
  w.pass = variant;
  w.batch = batch;
  w.numel = batch * per_sample;
  w.per_sample = per_sample;
  w.shape = "x [" + std::to_string(batch) + "," + image + "]";
  w.bytes = kF32 * 4.0 * w.numel;  // x, model output in; x_prev, x0 out
  w.flops = (variant == "ddim" ? 10.0 : 8.0) * w.numel;
  return w;
}

Workload make_group_norm(const std::string& pass, int64_t n, int64_t res, int64_t c, int64_t groups, double eps) {
  Workload w;
  w.family = Family::group_norm;
  w.pass = pass;
  w.batch = n;
  w.gn.n = n;
  w.gn.spatial = res * res;
  w.gn.channels = c;
  w.gn.groups = groups;
  w.gn.eps = eps;
  w.gn.silu = true;  // the ResnetBlock norm2 form: + time embedding per (n, c), then SiLU
  w.shape = dims({n, res, res, c}) + " g" + std::to_string(groups) + " +temb silu";
  const double e = double(n) * res * res * c, nc = double(n) * c, stats = 16.0 * n * groups;
  if (pass == "fwd") {
    w.bytes = kF32 * (2 * e + nc + 2 * c) + stats;  // x, add_nc, gamma, beta in; y out; mean/rstd (f64) out
    w.flops = 11 * e;
  } else {
    w.bytes = kF32 * (3 * e + 2 * nc + 4 * c) + stats;  // x, dy, add_nc, gamma, beta, stats in; dx, dadd, dgamma, dbeta out
    w.flops = 20 * e;
  }
  return w;
}

Workload make_attention(const std::string& pass, int64_t n, int64_t len, int64_t heads, int64_t head_dim,
                        const std::string& grid) {
  Workload w;
  w.family = Family::attention;
  w.pass = pass;
  w.batch = n;
  w.attn = {n, len, heads, head_dim};
  w.shape = "N" + std::to_string(n) + " L" + std::to_string(len) + " (" + grid + ") " + std::to_string(heads) +
            "x" + std::to_string(head_dim);
  const double qkv = double(n) * len * heads * head_dim, core = double(n) * heads * len * len * head_dim;
  if (pass == "fwd") {
    w.bytes = kF32 * 4 * qkv;  // q, k, v in; out out (flash-style: no L×L matrix in memory)
    w.flops = 4 * core;        // q·kᵀ and p·v
  } else {
    w.bytes = kF32 * 8 * qkv;  // q, k, v, out, dout in; dq, dk, dv out
    w.flops = 10 * core;       // recomputed q·kᵀ, then dv, dp, dq, dk
  }
  return w;
}

Workload make_conv(const std::string& pass, int64_t n, int64_t res, int64_t c) {
  Workload w;
  w.family = Family::conv2d;
  w.pass = pass;
  w.batch = n;
  w.conv.n = n;
  w.conv.h = w.conv.w = res;
  w.conv.cin = w.conv.cout = c;
  w.conv.kh = w.conv.kw = 3;
  w.conv.pad_top = w.conv.pad_bottom = w.conv.pad_left = w.conv.pad_right = 1;
  w.shape = dims({n, res, res, c}) + " 3x3 ->" + std::to_string(c);
  const double act = double(n) * res * res * c, wt = 9.0 * c * c, mac = act * 9.0 * c;
  if (pass == "fwd") {
    w.bytes = kF32 * (2 * act + wt + c);
    w.flops = 2 * mac;
  } else {
    w.bytes = kF32 * (3 * act + 2 * wt + c + c);  // x, w, dy in; dx, dw, dbias out
    w.flops = 4 * mac;
  }
  return w;
}

Workload make_linear(int64_t rows, int64_t in, int64_t out, const std::string& what) {
  Workload w;
  w.family = Family::linear;
  w.pass = "fwd";
  w.lin = {rows, in, out};
  w.shape = what + " [" + std::to_string(rows) + "," + std::to_string(in) + "]->" + std::to_string(out);
  w.bytes = kF32 * (double(rows) * in + double(in) * out + out + double(rows) * out);
  w.flops = 2.0 * rows * in * out;
  return w;
}

Workload make_optim(const std::vector<int64_t>& sizes, const std::string& what) {
  Workload w;
  w.family = Family::optim;
  w.pass = "adamw+ema";
  w.param_sizes = sizes;
  double total = 0;
  for (int64_t s : sizes) total += double(s);
  w.shape = what + " " + std::to_string(sizes.size()) + " tensors, " + std::to_string(int64_t(total)) + " params";
  w.bytes = kF32 * 9 * total;  // param, grad, m, v, ema in; param, m, v, ema out
  w.flops = 17 * total;
  return w;
}

bool matches(const Workload& w, const std::string& filter) {
  return filter.empty() || w.label().find(filter) != std::string::npos;
}

}  // namespace

const char* family_name(Family f) {
  switch (f) {
    case Family::noise: return "noise";
    case Family::group_norm: return "group_norm";
    case Family::attention: return "attention";
    case Family::denoise_step: return "denoise_step";
    case Family::optim: return "optim";
    case Family::conv2d: return "conv2d";
    case Family::linear: return "linear";
  }
  return "?";
}

std::string Workload::label() const { return std::string(family_name(family)) + " " + pass; }

UNetShapes unet_shapes(const std::string& config) {
  UNetShapes s;
  s.config = config;
  s.cfg = resolve_unet_config(config);
  const auto& ch = s.cfg.block_out_channels;
  const int n = static_cast<int>(ch.size());
  for (int i = 0; i < n; ++i) {
    UNetLevel l;
    l.name = "L";
    l.name += std::to_string(i);  // not "L" + ...: g++ 12 -O3 warns a false -Wrestrict on that
    l.res = s.cfg.sample_size >> i;
    l.channels = ch[i];
    l.attention = s.cfg.down_block_types[i] == "AttnDownBlock2D" || s.cfg.up_block_types[n - 1 - i] == "AttnUpBlock2D";
    l.head_dim = s.cfg.head_dim_for(ch[i]);
    l.heads = l.channels / l.head_dim;
    s.levels.push_back(l);
  }
  UNetLevel mid = s.levels.back();
  mid.name = "mid";
  mid.attention = true;
  s.levels.push_back(mid);
  return s;
}

std::vector<Workload> kernel_workloads(const WorkloadOptions& o) {
  std::vector<Workload> out;
  // (label, shape) -> index in out, per config and batch: one workload per distinct shape.
  for (const std::string& config : o.configs) {
    UNetShapes u = unet_shapes(config);
    const UNet2DConfig& cfg = u.cfg;
    const std::string image = std::to_string(cfg.sample_size) + "," + std::to_string(cfg.sample_size) + "," +
                              std::to_string(cfg.in_channels);
    const int64_t per_sample = int64_t(cfg.sample_size) * cfg.sample_size * cfg.in_channels;
    for (int64_t b : o.batches) {
      std::vector<Workload> here;
      std::map<std::string, size_t> seen;
      auto add = [&](Workload w, const std::string& level) {
        w.config = config;
        const std::string key = w.label() + "|" + w.shape;
        auto it = seen.find(key);
        if (it != seen.end()) {
          here[it->second].where += "+" + level;
          return;
        }
        w.where = config + " b" + std::to_string(b) + (level.empty() ? "" : " " + level);
        seen[key] = here.size();
        here.push_back(w);
      };
      add(make_noise(b, per_sample, image), "");
      for (const UNetLevel& l : u.levels)
        for (const char* pass : {"fwd", "bwd"}) add(make_group_norm(pass, b, l.res, l.channels, cfg.norm_num_groups, cfg.norm_eps), l.name);
      for (const UNetLevel& l : u.levels) {
        if (!l.attention) continue;
        const std::string grid = std::to_string(l.res) + "x" + std::to_string(l.res);
        for (const char* pass : {"fwd", "bwd"}) add(make_attention(pass, b, l.res * l.res, l.heads, l.head_dim, grid), l.name);
      }
      for (const char* variant : {"ddpm", "ddim"}) add(make_denoise(variant, b, per_sample, image), "");
      for (const UNetLevel& l : u.levels)
        for (const char* pass : {"fwd", "bwd"}) add(make_conv(pass, b, l.res, l.channels), l.name);
      for (const UNetLevel& l : u.levels)
        if (l.attention) add(make_linear(b * l.res * l.res, l.channels, l.channels, "to_q"), l.name);
      for (Workload& w : here)
        if (matches(w, o.filter)) out.push_back(std::move(w));
    }
    // The optimizer walks the model's parameter list, whatever the batch.
    Workload probe = make_optim({}, "");
    if (matches(probe, o.filter)) {
      UNet2D model(cfg, 0);
      std::vector<int64_t> sizes;
      for (const Tensor& p : model.parameters()) sizes.push_back(p.numel());
      Workload w = make_optim(sizes, config);
      w.config = config;
      w.where = config + " params";
      out.push_back(std::move(w));
    }
  }
  if (o.large) {
    const bool g = o.cuda;
    std::vector<Workload> large;
    large.push_back(make_noise(64, 256 * 256 * 3, "256,256,3"));
    for (const char* pass : {"fwd", "bwd"}) large.push_back(make_group_norm(pass, 16, 64, 256, 32, 1e-5));
    for (const char* pass : {"fwd", "bwd"})
      large.push_back(g ? make_attention(pass, 4, 4096, 8, 64, "64x64") : make_attention(pass, 4, 1024, 8, 64, "32x32"));
    for (const char* variant : {"ddpm", "ddim"}) large.push_back(make_denoise(variant, 64, 256 * 256 * 3, "256,256,3"));
    for (const char* pass : {"fwd", "bwd"}) large.push_back(g ? make_conv(pass, 32, 64, 256) : make_conv(pass, 8, 64, 128));
    large.push_back(g ? make_linear(65536, 1024, 1024, "dense") : make_linear(16384, 512, 512, "dense"));
    large.push_back(make_optim(std::vector<int64_t>(g ? 256 : 64, int64_t(1) << 20), "1M x"));
    for (Workload& w : large) w.where = "large";
    // ddpm-cifar10's 16×16 attention as its bf16 training step runs it (batch 128, one head of
    // 256), on each CUDA path: the flash kernels against the batched tensor-core GEMMs.
    if (g)
      for (const char* path : {"flash", "gemm"})
        for (const char* pass : {"fwd", "bwd"}) {
          Workload w = make_attention(pass, 128, 256, 1, 256, "16x16");
          w.bf16 = true;
          w.attention_path = path;
          w.bytes /= 2;  // bf16 storage
          w.shape += std::string(" bf16 ") + path;
          w.where = "ddpm-cifar10 b128 bf16";
          large.push_back(w);
        }
    for (Workload& w : large)
      if (matches(w, o.filter)) out.push_back(std::move(w));
  }
  return out;
}

}  // namespace diffuse::bench
