#!/usr/bin/env bash
# diffuse against PyTorch, side by side: the same training step (and, with --sample, the same
# samplers) timed by `diffuse bench` and by benchmarks/reference/bench_*.py, alternating for
# --rounds rounds so both see the same machine, then one table of ratios (PyTorch time / diffuse
# time: above 1 means diffuse is faster) on stdout and in OUT/compare.md, with every JSON kept.
#
#   scripts/compare.sh [--device cpu|cuda] [--config tiny] [--batch 32] [--iters 3] [--warmup 1]
#                      [--rounds 2] [--modes eager,channels_last_bf16,compile] [--sample]
#                      [--sample-batch 64,1] [--sample-steps K] [--no-train] [--out DIR]
#                      [--omp-wait passive|active]   (OMP_WAIT_POLICY for both sides; default: as set)
#                      [--precision fp32|bf16]       (diffuse's side; bf16 needs --device cuda)
#                      [--cuda-graphs on|off]        (diffuse's sampling loop; default on, as `diffuse sample`)
#   scripts/compare.sh --cpu-targets [scripts/compare-cpu.sh's flags]   (issue 12's CPU table)
# On a machine shared with other work, OpenMP threads that spin while waiting steal the cores the
# working threads need; --omp-wait passive makes both sides sleep instead. Both JSONs record it.
# Environment: DIFFUSE_BIN (default build/bin/diffuse), PYTHON (default: a python3 with torch).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--cpu-targets" ]]; then shift; exec scripts/compare-cpu.sh "$@"; fi

device=cpu config=tiny batch=32 iters=3 warmup=1 rounds=2 modes="eager,channels_last_bf16,compile" precision=fp32
sample=0 train=1 sample_batch="64,1" sample_steps=0 out="" cuda_graphs=on
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --iters) iters="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --modes) modes="$2"; shift 2 ;;
    --sample) sample=1; shift ;;
    --no-train) train=0; shift ;;
    --sample-batch) sample_batch="$2"; shift 2 ;;
    --sample-steps) sample_steps="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --omp-wait) export OMP_WAIT_POLICY="$2"; shift 2 ;;
    --precision) precision="$2"; shift 2 ;;
    --cuda-graphs) cuda_graphs="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done

script=compare.sh
source scripts/compare-tools.sh
out="${out:-compare-$config-$device-$(date -u +%Y%m%d-%H%M%S)}"
make_results_folder "$out"
ref=benchmarks/reference

for ((r = 1; r <= rounds; r++)); do
  echo "== round $r of $rounds"
  if ((train)); then
    "$bin" bench train --device "$device" --config "$config" --batch "$batch" --warmup "$warmup" --iters "$iters" \
      --precision "$precision" --json "$out/diffuse_train.r$r.json"
    "$python" "$ref/bench_train.py" --device "$device" --config "$config" --batch "$batch" --warmup "$warmup" \
      --iters "$iters" --modes "$modes" --json "$out/torch_train.r$r.json"
  fi
  if ((sample)); then
    "$bin" bench sample --device "$device" --config "$config" --batch "$sample_batch" --steps "$sample_steps" \
      --precision "$precision" --cuda-graphs "$cuda_graphs" --json "$out/diffuse_sample.r$r.json"
    "$python" "$ref/bench_sample.py" --device "$device" --config "$config" --batch "$sample_batch" \
      --steps "$sample_steps" --modes "$modes" --json "$out/torch_sample.r$r.json"
  fi
done
echo
"$python" "$ref/compare_report.py" "$out" --markdown "$out/compare.md"
echo
echo "results in $out/"
