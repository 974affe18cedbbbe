"""The table of issue 12's CPU targets from the JSON files scripts/compare-cpu.sh leaves in one
folder: peaks.json (`diffuse bench kernels`, for the sgemm peak) and, for rounds N = 1, 2, ...,
{diffuse,torch}_{train_tiny,train_fmnist,ddim_tiny,step_fmnist,train_tiny_loaded}.rN.json, and
torch_train_tiny_spinning.rN.json (PyTorch with OMP_WAIT_POLICY unset).

Each side's time is its best round's median (a round runs both sides back to back); ratios are
PyTorch / diffuse for times (above 1: diffuse is faster), loaded / idle of the same round for the
slowdown (the median over rounds), and diffuse / PyTorch for peak RSS. GFLOP/s divide
the FLOP count `diffuse bench train` reports for the step (benchmarks/flops.h: convolutions,
linears and attention's GEMMs, forward + backward) by each side's step time.

usage: cpu_targets_report.py DIR [--markdown FILE]
"""
import argparse
import glob
import json
import os
import statistics


def rounds_of(folder, stem):
    """{round number: report} for stem.rN.json."""
    out = {}
    for path in glob.glob(os.path.join(folder, stem + ".r*.json")):
        n = path[len(os.path.join(folder, stem + ".r")):-len(".json")]
        if n.isdigit():
            with open(path) as f:
                out[int(n)] = json.load(f)
    return out


def train_ms(report):
    """The median step of a train report, diffuse's or PyTorch's (eager)."""
    if "results" in report:
        return next((x["step_ms"] for x in report["results"] if x.get("mode") == "eager"), None)
    return report.get("step_ms")


def sample_result(report):
    return report["results"][0] if report.get("results") else None


def best(values):
    values = [v for v in values if v]
    return min(values) if values else None


def side(folder, stem, pick):
    return best(pick(r) for r in rounds_of(folder, stem).values())


def ratio(a, b):
    return a / b if a and b else None


def fmt(v, spec, unit=""):
    return "-" if v is None else format(v, spec) + unit


