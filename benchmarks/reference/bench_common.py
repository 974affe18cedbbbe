"""Shared pieces of the PyTorch benchmark scripts (bench_train.py, bench_sample.py).

Resolves a config the way `diffuse --config` does (a name in configs/, a config.json, or a model
directory), describes the machine and library versions for the JSON report, and sets up the
modes: `eager` (f32, NCHW), and on CUDA `channels_last_bf16` (channels_last + bf16 autocast) and
`compile` (torch.compile of the channels_last_bf16 model, PyTorch 2 only).
"""
import contextlib
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
MODES = ("eager", "channels_last_bf16", "compile")


def load_config(name_or_path):
    named = os.path.join(REPO, "configs", name_or_path + ".json")
    for path in (named, os.path.join(name_or_path, "unet", "config.json"), os.path.join(name_or_path, "config.json"),
                 name_or_path):
        if os.path.isfile(path):
            with open(path) as f:
                return json.load(f)
    raise SystemExit(f"--config {name_or_path}: neither a named config in configs/ nor a config.json")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def git_commit():
    if os.environ.get("DIFFUSE_GIT_COMMIT"):
        return os.environ["DIFFUSE_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def context(device):
    dev = {"kind": device, "cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        dev.update({"gpu": {"name": p.name, "sm": f"{p.major}.{p.minor}", "sm_count": p.multi_processor_count,
                            "memory_bytes": p.total_memory}})
        dev["name"] = p.name
    else:
        dev["name"] = dev["cpu"]
    ctx = {"device": dev, "framework": "pytorch", "torch_version": torch.__version__,
           "cuda_version": torch.version.cuda, "cudnn_version": torch.backends.cudnn.version(),
           "allow_tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
           "git_commit": git_commit(), "date": datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")}
    ctx["openmp_env"] = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
                         if k in os.environ}
    try:
        ctx["load_average"] = list(os.getloadavg())
    except OSError:
        pass
    return ctx


def default_threads():
    # What `diffuse --threads 0` picks: OMP_NUM_THREADS when set, else the cores this process may
    # run on (its CPU affinity), not the machine's core count.
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0))


def setup_threads(threads):
    # Give PyTorch the thread count diffuse uses (its own default may be fewer).
    torch.set_num_threads(threads or default_threads())


def current_rss_mib():
    # This process's resident set now (to tell the interpreter's and torch's own share).
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def peak_rss_mib():
    # The largest resident set so far; Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def available_modes(device, wanted):
    """The requested modes this device and PyTorch can run, and why the others are skipped."""
    run, skipped = [], {}
    for m in wanted:
        if m not in MODES:
            raise SystemExit(f"--modes {m}: expected some of {', '.join(MODES)}")
        if m != "eager" and device != "cuda":
            skipped[m] = "needs CUDA"
        elif m == "compile" and not hasattr(torch, "compile"):
            skipped[m] = f"torch.compile needs PyTorch 2 (this is {torch.__version__})"
        else:
            run.append(m)
    return run, skipped


def prepare(model, mode):
    """The model and an autocast context for a mode (the model is already on its device)."""
    if mode == "eager":
        return model, contextlib.nullcontext()
    model = model.to(memory_format=torch.channels_last)
    ctx = torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    if mode == "compile":
        model = torch.compile(model)
    return model, ctx


def to_mode(x, mode):
    return x.contiguous(memory_format=torch.channels_last) if mode != "eager" else x


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def median(values):
    return statistics.median(values) if values else 0.0


def write_json(path, report):
    if path:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
        print(f"wrote {path}")
