#!/usr/bin/env bash
# The README's first command: installs what is missing, builds only the `diffuse` CLI, says how
# long training and sampling will take here (from one measured step), trains the `tiny` UNet on
# Fashion-MNIST on the CPU (8-9 minutes on 2 idle Zen 4 cores), then samples a 4x4 grid with
# `diffuse sample`'s default sampler and says where it is. Then installs the library and builds
# docs/examples/embed against it, which samples too. The recipe and the measurements that chose
# it are in docs/performance.md ("the demo's recipe").
# Each run gets a new directory, runs/demo-<date>-<time>; earlier runs are never touched.
# Environment: DIFFUSE_DEMO_STEPS (training steps), DIFFUSE_DEMO_OUT (the run directory; it must
# not exist yet), DIFFUSE_BUILD_DIR (default build). `--dry-run` prints the plan and stops.
set -euo pipefail
cd "$(dirname "$0")/.."

dry_run=0
case "${1:-}" in
  "") ;;
  --dry-run) dry_run=1 ;;
  *) echo "demo: unknown argument '$1' (only --dry-run)" >&2; exit 2 ;;
esac

build_dir=${DIFFUSE_BUILD_DIR:-build}
bin=$build_dir/bin/diffuse
steps=${DIFFUSE_DEMO_STEPS:-1000}
out=${DIFFUSE_DEMO_OUT:-runs/demo-$(date +%Y%m%d-%H%M%S)}
case "$steps" in '' | *[!0-9]* | 0) echo "demo: DIFFUSE_DEMO_STEPS must be a positive integer, got '$steps'" >&2; exit 2 ;; esac
if [ -e "$out" ]; then
  echo "demo: $out already exists; it is kept as it is (set DIFFUSE_DEMO_OUT to a new directory)" >&2
  exit 2
fi

# The recipe (docs/performance.md, "the demo's recipe"): a short run wants a high peak learning
# rate that decays to zero; the EMA's warmup (inv_gamma 1, power 3/4) averages roughly the last
# 180 of 1000 steps. Sampling uses `diffuse sample`'s defaults (DDPM, 100 steps), which gave
# 11 of 16 recognisable items where DDIM-50 gave 5-6.
train_args=(--data fashion-mnist --config tiny --steps "$steps" --batch 32 --lr 2e-3 --warmup 100
  --lr-schedule cosine --sample-every 0 --checkpoint-every "$steps" --seed 0)
sample_args=(--n 16 --seed 0)

if [ "$dry_run" = 1 ]; then
  echo "demo: would build the diffuse_cli target in $build_dir, then run:"
  echo "  $bin train --out $out ${train_args[*]}"
  echo "  $bin sample --model $out/checkpoints/step-$steps/ema ${sample_args[*]} --out $out/samples/final-grid.png"
  exit 0
fi

bash scripts/setup.sh
echo "demo: building the diffuse CLI in $build_dir (a first build compiles about 100 files: several minutes on $(nproc) cores; no tests)"
if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  cmake -S . -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release ${DIFFUSE_CMAKE_ARGS:-} >/dev/null
fi
cmake --build "$build_dir" --target diffuse_cli -j "$(nproc)"
"$bin" info

# One measured training step (after one warm-up step) gives the estimate: training is `steps` of
# them, sampling 100 forward passes at batch 16, about half a batch-32 forward each.
mkdir -p "$out"
"$bin" bench train --config tiny --batch 32 --warmup 1 --iters 1 --json "$out/step-time.json" >/dev/null
read -r step_ms forward_ms < <(python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(r["step_ms"], r["forward_ms"])' \
  "$out/step-time.json")
python3 -c "import sys; s, f, n = map(float, sys.argv[1:]); t = n * s / 1e3; p = 100 * f / 2e3
print(f'demo: one training step takes {s / 1e3:.2f} s here now: about {(t + p) / 60:.1f} min to go, '
      f'{t / 60:.1f} of training ({n:.0f} steps) and {p / 60:.1f} of sampling (longer while the machine is busy)')" "$step_ms" "$forward_ms" "$steps"

"$bin" train --out "$out" "${train_args[@]}"
"$bin" sample --model "$out/checkpoints/step-$steps/ema" "${sample_args[@]}" --out "$out/samples/final-grid.png"
echo "demo: samples written to $out/samples/final-grid.png"

# The library route (docs/library.md): install the package, build the embedding example against
# it, and let it generate from the same checkpoint.
cmake --install "$build_dir" --prefix "$out/prefix" >/dev/null
cmake -S docs/examples/embed -B "$out/embed-build" -DCMAKE_PREFIX_PATH="$PWD/$out/prefix" >/dev/null
cmake --build "$out/embed-build" >/dev/null
"$out/embed-build/embed" "$out/checkpoints/step-$steps/ema" "$out/samples/embed-grid.png" 4 0
echo "demo: the embedding example wrote $out/samples/embed-grid.png"
