#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, and runs every CTest label this
# machine can run (cpu, slow, emu under the fwd/rev/shuffle thread orders, and cuda only when a
# CUDA device is present), saying which labels it skipped and why. Then it builds the
# -DDIFFUSE_CUDA=EMULATED flavour in its own directory (build-emu, or $DIFFUSE_EMU_BUILD_DIR) and
# runs every `cuda` test there, on the emulated device: none may fail or be skipped. (That stage
# needs the CUDA toolkit's headers, with cuDNN's, but no GPU; without them it says it skipped.)
# Last, the sanitizer flavour (clang, ASan + UBSan, build-asan or $DIFFUSE_ASAN_BUILD_DIR): the cpu
# and emu labels under the sanitizers (scripts/asan_tests.sh says which tests), then every libFuzzer
# target, two at a time, repeatably: seed $DIFFUSE_FUZZ_SEED (default 1), $DIFFUSE_FUZZ_RUNS inputs
# (default 20000) or $DIFFUSE_FUZZ_SECONDS (default 120) s, whichever ends first (scripts/fuzz.sh;
# a clean build directory tries the same inputs every time). Without clang and
# its runtimes those stages say they skipped — except on CI ($CI set), where skipping fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Both builds treat warnings in diffuse's own C++ as errors (cmake/warnings.cmake), so a warning
# fails CI here rather than piling up.
export DIFFUSE_CMAKE_ARGS="${DIFFUSE_CMAKE_ARGS:-} -DDIFFUSE_WARNINGS_AS_ERRORS=ON"
bash scripts/build.sh
build_dir=${DIFFUSE_BUILD_DIR:-build}

exclude=()
if "$build_dir/bin/diffuse" info | grep -q '^cuda device 0:'; then
  echo "test.sh: running labels cpu, slow, emu, cuda"
else
  echo "test.sh: running labels cpu, slow, emu; cuda: skipped, no CUDA device (runs on the emulated device below)"
  exclude=(-LE cuda)
fi
if ! ctest --test-dir "$build_dir" -N -L emu | grep -q 'Total Tests: [1-9]'; then
  echo "test.sh: emu: skipped, Boost.Context not found (no emulator build)"
fi
# ctest runs tests side by side on few cores: OpenMP threads spinning while they wait would steal
# the cores the other test needs (seen: 26 s instead of 0.5 s), so they wait passively.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
status=0
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)" "${exclude[@]}" ${DIFFUSE_CTEST_ARGS:-} || status=1

# ---- the emulated CUDA device: the whole CUDA backend, host code included, without a GPU -------
# It needs the CUDA toolkit's headers (cuda_runtime_api.h ... cudnn.h), not a GPU or its libraries.
run_emulated_device() {
  cuda_root=${CUDAToolkit_ROOT:-}
  if [ -z "$cuda_root" ] && command -v nvcc >/dev/null; then cuda_root=$(dirname "$(dirname "$(command -v nvcc)")"); fi
  cuda_root=${cuda_root:-/usr/local/cuda}
  if [ ! -f "$cuda_root/include/cuda_runtime_api.h" ] || [ ! -f "$cuda_root/include/cudnn.h" ]; then
    echo "test.sh: cuda (emulated device): skipped, no CUDA toolkit headers with cuDNN under $cuda_root"
    return 0
  fi
  emu_dir=${DIFFUSE_EMU_BUILD_DIR:-build-emu}
  echo "test.sh: building the emulated CUDA device flavour in $emu_dir (-DDIFFUSE_CUDA=EMULATED)"
  DIFFUSE_BUILD_DIR=$emu_dir DIFFUSE_CMAKE_ARGS="${DIFFUSE_CMAKE_ARGS:-} -DDIFFUSE_CUDA=EMULATED" bash scripts/build.sh
  emu_log=$(mktemp)
  trap 'rm -f "$emu_log"' EXIT
  emu_total=$(ctest --test-dir "$emu_dir" -N -L cuda | sed -n 's/^Total Tests: //p')
  echo "test.sh: running label cuda in $emu_dir on the emulated device (not a GPU): ${emu_total:-0} tests"
  if ! ctest --test-dir "$emu_dir" -L cuda --output-on-failure --no-tests=error -j "$(nproc)" \
      ${DIFFUSE_CTEST_ARGS:-} 2>&1 | tee "$emu_log"; then
    status=1
  fi
  # ctest exits 0 for skipped tests; here a skip is a failure (every cuda test must run).
  if grep -q 'The following tests did not run' "$emu_log"; then
    echo "test.sh: cuda (emulated device): some tests were skipped; every cuda test must run there"
    status=1
  fi
  echo "test.sh: cuda (emulated device): $(grep -E 'tests passed, [0-9]+ tests failed' "$emu_log" || echo 'no summary')"
}
run_emulated_device

# ---- the sanitizer flavour: ASan + UBSan on the cpu and emu labels, then the fuzz targets -------
# Each stage exits 0 (clean), 1 (a failure or finding) or 2 (skipped, having said why).
run_stage() {
  local name=$1 started=$SECONDS rc=0
  shift
  "$@" || rc=$?
  echo "test.sh: $name: $((SECONDS - started)) s"
  if [ $rc -eq 2 ] && [ -n "${CI:-}" ]; then
    echo "test.sh: $name must run on CI (\$CI is set): install clang and libclang-rt-dev (scripts/setup.sh does)"
    status=1
  elif [ $rc -ne 0 ] && [ $rc -ne 2 ]; then
    status=1
  fi
}
run_stage "sanitizers (cpu, emu)" bash scripts/asan_tests.sh
run_stage "fuzzing" env DIFFUSE_FUZZ_JOBS="${DIFFUSE_FUZZ_JOBS:-2}" DIFFUSE_FUZZ_SEED="${DIFFUSE_FUZZ_SEED:-1}" \
  DIFFUSE_FUZZ_RUNS="${DIFFUSE_FUZZ_RUNS:-20000}" bash scripts/fuzz.sh "${DIFFUSE_FUZZ_SECONDS:-120}"
exit $status
