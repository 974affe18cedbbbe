"""Side-by-side table of diffuse and PyTorch from the JSON files scripts/compare.sh leaves in one
folder: diffuse_train.rN.json / torch_train.rN.json and diffuse_sample.rN.json /
torch_sample.rN.json for rounds N = 1, 2, ... (ours and theirs alternate, so both see the same
machine). Each side's number is its best round's median; the ratio is PyTorch time / diffuse
time, so above 1 means diffuse is faster.

usage: compare_report.py DIR [--markdown FILE]
"""
import argparse
import glob
import json
import os


def load_rounds(folder, stem):
    out = []
    for path in sorted(glob.glob(os.path.join(folder, stem + ".r*.json"))):
        with open(path) as f:
            out.append(json.load(f))
    return out


def modes_of(reports):
    seen = []
    for r in reports:
        for x in r["results"]:
            if x["mode"] not in seen:
                seen.append(x["mode"])
    return seen


def best(values):
    values = [v for v in values if v is not None and v > 0]
    return min(values) if values else None


def train_rows(folder):
    ours, theirs = load_rounds(folder, "diffuse_train"), load_rounds(folder, "torch_train")
    if not ours or not theirs:
        return None, []
    # Each side's best round (lowest median step), with that round's phase split.
    o = min((r for r in ours if r.get("step_ms")), key=lambda r: r["step_ms"], default=None)
    if o is None:
        return None, []
    head = ours[0]
    mode = o.get("mode", "fp32") + (", CUDA graph" if o.get("cuda_graphs") else "")
    rows = [("diffuse", mode, o["step_ms"], o.get("forward_ms"), o.get("backward_ms"), o.get("optimizer_ms"),
             len(ours), None)]
    for m in modes_of(theirs):
        runs = [x for r in theirs for x in r["results"] if x["mode"] == m and x.get("step_ms")]
        if not runs:
            continue
        t = min(runs, key=lambda x: x["step_ms"])
        rows.append(("pytorch " + theirs[0]["torch_version"], m, t["step_ms"], t["forward_ms"], t["backward_ms"],
                     t["optimizer_ms"], len(theirs), t["step_ms"] / o["step_ms"]))
    title = (f"training step: {head['config']}, batch {head['batch']}, {head['device']['kind']} "
             f"({head['device']['name']}, {head['device']['cores']} cores), commit {short_commit(head['git_commit'])}, "
             f"{head['date']}{load_note(head)}")
    return title, rows


def sample_rows(folder):
    ours, theirs = load_rounds(folder, "diffuse_sample"), load_rounds(folder, "torch_sample")
    if not ours or not theirs:
        return None, []
    rows = []
    keys = []
    for r in ours[0]["results"]:
        keys.append((r["sampler"], r["batch"], r["steps"]))
    for sampler, batch, steps in keys:
        def pick(reports, mode=None):
            return best([x["step_ms"] for r in reports for x in r["results"]
                         if x["sampler"] == sampler and x["batch"] == batch and (mode is None or x["mode"] == mode)])
        o = pick(ours)
        mine = [x for r in ours for x in r["results"] if x["sampler"] == sampler and x["batch"] == batch]
        extrap = any(x["extrapolated"] for r in ours for x in r["results"] if x["sampler"] == sampler)
        # How diffuse's steps ran: "graph" (replayed one CUDA graph), "eager", or "refused" (capture failed).
        ran = "/".join(sorted({x.get("graph", "eager") for x in mine}))
        total = min((x["total_s"] for x in mine), default=None)
        for m in modes_of(theirs):
            t = pick(theirs, m)
            rows.append((sampler, steps, batch, o, total, ran, m, t,
                         t * steps * 1e-3 if t else None, t / o if o and t else None, extrap))
    head = ours[0]
    title = (f"sampling: {head['config']}, {head['device']['kind']} ({head['device']['name']}), "
             f"commit {short_commit(head['git_commit'])}, {head['date']}{load_note(head)}")
    return title, rows


def short_commit(c):
    return c[:12] + ("-dirty" if c.endswith("-dirty") else "")


def load_note(report):
    la = report.get("load_average")
    note = f", load average {la[0]:.1f}" if la else ""
    policy = report.get("openmp_env", {}).get("OMP_WAIT_POLICY")
    return note + (f", OMP_WAIT_POLICY={policy}" if policy else "")


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--markdown")
    args = ap.parse_args()
    lines = []
    title, rows = train_rows(args.folder)
    if rows:
        lines += [f"### {title}", "",
                  "| implementation | mode | ms/step (best round's median) | forward+loss | backward | optimizer "
                  "| rounds | PyTorch / diffuse |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        for impl, mode, ms, f, b, opt, rounds, ratio in rows:
            lines.append(f"| {impl} | {mode} | {fmt(ms, '.1f')} | {fmt(f, '.1f')} | {fmt(b, '.1f')} | {fmt(opt, '.1f')} "
                         f"| {rounds} | {fmt(ratio, '.2f')} |")
        lines.append("")
    title, rows = sample_rows(args.folder)
    if rows:
        lines += [f"### {title}", "",
                  "| sampler | steps | batch | diffuse ms/step | diffuse total s | diffuse steps ran | PyTorch mode "
                  "| PyTorch ms/step | PyTorch total s | PyTorch / diffuse |",
                  "|---|---:|---:|---:|---:|---|---|---:|---:|---:|"]
        any_extrap = False
        for s, steps, b, o, ot, ran, m, t, tt, ratio, extrap in rows:
            any_extrap |= extrap
            mark = "*" if extrap else ""
            lines.append(f"| {s} | {steps} | {b} | {fmt(o, '.2f')} | {fmt(ot, '.2f')}{mark} | {ran} | {m} "
                         f"| {fmt(t, '.2f')} | {fmt(tt, '.2f')}{mark} | {fmt(ratio, '.2f')} |")
        lines.append("\ndiffuse ms/step: the mean step after the warm-up (with CUDA graphs: the eager steps and the "
                     "capture), the host waiting for the device only before and after them; diffuse total: the whole "
                     "loop. PyTorch ms/step: the median of steps each timed to a device synchronisation. steps ran: "
                     "graph (replayed one CUDA graph), eager, or refused (the capture failed; see the log).")
        if any_extrap:
            lines.append("\n\\* extrapolated: diffuse: the first steps' time + the rest x ms/step; "
                         "PyTorch: steps x the median time of the timed steps")
        lines.append("")
    if not lines:
        raise SystemExit(f"{args.folder}: no pair of diffuse_*.rN.json and torch_*.rN.json files to compare")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
