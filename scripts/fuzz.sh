#!/usr/bin/env bash
# Runs diffuse's libFuzzer targets (tests/fuzz/, docs/hardening.md) for a bounded time each.
#   scripts/fuzz.sh [seconds] [target...]      (defaults: 60 s; every tests/fuzz/fuzz_*.cpp)
# Builds the sanitizer flavour first (scripts/sanitizer_build.sh, build-asan or
# $DIFFUSE_ASAN_BUILD_DIR). For each target it replays every input kept in
# tests/fuzz/regressions/<target>/ (each must pass), then fuzzes from tests/fuzz/corpus/<target>/
# plus the corpus earlier runs grew in <build>/fuzz-corpus/<target>/. Any crash, sanitizer report,
# leak, timeout (-timeout), allocation over 1 GB (-malloc_limit_mb) or RSS over 2.5 GB fails the run;
# the input that did it is saved under <build>/fuzz-findings/<target>/ (or
# $DIFFUSE_FUZZ_FINDINGS/<target>/), and the last lines of the target's log are printed.
# $DIFFUSE_FUZZ_JOBS targets run side by side (default 1). Exit status: 0 clean, 1 a finding,
# 2 skipped (no clang/libFuzzer; the reason is printed).
# Repeatable runs (what scripts/test.sh, and so CI, does): $DIFFUSE_FUZZ_SEED fixes libFuzzer's seed
# and $DIFFUSE_FUZZ_RUNS stops each target after that many inputs, [seconds] then only capping a slow
# machine. From a clean build directory the same inputs are tried every time, so a landing is
# refused only for a finding its own change brought in; finding new bugs is a longer, seedless run
# on purpose (docs/hardening.md).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for src in tests/fuzz/fuzz_*.cpp; do
    name=$(basename "$src" .cpp)
    [ "$name" = fuzz_support ] || targets+=("${name#fuzz_}")
  done
fi
build_dir=${DIFFUSE_ASAN_BUILD_DIR:-build-asan}
binaries=()
for t in "${targets[@]}"; do
  [ -f "tests/fuzz/fuzz_$t.cpp" ] || { echo "fuzz.sh: no fuzz target '$t' (tests/fuzz/fuzz_$t.cpp)"; exit 1; }
  binaries+=("fuzz_$t")
done
bash scripts/sanitizer_build.sh fuzz.sh "${binaries[@]}" || exit $?
findings_root=${DIFFUSE_FUZZ_FINDINGS:-$build_dir/fuzz-findings}
jobs=${DIFFUSE_FUZZ_JOBS:-1}
# The issue's bound: no allocation over 1 GB from a small file. ASan's own overhead counts towards
# RSS, hence the higher RSS limit. -timeout: one input may take at most 20 s (the sanitizers make
# everything several times slower). Leaks are findings too (-detect_leaks, on by default).
limits=(-malloc_limit_mb=1024 -rss_limit_mb=2560 -timeout=20)
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# Runs one target; its output goes to <findings>/<target>.log. Returns non-zero on a finding.
fuzz_one() {
  local t=$1 bin="$build_dir/fuzz/fuzz_$1"
  local findings="$findings_root/$t" grown="$build_dir/fuzz-corpus/$t"
  local seeds="tests/fuzz/corpus/$t" regressions="tests/fuzz/regressions/$t"
  mkdir -p "$findings" "$grown"
  local log="$findings_root/$t.log"
  : > "$log"
  local kept=()
  if [ -d "$regressions" ]; then
    mapfile -t kept < <(find "$regressions" -type f ! -name '*.md' | sort)
  fi
  if [ ${#kept[@]} -gt 0 ]; then
    if ! "$bin" "${limits[@]}" -artifact_prefix="$findings/" "${kept[@]}" >>"$log" 2>&1; then
      echo "fuzz.sh: $t: a kept regression input fails again (log $log):"
      tail -40 "$log"
      return 1
    fi
  fi
  local corpora=("$grown")
  [ -d "$seeds" ] && corpora+=("$seeds")
  local repeatable=()
  [ -n "${DIFFUSE_FUZZ_SEED:-}" ] && repeatable+=(-seed="$DIFFUSE_FUZZ_SEED")
  [ -n "${DIFFUSE_FUZZ_RUNS:-}" ] && repeatable+=(-runs="$DIFFUSE_FUZZ_RUNS")
  if ! "$bin" "${limits[@]}" "${repeatable[@]}" -max_total_time="$seconds" -print_final_stats=1 \
      -artifact_prefix="$findings/" "${corpora[@]}" >>"$log" 2>&1; then
    echo "fuzz.sh: $t: FOUND A BUG; the input is in $findings/ (keep it in $regressions/ once fixed):"
    tail -40 "$log"
    return 1
  fi
  local runs
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  echo "fuzz.sh: $t: clean (${#kept[@]} regression inputs replayed, ${runs:-?} inputs, at most ${seconds} s)"
}

echo "fuzz.sh: ${#targets[@]} targets, ${DIFFUSE_FUZZ_RUNS:+${DIFFUSE_FUZZ_RUNS} inputs or }${seconds} s each${DIFFUSE_FUZZ_SEED:+ from seed $DIFFUSE_FUZZ_SEED}, $jobs at a time, in $build_dir"
status=0
pids=()
for t in "${targets[@]}"; do
  fuzz_one "$t" &
  pids+=($!)
  if [ ${#pids[@]} -ge "$jobs" ]; then
    wait "${pids[0]}" || status=1
    pids=("${pids[@]:1}")
  fi
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
exit $status
