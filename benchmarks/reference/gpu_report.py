"""Writes report.md and report.json for a scripts/gpu-check.sh folder: the environment, what each
stage did (ok / failed / timed out / skipped, and how long it took), the `cuda` test summary,
the kernel table (fraction of the floor and speed-up over the reference per kernel), the per-op
profiles of a training and a sampling step (`diffuse bench --profile`) and the side-by-side
comparison with PyTorch. Only reads what the stages left; never fails on a missing
piece, it says it is missing.

usage: gpu_report.py DIR
       gpu_report.py --kernels FILE.json   (just the kernel table, as markdown, on stdout)
"""
import json
import os
import re
import sys


def read(path):
    # Logs can hold bytes that are not UTF-8 (a test printing a file's raw bytes): replace them.
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return None


def load_json(path):
    text = read(path)
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        return None


def kernel_table(k, gpu=True):
    """Markdown lines: the peaks, then one row per kernel (TFLOP/s on a GPU, GFLOP/s on a CPU)."""
    scale, unit = (1e3, "TFLOP/s") if gpu else (1.0, "GFLOP/s")
    lines = [f"Peaks: copy {k['peaks']['copy_gbps']:.1f} GB/s (read + write), f32 GEMM "
             f"{k['peaks']['gemm_gflops'] / scale:.1f} {unit}"]
    for name in ("gemm_tf32", "gemm_bf16"):
        d = k["peaks"].get("detail", {}).get(name)
        if d:
            lines[0] += f", {name[5:]} GEMM {d['gflops'] / 1e3:.0f} TFLOP/s"
    lines += ["", f"| family | pass | where | shape | ms | GB/s | {unit} | floor | ref ms | vs ref | reference |",
              "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in k["rows"]:
        head = f"| {r['family']} | {r['pass']} | {r['where']} | {r['shape']} "
        if "error" in r:
            lines.append(head + f"| n/a | | | | | | {r['error'][:120]} |")
            continue
        ref = r.get("reference")
        cells = f"| {r['time_ms']:.3f} | {r['gbps']:.1f} | {r['gflops'] / scale:.2f} | {100 * r['floor_fraction']:.1f}% "
        if ref:
            cells += f"| {r['reference_ms']:.3f} | {r['speedup_vs_reference']:.2f}x | {ref} |"
        else:
            cells += "| - | - | - |"
        lines.append(head + cells)
    return lines


def profile_table(p, top=25):
    """Markdown lines: one `diffuse bench --profile` profile, its `top` slowest ops, the rest, the step."""
    cuda = p.get("device") == "cuda"
    step = p["step_ms"] or 1.0
    lines = [f"{p.get('what', 'profile')}: {p['steps']} eager profiled step{'' if p['steps'] == 1 else 's'}, {p['step_ms']:.3f} ms per step on the "
             f"{'GPU' if cuda else 'host clock'}" + (f", {p['host_step_ms']:.3f} ms to queue on the host" if cuda else ""),
             "", "| op | calls/step | ms/step | host ms/step | share |", "|---|---:|---:|---:|---:|"]
    ops = p["ops"]
    for r in ops[:top]:
        lines.append(f"| {r['op']} | {r['calls_per_step']:.1f} | {r['ms_per_step']:.3f} | {r['host_ms_per_step']:.3f} "
                     f"| {100 * r['share']:.1f}% |")
    rest = ops[top:]
    if rest:
        ms = sum(r["ms_per_step"] for r in rest)
        lines.append(f"| ({len(rest)} other ops) | {sum(r['calls_per_step'] for r in rest):.1f} | {ms:.3f} | "
                     f"{sum(r['host_ms_per_step'] for r in rest):.3f} | {100 * ms / step:.1f}% |")
    lines.append(f"| (rest: before the first op) | | {p['rest_ms']:.3f} | {p['host_rest_ms']:.3f} | "
                 f"{100 * p['rest_ms'] / step:.1f}% |")
    lines.append(f"| step | {sum(r['calls_per_step'] for r in ops):.1f} | {p['step_ms']:.3f} | {p['host_step_ms']:.3f} "
                 "| 100.0% |")
    if p.get("backward_ms"):
        lines += ["", f"By phase: {p['before_backward_ms']:.3f} ms before backward (forward, loss), "
                  f"{p['backward_ms']:.3f} ms backward, {p['after_backward_ms']:.3f} ms after it (optimizer)."]
    return lines


def profiles(d):
    """The profile section's markdown lines and its JSON: profile_train.json and profile_sample.json."""
    md = ["## Where the time goes (`diffuse bench train|sample --profile`)", "",
          "Eager steps (a CUDA graph replay cannot be split by op). ms/step: GPU time from an op's CUDA event to "
          "the next op's, so GPU idle time waiting for the host lands in the op before the gap; host ms/step: the "
          "host's time between the two seam entries (host >= GPU: launch-bound). See docs/performance.md, "
          "\"Reading a profile\".", ""]
    out = {}
    for name, title in (("profile_train", "Training step"), ("profile_sample", "Sampling step")):
        j = load_json(os.path.join(d, name + ".json"))
        p = None
        if j and "profile" in j:
            p = j["profile"]
            if "step_ms" in j:
                p = dict(p, timed_step_ms=j["step_ms"])
        elif j and j.get("results") and "profile" in j["results"][0]:
            p = dict(j["results"][0]["profile"], timed_step_ms=j["results"][0]["step_ms"])
        md += [f"### {title}", ""]
        if not p:
            md += [f"{name}.json missing or without a profile (see profile.log)", ""]
            continue
        out[name] = p
        md += profile_table(p)
        md += ["", f"The same benchmark's timed steps, without the profiler: {p['timed_step_ms']:.3f} ms (median).", ""]
    return md, out


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--kernels":
        k = load_json(sys.argv[2])
        if not k:
            raise SystemExit(f"{sys.argv[2]}: not a kernels JSON report")
        print("\n".join(kernel_table(k, gpu=k["device"]["kind"] == "cuda")))
        return
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    d = sys.argv[1]
    report = {"folder": os.path.abspath(d), "stages": []}
    md = ["# diffuse GPU check", ""]
    env = read(os.path.join(d, "environment.txt"))
    md += ["## Environment", "", "```", (env or "environment.txt missing").rstrip(), "```", ""]
    report["environment"] = env
    info = read(os.path.join(d, "info.log"))
    if info:
        md += ["`diffuse info`:", "", "```", info.rstrip(), "```", ""]
        report["diffuse_info"] = info
    md += ["## Stages", "", "| stage | result | seconds | detail |", "|---|---|---:|---|"]
    for line in (read(os.path.join(d, "stages.tsv")) or "").splitlines():
        parts = line.split("\t")
        if len(parts) == 4:
            report["stages"].append(dict(zip(("stage", "result", "seconds", "detail"), parts)))
            md.append("| " + " | ".join(parts) + " |")
    md.append("")
    ctest = read(os.path.join(d, "ctest_cuda.log"))
    if ctest:
        m = re.search(r"(\d+)% tests passed, (\d+) tests? failed out of (\d+)", ctest)
        summary = m.group(0) if m else "no ctest summary line (see ctest_cuda.log)"
        failed = re.findall(r"^\s*\d+ - (.+?) \(Failed\)", ctest, re.M)
        report["ctest_cuda"] = {"summary": summary, "failed": failed}
        md += ["## `ctest -L cuda`", "", summary, ""] + [f"- failed: {t}" for t in failed] + [""]
    steps = {(v, r): load_json(os.path.join(d, f"train_{v}_{r}.json"))
             for v in ("fp32", "bf16", "bf16-heuristic") for r in (1, 2)}
    if any(steps.values()):
        report["train_steps"] = {f"{v}_{r}": j for (v, r), j in steps.items() if j}
        some = next(j for j in steps.values() if j)
        md += ["## diffuse's training step by precision and algorithm choice", "",
               f"`bench train --config {some['config']} --batch {some['batch']}` (median of the timed steps, ms; "
               "`-heuristic`: `--conv-search heuristic`, cuDNN's ranking instead of timing, what a "
               "bit-reproducible run costs), two alternated rounds:", "",
               "| variant | round 1 | round 2 |", "|---|---:|---:|"]
        for v in ("fp32", "bf16", "bf16-heuristic"):
            cells = [f"{steps[(v, r)]['step_ms']:.2f}" if steps[(v, r)] else "missing" for r in (1, 2)]
            md.append(f"| {v} | " + " | ".join(cells) + " |")
        md.append("")
    kernels = load_json(os.path.join(d, "kernels.json"))
    if kernels:
        report["kernels"] = kernels
        md += ["## Kernels (`diffuse bench kernels --device cuda`)", "",
               f"{kernels['device']['name']}, commit {kernels['git_commit']}, {kernels['date']}. floor = max(bytes / "
               "copy peak, FLOPs / f32 GEMM peak); vs ref = reference time / our time.", ""]
        md += kernel_table(kernels) + [""]
    else:
        md += ["## Kernels", "", "kernels.json missing (see bench_kernels.log)", ""]
    profile_md, report["profiles"] = profiles(d)
    md += profile_md
    titles = {"compare_train": "Training step", "compare_train_fmnist": "fmnist-small's training step",
              "compare_sample": "Sampling"}
    for name, title in titles.items():
        cmp_md = read(os.path.join(d, name, "compare.md"))
        if name == "compare_train_fmnist" and name not in {s["stage"] for s in report["stages"]}:
            continue  # not run (--quick compares tiny only)
        md += [f"## {title} against PyTorch", ""]
        md += [cmp_md.rstrip() if cmp_md else f"{name}/compare.md missing (see {name}.log)", ""]
        runs = {}
        folder = os.path.join(d, name)
        if os.path.isdir(folder):
            for f in sorted(os.listdir(folder)):
                if f.endswith(".json"):
                    runs[f] = load_json(os.path.join(folder, f))
        report[name] = runs
        if name == "compare_sample":
            eager = load_json(os.path.join(d, "sample_eager.json"))
            if eager:
                report["sample_eager"] = eager
                md += ["The same DDIM rows with `--cuda-graphs off` (diffuse only, `sample_eager.json`):", "",
                       "| sampler | batch | timed steps | ms/step | total s | steps ran |",
                       "|---|---:|---:|---:|---:|---|"]
                md += [f"| {x['sampler']} | {x['batch']} | {x['timed_steps']} | {x['step_ms']:.2f} | "
                       f"{x['total_s']:.2f}{'*' if x['extrapolated'] else ''} | {x.get('graph', 'eager')} |"
                       for x in eager["results"]] + [""]
    with open(os.path.join(d, "report.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    with open(os.path.join(d, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(f"wrote {os.path.join(d, 'report.md')} and report.json")


if __name__ == "__main__":
    main()
