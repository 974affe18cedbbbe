#!/usr/bin/env bash
# The CPU targets of issue 12, side by side with PyTorch in ONE run, as one markdown table of
# ratios ready for docs/performance.md: training steps (`tiny` batch 32, `fmnist-small` batch 64),
# DDIM-50 of 16 `tiny` images, one sampling step of `fmnist-small` at batch 16, each side's `tiny`
# step slowdown beside two CPU-bound processes, peak RSS of the `tiny` training process, and each
# training step's sustained GFLOP/s beside the machine's sgemm peak measured in the same run.
#
#   scripts/compare-cpu.sh [--rounds 2] [--iters 5] [--threads N] [--out DIR] [--quick]
#
# Both sides get the same thread count (--threads; default: the cores this process may use, as
# `diffuse --threads 0` picks them) and OMP_WAIT_POLICY=passive; the `tiny` training step of PyTorch
# also runs with the policy unset (libgomp's spinning default), a row of its own. Each round runs every workload
# once on each side, diffuse first, so both see the same machine; each side's number is its best
# round's median of --iters timed steps (after one warm-up step). The slowdown row runs the `tiny`
# step again while two busy loops (`sh -c 'while :; do :; done'`) hold the cores, and divides by
# the same round's idle median. --quick is a smoke run (batch 2, 1 step, 5 sampling steps) that
# checks the script, not the machine. Also reachable as `scripts/compare.sh --cpu-targets ...`.
# Environment: DIFFUSE_BIN (default build/bin/diffuse), PYTHON (default: a python3 with torch).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=2 iters=5 threads="" out="" quick=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --iters) iters="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare-cpu.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "compare-cpu.sh: --rounds $rounds: expected a positive integer" >&2; exit 2; }
[[ "$iters" =~ ^[1-9][0-9]*$ ]] || { echo "compare-cpu.sh: --iters $iters: expected a positive integer" >&2; exit 2; }

script=compare-cpu.sh
source scripts/compare-tools.sh
# nproc counts the CPUs this process may run on (and honours OMP_NUM_THREADS), as diffuse does.
threads="${threads:-$(nproc)}"
[[ "$threads" =~ ^[1-9][0-9]*$ ]] || { echo "compare-cpu.sh: --threads $threads: expected a positive integer" >&2; exit 2; }
export OMP_WAIT_POLICY=passive
out="${out:-compare-cpu-$(date -u +%Y%m%d-%H%M%S)}"
make_results_folder "$out"
ref=benchmarks/reference

small_batch=32 big_batch=64 ddim_images=16 sample_batch=16 ddim_steps=50 sample_iters="$iters"
if ((quick)); then small_batch=2 big_batch=2 ddim_images=2 sample_batch=2 ddim_steps=5 iters=1 sample_iters=1; fi
# Warm-up, timed steps and thread count for both sides' training benchmarks.
train_args=(--warmup 1 --iters "$iters" --threads "$threads")

busy=()
stop_busy() {
  local pid
  for pid in "${busy[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${busy[@]}"; do wait "$pid" 2>/dev/null || true; done
  busy=()
}
trap stop_busy EXIT

# The sgemm peak, measured in this run: `bench kernels` measures its peaks before any row; one
# small linear row keeps the rest short.
echo "== the machine's sgemm peak"
"$bin" bench kernels --filter "linear fwd" --configs tiny --batches 2 --no-large --threads "$threads" \
  --json "$out/peaks.json"

for ((r = 1; r <= rounds; r++)); do
  echo "== round $r of $rounds"
  "$bin" bench train --config tiny --batch "$small_batch" "${train_args[@]}" --json "$out/diffuse_train_tiny.r$r.json"
  "$python" "$ref/bench_train.py" --config tiny --batch "$small_batch" "${train_args[@]}" --modes eager \
    --json "$out/torch_train_tiny.r$r.json"
  # PyTorch again with libgomp's default wait policy (idle threads spin): on an idle machine its
  # fastest setting. diffuse's own pool watches for up to 50 us before it sleeps, so this row keeps
  # the comparison honest against PyTorch's best, not only its passive setting.
  env -u OMP_WAIT_POLICY "$python" "$ref/bench_train.py" --config tiny --batch "$small_batch" "${train_args[@]}" \
    --modes eager --json "$out/torch_train_tiny_spinning.r$r.json"
  "$bin" bench train --config fmnist-small --batch "$big_batch" "${train_args[@]}" \
    --json "$out/diffuse_train_fmnist.r$r.json"
  "$python" "$ref/bench_train.py" --config fmnist-small --batch "$big_batch" "${train_args[@]}" --modes eager \
    --json "$out/torch_train_fmnist.r$r.json"
  "$bin" bench sample --config tiny --batch "$ddim_images" --samplers ddim --steps "$ddim_steps" \
    --threads "$threads" --json "$out/diffuse_ddim_tiny.r$r.json"
  "$python" "$ref/bench_sample.py" --config tiny --batch "$ddim_images" --samplers ddim --steps "$ddim_steps" \
    --threads "$threads" --modes eager --json "$out/torch_ddim_tiny.r$r.json"
  "$bin" bench sample --config fmnist-small --batch "$sample_batch" --samplers ddim --steps "$sample_iters" \
    --threads "$threads" --json "$out/diffuse_step_fmnist.r$r.json"
  "$python" "$ref/bench_sample.py" --config fmnist-small --batch "$sample_batch" --samplers ddim \
    --steps "$sample_iters" --threads "$threads" --modes eager --json "$out/torch_step_fmnist.r$r.json"

  echo "== round $r: the tiny step beside two CPU-bound processes"
  for _ in 1 2; do
    sh -c 'while :; do :; done' &
    busy+=($!)
  done
  "$bin" bench train --config tiny --batch "$small_batch" "${train_args[@]}" \
    --json "$out/diffuse_train_tiny_loaded.r$r.json"
  "$python" "$ref/bench_train.py" --config tiny --batch "$small_batch" "${train_args[@]}" --modes eager \
    --json "$out/torch_train_tiny_loaded.r$r.json"
  stop_busy
done
echo
"$python" "$ref/cpu_targets_report.py" "$out" --markdown "$out/compare-cpu.md"
echo
echo "results in $out/"
