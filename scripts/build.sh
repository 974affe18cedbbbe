#!/usr/bin/env bash
# Configures and builds diffuse into ./build (or $DIFFUSE_BUILD_DIR). Shared by test.sh and demo.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${DIFFUSE_BUILD_DIR:-build}
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  cmake -S . -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release ${DIFFUSE_CMAKE_ARGS:-} >/dev/null
fi
cmake --build "$build_dir" -j "$(nproc)"
