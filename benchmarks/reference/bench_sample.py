"""The PyTorch side of `diffuse bench sample`: DDPM (1000 steps), DDIM (50) and DPM-Solver++(2M)
(20) with the UNet of benchmarks/reference/unet.py, timed as diffuse times them: one warm-up
forward per batch size, then each sampler's first K steps (--steps; default all on CUDA, 3 on the
CPU) timed one by one, and the total extrapolated as steps x median when not every step ran.

The sampler updates follow diffusers' schedulers for linear betas 1e-4..0.02, epsilon
prediction, clip_sample for DDPM/DDIM, eta 0, "leading" spacing (DDPM/DDIM) and "linspace"
(DPM-Solver++); they are here for timing — one UNet forward and a few element-wise ops per
step — and are not a parity reference.

usage: bench_sample.py --config tiny [--batch 64,1] [--samplers ddpm,ddim,dpmpp-2m] [--steps K]
                       [--device cpu|cuda] [--modes eager,...] [--threads N] [--json FILE]
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402
from unet import UNet2DModel  # noqa: E402

NOMINAL = {"ddpm": 1000, "ddim": 50, "dpmpp-2m": 20}
T = 1000


class Sampler:
    def __init__(self, kind, steps, device):
        betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float32).double()
        self.ab = torch.cumprod(1 - betas, 0).tolist()
        self.kind, self.device = kind, device
        if kind == "dpmpp-2m":
            ts = torch.linspace(0, T - 1, steps + 1).round().flip(0)[:-1]
            self.timesteps = [int(t) for t in ts]
        else:
            self.timesteps = [i * (T // steps) for i in reversed(range(steps))]
        self.x0_prev, self.h_prev = None, None

    def alpha_bar(self, i):
        if i + 1 >= len(self.timesteps):
            return 1.0
        return self.ab[self.timesteps[i + 1]]

    def step(self, i, eps, x):
        t = self.timesteps[i]
        ab_t, ab_prev = self.ab[t], self.alpha_bar(i)
        a_t, s_t = ab_t ** 0.5, (1 - ab_t) ** 0.5
        x0 = (x - s_t * eps) / a_t
        if self.kind == "ddpm":
            x0 = x0.clamp(-1, 1)
            beta = 1 - ab_t / ab_prev
            mean = (ab_prev ** 0.5 * beta / (1 - ab_t)) * x0 + ((1 - beta) ** 0.5 * (1 - ab_prev) / (1 - ab_t)) * x
            if i + 1 < len(self.timesteps):
                var = max((1 - ab_prev) / (1 - ab_t) * beta, 1e-20)
                mean = mean + var ** 0.5 * torch.randn_like(x)
            return mean
        if self.kind == "ddim":
            x0 = x0.clamp(-1, 1)
            eps = (x - a_t * x0) / s_t
            return ab_prev ** 0.5 * x0 + (1 - ab_prev) ** 0.5 * eps
        # DPM-Solver++(2M), data prediction, midpoint; first order first and at the last step.
        a_n, s_n = ab_prev ** 0.5, max(1 - ab_prev, 0.0) ** 0.5
        lam_t = torch.log(torch.tensor(a_t / s_t)).item()
        if s_n == 0:
            out = x0
            h = None
        else:
            h = torch.log(torch.tensor(a_n / s_n)).item() - lam_t
            d = x0
            if self.x0_prev is not None and i + 1 < len(self.timesteps):
                r = self.h_prev / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * self.x0_prev
            out = (s_n / s_t) * x - a_n * (torch.expm1(torch.tensor(-h)).item()) * d
        self.x0_prev, self.h_prev = x0, h
        return out


def run_mode(cfg, mode, args, device):
    torch.manual_seed(args.seed)
    model = UNet2DModel(cfg).to(device).eval()
    model, autocast = bc.prepare(model, mode)
    S, C = cfg["sample_size"], cfg["in_channels"]
    cap = args.steps if args.steps > 0 else (3 if device == "cpu" else 0)
    results = []
    with torch.no_grad():
        for B in [int(b) for b in args.batch.split(",")]:
            warm = bc.to_mode(torch.zeros(B, C, S, S, device=device), mode)
            with autocast:
                model(warm, torch.tensor([500], device=device))
            bc.sync(device)
            for name in args.samplers.split(","):
                if name not in NOMINAL:
                    raise SystemExit(f"--samplers {name}: expected ddpm, ddim or dpmpp-2m")
                sampler = Sampler(name, NOMINAL[name], device)
                n = len(sampler.timesteps)
                timed = min(cap, n) if cap > 0 else n
                x = bc.to_mode(torch.randn(B, C, S, S, device=device), mode)
                ms = []
                for i in range(timed):
                    t0 = time.perf_counter()
                    t = torch.tensor([sampler.timesteps[i]], device=device)
                    with autocast:
                        eps = model(x, t)
                    x = sampler.step(i, eps.float(), x)
                    bc.sync(device)
                    ms.append(1e3 * (time.perf_counter() - t0))
                per = bc.median(ms)
                total = (sum(ms) if timed == n else per * n) * 1e-3
                r = {"mode": mode, "sampler": name, "steps": n, "batch": B, "timed_steps": timed, "step_ms": per,
                     "total_s": total, "extrapolated": timed != n, "images_per_second": B / total}
                print(f"  {mode:19s} {name:9s} {n:5d} steps, batch {B:4d}: {per:9.1f} ms/step, {total:9.2f} s"
                      f"{'*' if timed != n else ''}", flush=True)
                results.append(r)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--batch", default="64,1")
    ap.add_argument("--samplers", default="ddpm,ddim,dpmpp-2m")
    ap.add_argument("--steps", type=int, default=0, help="time only the first K steps (0: all on cuda, 3 on cpu)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--modes", default="eager,channels_last_bf16,compile")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: PyTorch sees no CUDA device")
    bc.setup_threads(args.threads)
    cfg = bc.load_config(args.config)
    modes, skipped = bc.available_modes(args.device, args.modes.split(","))
    print(f"pytorch {torch.__version__} sample: {args.config} on {args.device}; modes {', '.join(modes)}"
          + "".join(f"; {m} skipped ({why})" for m, why in skipped.items()), flush=True)
    results = []
    for m in modes:
        results += run_mode(cfg, m, args, args.device)
    report = bc.context(args.device)
    report.update({"benchmark": "sample", "config": args.config, "results": results, "skipped": skipped})
    bc.write_json(args.json, report)


if __name__ == "__main__":
    main()
