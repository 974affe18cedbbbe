#!/usr/bin/env bash
# The README's main-job command: installs what is missing, builds, trains the `tiny` UNet on
# Fashion-MNIST on the CPU for a few minutes, then samples a 4x4 grid and says where it is.
# Then installs the library and builds docs/examples/embed against it, which samples too.
# Override with DIFFUSE_DEMO_STEPS / DIFFUSE_DEMO_OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
bin=${DIFFUSE_BUILD_DIR:-build}/bin/diffuse
out=${DIFFUSE_DEMO_OUT:-runs/demo}
steps=${DIFFUSE_DEMO_STEPS:-300}

"$bin" info
rm -rf "$out"
"$bin" train --data fashion-mnist --config tiny --out "$out" --steps "$steps" --batch 32 --lr 1e-3 \
  --sample-every 0 --checkpoint-every "$steps" --seed 0
"$bin" sample --model "$out/checkpoints/step-$steps/ema" --sampler ddim --steps 50 --n 16 --seed 0 \
  --out "$out/samples/final-grid.png"
echo "demo: samples written to $out/samples/final-grid.png"

# The library route (docs/library.md): install the package, build the embedding example against
# it, and let it generate from the same checkpoint.
build_dir=${DIFFUSE_BUILD_DIR:-build}
cmake --install "$build_dir" --prefix "$out/prefix" >/dev/null
cmake -S docs/examples/embed -B "$out/embed-build" -DCMAKE_PREFIX_PATH="$PWD/$out/prefix" >/dev/null
cmake --build "$out/embed-build" >/dev/null
"$out/embed-build/embed" "$out/checkpoints/step-$steps/ema" "$out/samples/embed-grid.png" 4 0
echo "demo: the embedding example wrote $out/samples/embed-grid.png"
