"""diffusers' UNet2DModel rebuilt in plain PyTorch (no diffusers), from the same config.json.

The reference for diffuse's parity tests and benchmarks: same parameter names, same arithmetic
(NCHW, OIHW conv weights, as diffusers stores them). Supports the config keys diffuse supports.
"""
import json
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def timestep_embedding(t, dim, flip_sin_to_cos, freq_shift):
    half = dim // 2
    exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - freq_shift)
    emb = t[:, None].float() * torch.exp(exponent)[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1, 0, 0))
    return emb


class TimestepEmbedding(nn.Module):
    def __init__(self, cin, dim):
        super().__init__()
        self.linear_1 = nn.Linear(cin, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


class ResnetBlock2D(nn.Module):
    def __init__(self, cin, cout, temb, groups, eps, dropout):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        s = self.conv_shortcut(x) if self.conv_shortcut is not None else x
        return s + h


class Attention(nn.Module):
    def __init__(self, channels, head_dim, groups, eps):
        super().__init__()
        self.heads = channels // head_dim
        self.group_norm = nn.GroupNorm(groups, channels, eps=eps)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])

    def forward(self, x):
        n, c, h, w = x.shape
        t = self.group_norm(x).view(n, c, h * w).transpose(1, 2)
        d = c // self.heads

        def split(z):
            return z.view(n, h * w, self.heads, d).transpose(1, 2)

        q, k, v = split(self.to_q(t)), split(self.to_k(t)), split(self.to_v(t))
        p = torch.softmax((q.float() @ k.float().transpose(-1, -2)) / math.sqrt(d), dim=-1).to(q.dtype)
        a = (p @ v).transpose(1, 2).reshape(n, h * w, c)
        out = self.to_out[0](a).transpose(1, 2).reshape(n, c, h, w)
        return out + x


class Downsample2D(nn.Module):
    def __init__(self, channels, padding):
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x):
        if self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample2D(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.resnets = nn.ModuleList()
        self.attentions = nn.ModuleList()


class UNet2DModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        ch = cfg["block_out_channels"]
        L = cfg.get("layers_per_block", 2)
        groups = cfg.get("norm_num_groups", 32)
        eps = cfg.get("norm_eps", 1e-5)
        drop = cfg.get("dropout", 0.0)
        hd = cfg.get("attention_head_dim", 8)
        head = (lambda c: c) if hd is None else (lambda c: hd)
        temb = 4 * ch[0]
        self.conv_in = nn.Conv2d(cfg["in_channels"], ch[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(ch[0], temb)
        if cfg.get("num_class_embeds"):
            self.class_embedding = nn.Embedding(cfg["num_class_embeds"], temb)
        else:
            self.class_embedding = None
        self.down_blocks = nn.ModuleList()
        out = ch[0]
        for i, kind in enumerate(cfg["down_block_types"]):
            cin, out = out, ch[i]
            b = Block()
            for j in range(L):
                b.resnets.append(ResnetBlock2D(cin if j == 0 else out, out, temb, groups, eps, drop))
                if kind == "AttnDownBlock2D":
                    b.attentions.append(Attention(out, head(out), groups, eps))
            if i != len(ch) - 1:
                b.downsamplers = nn.ModuleList([Downsample2D(out, cfg.get("downsample_padding", 1))])
            else:
                b.downsamplers = None
            self.down_blocks.append(b)
        mid = ch[-1]
        self.mid_block = Block()
        self.mid_block.resnets.append(ResnetBlock2D(mid, mid, temb, groups, eps, drop))
        self.mid_block.attentions.append(Attention(mid, head(mid), groups, eps))
        self.mid_block.resnets.append(ResnetBlock2D(mid, mid, temb, groups, eps, drop))
        self.up_blocks = nn.ModuleList()
        rev = list(reversed(ch))
        out = rev[0]
        for i, kind in enumerate(cfg["up_block_types"]):
            prev, out = out, rev[i]
            cin = rev[min(i + 1, len(ch) - 1)]
            b = Block()
            for j in range(L + 1):
                skip = cin if j == L else out
                rin = prev if j == 0 else out
                b.resnets.append(ResnetBlock2D(rin + skip, out, temb, groups, eps, drop))
                if kind == "AttnUpBlock2D":
                    b.attentions.append(Attention(out, head(out), groups, eps))
            b.upsamplers = nn.ModuleList([Upsample2D(out)]) if i != len(ch) - 1 else None
            self.up_blocks.append(b)
        self.conv_norm_out = nn.GroupNorm(groups, ch[0], eps=eps)
        self.conv_out = nn.Conv2d(ch[0], cfg["out_channels"], 3, padding=1)

    def forward(self, x, t, class_labels=None):
        cfg = self.cfg
        if cfg.get("center_input_sample"):
            x = 2 * x - 1.0
        if t.dim() == 0 or t.numel() == 1:
            t = t.reshape(1).expand(x.shape[0])
        emb = timestep_embedding(t, cfg["block_out_channels"][0], cfg.get("flip_sin_to_cos", True), cfg.get("freq_shift", 0))
        emb = self.time_embedding(emb.to(x.dtype))
        if self.class_embedding is not None:
            emb = emb + self.class_embedding(class_labels).to(emb.dtype)
        h = self.conv_in(x)
        skips = [h]
        for b in self.down_blocks:
            for j, r in enumerate(b.resnets):
                h = r(h, emb)
                if len(b.attentions):
                    h = b.attentions[j](h)
                skips.append(h)
            if b.downsamplers is not None:
                h = b.downsamplers[0](h)
                skips.append(h)
        h = self.mid_block.resnets[0](h, emb)
        h = self.mid_block.attentions[0](h)
        h = self.mid_block.resnets[1](h, emb)
        for b in self.up_blocks:
            for j, r in enumerate(b.resnets):
                h = r(torch.cat([h, skips.pop()], dim=1), emb)
                if len(b.attentions):
                    h = b.attentions[j](h)
            if b.upsamplers is not None:
                h = b.upsamplers[0](h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


def load_model(model_dir, device="cpu"):
    """A diffusers-layout directory (unet/config.json) or a bare config.json + safetensors."""
    import os

    from safetensors_io import load

    sub = os.path.join(model_dir, "unet")
    d = sub if os.path.isdir(sub) else model_dir
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    model = UNet2DModel(cfg)
    state = load(os.path.join(d, "diffusion_pytorch_model.safetensors"))
    model.load_state_dict(state, strict=True)
    return model.to(device), cfg
