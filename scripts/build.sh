#!/usr/bin/env bash
# Configures and builds diffuse into ./build (or $DIFFUSE_BUILD_DIR). Used by test.sh (demo.sh
# builds only the CLI target, with its own cmake calls).
# $DIFFUSE_CMAKE_ARGS (e.g. -DDIFFUSE_CUDA=EMULATED) are applied on every run when given, so an
# existing build directory picks them up too.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${DIFFUSE_BUILD_DIR:-build}
generator=()
if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  command -v ninja >/dev/null && generator=(-G Ninja)
  cmake -S . -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release ${DIFFUSE_CMAKE_ARGS:-} >/dev/null
elif [ -n "${DIFFUSE_CMAKE_ARGS:-}" ]; then
  cmake -S . -B "$build_dir" ${DIFFUSE_CMAKE_ARGS} >/dev/null
fi
cmake --build "$build_dir" -j "$(nproc)"
