#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, and runs every CTest label this
# machine can run (cpu, slow, emu under the fwd/rev/shuffle schedules, and cuda only when a
# CUDA device is present), saying which labels it skipped and why.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
build_dir=${DIFFUSE_BUILD_DIR:-build}

exclude=()
if "$build_dir/bin/diffuse" info | grep -q '^cuda device 0:'; then
  echo "test.sh: running labels cpu, slow, emu, cuda"
else
  echo "test.sh: running labels cpu, slow, emu; cuda: skipped, no CUDA device"
  exclude=(-LE cuda)
fi
if ! ctest --test-dir "$build_dir" -N -L emu | grep -q 'Total Tests: [1-9]'; then
  echo "test.sh: emu: skipped, Boost.Context not found (no emulator build)"
fi
# ctest runs tests side by side on few cores: OpenMP threads spinning while they wait would steal
# the cores the other test needs (seen: 26 s instead of 0.5 s), so they wait passively.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)" "${exclude[@]}" ${DIFFUSE_CTEST_ARGS:-}
