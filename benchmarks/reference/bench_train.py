"""The PyTorch side of `diffuse bench train`: the same training step on the same UNet, timed the
same way (warm-up steps, then the median of timed steps, data already on the device).

The step, as engine/trainer.cpp does it: timesteps and noise drawn, x_t = sqrt(ab)*x0 +
sqrt(1-ab)*noise, UNet forward (benchmarks/reference/unet.py, built from the same config.json
with PyTorch's default init), MSE against the noise, backward, clip_grad_norm_(1.0), AdamW
(lr 1e-4, PyTorch defaults otherwise), the EMA update (diffusers' warmup decay), zero_grad.

usage: bench_train.py --config tiny --batch 32 [--device cpu|cuda] [--modes eager,...]
                      [--warmup 1] [--iters 3] [--threads N] [--json FILE]
"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402
from unet import UNet2DModel  # noqa: E402


def ema_decay(step, inv_gamma=1.0, power=0.75, max_decay=0.9999):
    s = step - 1
    return 0.0 if s <= 0 else min(max_decay, 1 - (1 + s / inv_gamma) ** -power)


def run_mode(cfg, mode, args, device):
    baseline_rss = bc.current_rss_mib()
    torch.manual_seed(args.seed)
    model = UNet2DModel(cfg).to(device).train()
    params = [p for p in model.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    ema = [p.detach().clone() for p in params]
    step_model, autocast = bc.prepare(model, mode)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float32)
    ab = torch.cumprod(1 - betas.double(), 0)
    sqrt_ab, sqrt_1mab = ab.sqrt().float().to(device), (1 - ab).sqrt().float().to(device)
    S, C, B = cfg["sample_size"], cfg["in_channels"], args.batch
    x0 = bc.to_mode(torch.rand(B, C, S, S, device=device) * 2 - 1, mode)
    times = {"step": [], "forward": [], "backward": [], "optimizer": []}
    for step in range(1, args.warmup + args.iters + 1):
        t0 = time.perf_counter()
        t = torch.randint(0, 1000, (B,), device=device)
        noise = torch.randn_like(x0)
        x_t = sqrt_ab[t].view(B, 1, 1, 1) * x0 + sqrt_1mab[t].view(B, 1, 1, 1) * noise
        with autocast:
            pred = step_model(x_t, t)
        loss = F.mse_loss(pred.float(), noise)
        loss_value = loss.item()
        t1 = time.perf_counter()
        loss.backward()
        bc.sync(device)
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        d = ema_decay(step)
        with torch.no_grad():
            torch._foreach_mul_(ema, d)
            torch._foreach_add_(ema, params, alpha=1 - d)
        opt.zero_grad(set_to_none=True)
        bc.sync(device)
        t3 = time.perf_counter()
        timed = step > args.warmup
        print(f"  {mode} step {step}{'' if timed else ' (warm-up)'}: {1e3 * (t3 - t0):.1f} ms "
              f"(forward+loss {1e3 * (t1 - t0):.1f}, backward {1e3 * (t2 - t1):.1f}, optimizer {1e3 * (t3 - t2):.1f})"
              f", loss {loss_value:.4f}", flush=True)
        if timed:
            for k, v in (("step", t3 - t0), ("forward", t1 - t0), ("backward", t2 - t1), ("optimizer", t3 - t2)):
                times[k].append(1e3 * v)
    step_ms = bc.median(times["step"])
    return {"mode": mode, "step_ms": step_ms, "step_ms_all": times["step"], "forward_ms": bc.median(times["forward"]),
            "backward_ms": bc.median(times["backward"]), "optimizer_ms": bc.median(times["optimizer"]),
            "images_per_second": B / (step_ms * 1e-3), "params": sum(p.numel() for p in params),
            "baseline_rss_mib": baseline_rss, "peak_rss_mib": bc.peak_rss_mib()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--modes", default="eager,channels_last_bf16,compile")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (default: all cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: PyTorch sees no CUDA device")
    bc.setup_threads(args.threads)
    cfg = bc.load_config(args.config)
    modes, skipped = bc.available_modes(args.device, args.modes.split(","))
    print(f"pytorch {torch.__version__} train: {args.config}, batch {args.batch}, {args.device}, "
          f"{torch.get_num_threads()} threads; modes {', '.join(modes)}"
          + "".join(f"; {m} skipped ({why})" for m, why in skipped.items()), flush=True)
    results = []
    for m in modes:
        r = run_mode(cfg, m, args, args.device)
        print(f"{m}: median step {r['step_ms']:.1f} ms = {r['images_per_second']:.1f} images/s", flush=True)
        results.append(r)
    report = bc.context(args.device)
    report.update({"benchmark": "train", "config": args.config, "batch": args.batch, "warmup": args.warmup,
                   "iters": args.iters, "results": results, "skipped": skipped})
    bc.write_json(args.json, report)


if __name__ == "__main__":
    main()