def build_table(folder):
    peaks_path = os.path.join(folder, "peaks.json")
    peaks = json.load(open(peaks_path)) if os.path.exists(peaks_path) else {}
    sgemm = peaks.get("peaks", {}).get("gemm_gflops")
    head = next(iter(rounds_of(folder, "diffuse_train_tiny").values()), None)
    if head is None:
        raise SystemExit(f"{folder}: no diffuse_train_tiny.rN.json (run scripts/compare-cpu.sh)")
    torch_head = next(iter(rounds_of(folder, "torch_train_tiny").values()), {})

    rows = []  # (workload, diffuse, PyTorch, ratio text, target)

    def time_row(name, stem, pick, unit_scale, unit, target, torch_stem=None):
        d, t = side(folder, "diffuse_" + stem, pick), side(folder, "torch_" + (torch_stem or stem), pick)
        rows.append((name, fmt(d and d * unit_scale, ".2f" if unit == " s" else ".1f", unit),
                     fmt(t and t * unit_scale, ".2f" if unit == " s" else ".1f", unit),
                     fmt(ratio(t, d), ".2f", "×"), target))
        return d, t

    tiny = time_row(f"train step `tiny`, batch {head['batch']}", "train_tiny", train_ms, 1, " ms", "≥ 3×")
    if rounds_of(folder, "torch_train_tiny_spinning"):
        time_row(f"train step `tiny`, batch {head['batch']}, PyTorch's OpenMP threads spinning (policy unset)",
                 "train_tiny", train_ms, 1, " ms", "≥ 3×", torch_stem="train_tiny_spinning")
    fm = rounds_of(folder, "diffuse_train_fmnist")
    fm_head = next(iter(fm.values()), {})
    fmnist = time_row(f"train step `fmnist-small`, batch {fm_head.get('batch', '?')}", "train_fmnist", train_ms, 1,
                      " ms", "≥ 2×")
    ddim = next(iter(rounds_of(folder, "diffuse_ddim_tiny").values()), None)
    ddim_batch = sample_result(ddim)["batch"] if ddim else "?"
    ddim_steps = sample_result(ddim)["timed_steps"] if ddim else "?"
    time_row(f"DDIM-{ddim_steps} `tiny`, {ddim_batch} images (whole sampling loop)", "ddim_tiny",
             lambda r: sample_result(r)["total_s"], 1, " s", "≥ 2.5×")
    step = next(iter(rounds_of(folder, "diffuse_step_fmnist").values()), None)
    step_batch = sample_result(step)["batch"] if step else "?"
    time_row(f"one sampling step `fmnist-small`, batch {step_batch}", "step_fmnist",
             lambda r: sample_result(r)["step_ms"], 1, " ms", "≥ 2×")

    def slowdown(framework):
        idle, loaded = rounds_of(folder, framework + "_train_tiny"), rounds_of(folder, framework + "_train_tiny_loaded")
        per_round = [ratio(train_ms(loaded[n]), train_ms(idle[n])) for n in loaded if n in idle]
        per_round = [v for v in per_round if v]
        return statistics.median(per_round) if per_round else None

    sd, st = slowdown("diffuse"), slowdown("torch")
    rows.append((f"`tiny` step slowdown beside two CPU-bound processes (loaded / idle)", fmt(sd, ".2f", "×"),
                 fmt(st, ".2f", "×"), "(each its own)", "diffuse ≤ 2.5×"))

    rss_d = side(folder, "diffuse_train_tiny", lambda r: r.get("peak_rss_mib"))
    rss_t = side(folder, "torch_train_tiny", lambda r: next((x.get("peak_rss_mib") for x in r["results"]), None))
    rows.append((f"peak RSS of the `tiny` training process", fmt(rss_d, ".0f", " MiB"),
                 fmt(rss_t, ".0f", " MiB"), fmt(ratio(rss_d, rss_t), ".2f", "×"), "≤ 1×"))

    for label, stem, (d, t) in (("`tiny`", "train_tiny", tiny), ("`fmnist-small`", "train_fmnist", fmnist)):
        rep = next(iter(rounds_of(folder, "diffuse_" + stem).values()), {})
        flops = rep.get("step_flops")
        gd = flops / (d * 1e-3) * 1e-9 if flops and d else None
        gt = flops / (t * 1e-3) * 1e-9 if flops and t else None
        of_peak = f"{100 * gd / sgemm:.0f}% / {100 * gt / sgemm:.0f}% of sgemm" if gd and gt and sgemm else "-"
        rows.append((f"sustained GFLOP/s, train step {label} ({fmt(flops and flops * 1e-9, '.1f')} GFLOP)",
                     fmt(gd, ".1f"), fmt(gt, ".1f"), of_peak, "—"))
    rows.append(("the machine's sgemm peak (2048³, measured in this run)", fmt(sgemm, ".1f", " GFLOP/s"), "", "", ""))

    la = head.get("load_average")
    title = (f"{head['device']['name']}, {head.get('cpu_threads', '?')} threads "
             f"({head.get('cpu_threads_choice', '?')}), ISA path {head.get('cpu_isa', '?')}, "
             f"PyTorch {torch_head.get('torch_version', '?')} at {torch_head.get('device', {}).get('torch_threads', '?')} "
             f"threads, OMP_WAIT_POLICY={head.get('openmp_env', {}).get('OMP_WAIT_POLICY', 'unset')}, "
             f"diffuse built from commit {head['git_commit'][:12]}"
             f"{'-dirty' if head['git_commit'].endswith('-dirty') else ''}, {head['date']}"
             + (f", load average {la[0]:.1f} at the start" if la else ""))
    lines = [f"### {title}", "",
             "| workload | diffuse | PyTorch | ratio | target |", "|---|---:|---:|---:|---|"]
    lines += [f"| {w} | {d} | {t} | {r} | {g} |" for w, d, t, r, g in rows]
    rounds = len(rounds_of(folder, "diffuse_train_tiny"))
    lines += ["", f"Best of {rounds} round(s), each a median of {head['iters']} timed steps (sampling: "
              f"{ddim_steps} DDIM steps timed whole; the `fmnist-small` sampling step: a median). "
              "Ratio: PyTorch time / diffuse time (above 1: diffuse is faster); for RSS, diffuse / PyTorch; "
              "the slowdowns are each side's loaded / idle median of the same round (median over rounds). The process that imports torch starts at "
              f"{fmt(side(folder, 'torch_train_tiny', lambda r: r['results'][0].get('baseline_rss_mib')), '.0f', ' MiB')} "
              "before its model exists (diffuse: "
              f"{fmt(side(folder, 'diffuse_train_tiny', lambda r: r.get('baseline_rss_mib')), '.0f', ' MiB')})."]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--markdown")
    args = ap.parse_args()
    text = build_table(args.folder)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
