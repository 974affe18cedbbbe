"""Runs the reference UNet once: the PyTorch side of `diffuse forward` parity tests.

usage: forward.py --model DIR --input in.safetensors --out out.safetensors [--grad-out grads.safetensors]
Input tensors as `diffuse forward` reads them: `sample` (NCHW), `timestep`, optional `class_labels`.
With --grad-out, also writes d(sum(out * weight))/d(param) for every parameter, where `weight`
comes from the input file (same shape as out).
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import load, save  # noqa: E402
from unet import load_model  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--grad-out")
    ap.add_argument("--double", action="store_true", help="compute in float64")
    args = ap.parse_args()
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    model, _ = load_model(args.model)
    dtype = torch.float64 if args.double else torch.float32
    model = model.to(dtype)
    inp = load(args.input)
    x = inp["sample"].to(dtype)
    t = inp["timestep"]
    labels = inp.get("class_labels")
    if labels is not None:
        labels = labels.long()
    if args.grad_out:
        out = model(x, t, labels)
        loss = (out * inp["weight"].to(dtype)).sum()
        loss.backward()
        save({n: p.grad.float() for n, p in model.named_parameters()}, args.grad_out)
    else:
        with torch.no_grad():
            out = model(x, t, labels)
    save({"out": out.detach().float()}, args.out)


if __name__ == "__main__":
    main()
