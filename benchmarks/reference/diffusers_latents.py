"""Produces the diffusers side of tests/cpu/test_diffusers_latents.cpp (issue 13's interop check).

`diffuse sample --noise FILE --out-raw FILE` must give the numbers a diffusers pipeline gives for
the same model, scheduler config and starting latents. This script, run once with diffusers
installed, writes everything that test needs, so the test itself needs neither diffusers nor torch:

  OUT/pipeline/          a tiny UNet2DModel (3 channels, so that NCHW/NHWC mix-ups show; random
                         weights from a fixed seed) and a DDPMScheduler config, saved by diffusers
                         itself (DDPMPipeline.save_pretrained) as a pipeline directory
  OUT/noise.safetensors  `noise`: the starting latents, NCHW f32, one per image
  OUT/expected.safetensors
                         `ddim` (DDIMScheduler, eta 0) and `dpmpp_2m` (DPMSolverMultistepScheduler:
                         dpmsolver++, order 2), both from_pretrained on that scheduler config: the
                         final latents of each loop, NCHW f32, unclamped

The loops are DDIMPipeline's and DPMSolver's as diffusers runs them: set_timesteps(n), then per
timestep model_output = unet(x, t).sample, x = scheduler.step(model_output, t, x).prev_sample.

usage: /tmp/dvenv/bin/python benchmarks/reference/diffusers_latents.py --out tests/data/diffusers_latents
(a venv with --system-site-packages for Debian's torch, plus `pip install diffusers==0.31.0`).
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import save  # noqa: E402

# What the test runs: these numbers are repeated in tests/cpu/test_diffusers_latents.cpp.
IMAGES = 2
DDIM_STEPS = 10
DPM_STEPS = 8  # < 15, so diffusers' lower_order_final makes the last step first order


def tiny_unet():
    import diffusers

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(4, 8),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=4,
        norm_num_groups=2,
    )
    # The default init gives outputs of std ~0.3; a trained ε-model's have std ~1, and so do these
    # after scaling the last convolution, so the model's term weighs in every step as it would.
    with torch.no_grad():
        unet.conv_out.weight.mul_(3.0)
    return unet.eval()


def run_loop(unet, scheduler, steps, noise):
    scheduler.set_timesteps(steps)
    x = noise.clone()
    with torch.no_grad():
        for t in scheduler.timesteps:
            model_output = unet(x, t).sample
            x = scheduler.step(model_output, t, x).prev_sample
    return x


def main():
    import diffusers
    import safetensors.torch  # noqa: F401  (diffusers 0.31 calls it without importing it first)

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)  # one summation order, whatever the machine

    unet = tiny_unet()
    # diffusers' defaults (linear betas, 1000 steps, epsilon, leading spacing) except clip_sample:
    # clipping x0 to [-1, 1] would pin most of DDIM's outputs to exactly ±1 and hide the model's
    # share of each step from the comparison.
    ddpm = diffusers.DDPMScheduler(clip_sample=False)
    pipeline_dir = os.path.join(args.out, "pipeline")
    diffusers.DDPMPipeline(unet=unet, scheduler=ddpm).save_pretrained(pipeline_dir)

    g = torch.Generator().manual_seed(1234)
    noise = torch.randn(IMAGES, 3, 8, 8, generator=g, dtype=torch.float32)
    save({"noise": noise}, os.path.join(args.out, "noise.safetensors"))

    # The schedulers come from the saved scheduler_config.json, as a user loading the directory
    # gets them and as `diffuse sample --model` reads it. (from_config(ddpm.config) in memory would
    # differ: diffusers drops the keys DDPMScheduler left at its defaults, so DPM-Solver would take
    # its own timestep_spacing, linspace, instead of the file's leading.)
    ddim = diffusers.DDIMScheduler.from_pretrained(pipeline_dir, subfolder="scheduler")
    dpm = diffusers.DPMSolverMultistepScheduler.from_pretrained(pipeline_dir, subfolder="scheduler")
    assert dpm.config.algorithm_type == "dpmsolver++" and dpm.config.solver_order == 2
    assert ddim.config.timestep_spacing == dpm.config.timestep_spacing == "leading"
    results = {
        "ddim": run_loop(unet, ddim, DDIM_STEPS, noise),
        "dpmpp_2m": run_loop(unet, dpm, DPM_STEPS, noise),
    }
    meta = {
        "diffusers": diffusers.__version__,
        "torch": torch.__version__,
        "ddim_steps": str(DDIM_STEPS),
        "dpmpp_2m_steps": str(DPM_STEPS),
    }
    save(results, os.path.join(args.out, "expected.safetensors"), metadata=meta)
    torch.set_printoptions(precision=8, threshold=100000)
    print(meta)
    for name, x in results.items():
        print(f"{name}: shape {list(x.shape)}, min {x.min().item():.6f}, max {x.max().item():.6f}")
        print(x.flatten())


if __name__ == "__main__":
    main()
