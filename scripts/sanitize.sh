#!/usr/bin/env bash
# compute-sanitizer over the kernel-level `cuda` tests (issue 4, "Proof"): memcheck (out-of-bounds
# and misaligned global/shared accesses, device faults, bad API arguments) and racecheck
# (shared-memory hazards: a missing __syncthreads). Fails on any error report, on any failed test,
# and when no CUDA device is present (a run that skipped every case would prove nothing).
#
#   scripts/sanitize.sh                   # both tools over the default tag filter below
#   scripts/sanitize.sh "[attention]"     # a Catch2 test spec of your own (tags, names, ~exclusions)
#   SANITIZE_TOOLS="memcheck" scripts/sanitize.sh
#
# Environment: DIFFUSE_BUILD_DIR (default build), COMPUTE_SANITIZER (the binary; else PATH, then
# /usr/local/cuda/bin), SANITIZE_TOOLS (default "memcheck racecheck"), SANITIZER_ARGS (extra flags,
# e.g. "--kernel-name kns=attention" to narrow racecheck). The whole UNet, CLI and allocator cases
# are left out by default: the sanitizers slow kernels 10-100x and those cases add no kernel that
# the op cases do not already run. cuDNN/cuBLAS kernels run under both tools too (through conv2d
# and linear); a hazard reported inside them is NVIDIA's, so check the kernel name before chasing.
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=${DIFFUSE_BUILD_DIR:-build}
binary="$build_dir/tests/test_cuda"
spec=${1:-"[ops],[optim],[noise],[denoise_step],[conv2d],[linear]"}
tools=${SANITIZE_TOOLS:-memcheck racecheck}

sanitizer=${COMPUTE_SANITIZER:-}
if [[ -z "$sanitizer" ]]; then
  sanitizer=$(command -v compute-sanitizer || true)
  [[ -z "$sanitizer" && -x /usr/local/cuda/bin/compute-sanitizer ]] && sanitizer=/usr/local/cuda/bin/compute-sanitizer
fi
if [[ -z "$sanitizer" ]]; then
  echo "sanitize.sh: compute-sanitizer not found (looked at \$COMPUTE_SANITIZER, PATH, /usr/local/cuda/bin)" >&2
  exit 2
fi
if [[ ! -x "$binary" ]]; then
  echo "sanitize.sh: $binary not built (cmake --build $build_dir --target test_cuda)" >&2
  exit 2
fi
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  echo "sanitize.sh: no CUDA device: nothing to sanitize" >&2
  exit 2
fi

log_dir=$(mktemp -d "${TMPDIR:-/tmp}/diffuse-sanitize-XXXXXX")
status=0
for tool in $tools; do
  extra=()
  # Report every hazard class racecheck knows, not only its summary analysis.
  [[ "$tool" == racecheck ]] && extra=(--racecheck-report all)
  log="$log_dir/$tool.log"
  echo "sanitize.sh: $tool over '$spec' (log: $log)"
  # --error-exitcode 99 separates a sanitizer report from a failed test (Catch2 exits with the
  # number of failed assertions, capped at 255). OMP threads wait passively: the CPU references
  # run beside the sanitizer.
  read -r -a user_args <<< "${SANITIZER_ARGS:-}"
  set +e
  OMP_WAIT_POLICY=passive "$sanitizer" --tool "$tool" --error-exitcode 99 --print-limit 100 "${extra[@]}" \
    "${user_args[@]}" "$binary" "$spec" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  if grep -q "no CUDA device: test not run" "$log"; then
    echo "sanitize.sh: $tool: the tests did not see a CUDA device" >&2
    status=1
  elif [[ $rc -eq 99 ]] || grep -Eq "ERROR SUMMARY: [1-9]|SUMMARY: .*\([1-9][0-9]* errors" "$log"; then
    echo "sanitize.sh: $tool reported errors (see $log)" >&2
    status=1
  elif [[ $rc -ne 0 ]]; then
    echo "sanitize.sh: $tool: test_cuda failed with exit code $rc (see $log)" >&2
    status=1
  elif ! grep -q "All tests passed" "$log"; then
    echo "sanitize.sh: $tool: no Catch2 summary in the output (see $log)" >&2
    status=1
  else
    echo "sanitize.sh: $tool clean"
  fi
done
exit $status
