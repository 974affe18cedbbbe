#!/usr/bin/env bash
# Runs the cpu and emu test labels under AddressSanitizer + UndefinedBehaviorSanitizer, in the
# sanitizer flavour's own build directory (scripts/sanitizer_build.sh: build-asan or
# $DIFFUSE_ASAN_BUILD_DIR). Any sanitizer report fails the test that made it (UBSan does not
# recover; ASan aborts). Exit status: 0 clean, 1 a failure, 2 skipped (no clang/libFuzzer; the
# reason is printed).
# What runs, to keep CI's whole test command under 30 minutes (docs/hardening.md): label cpu
# without its isa-avx2:/isa-baseline: reruns (the same kernels on narrower paths), and label emu in
# thread order fwd only: not rev/shuffle (the same accesses in another order) nor emu-race (the
# racecheck run single-steps shared-memory accesses: over 12 minutes under ASan, and racecheck is
# its own checker). Left out too: the [slow] cases (label slow), and the one emu case that reads
# past a shared array on purpose (racecheck's "vector and sub-word accesses": UBSan rightly calls
# that out-of-bounds index undefined), and the install test (docs/examples/embed is built without
# the sanitizer runtimes, so it cannot link the sanitized libdiffuse.a), and the two pages rendered
# in Chromium (test_report_browser.cpp: over two minutes under the sanitizers, nearly all of it the
# uninstrumented browser; the report they render is written under ASan by test_report.cpp).
# $DIFFUSE_SANITIZE_CTEST_ARGS replaces the selection (e.g. "-L cpu" for everything in cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${DIFFUSE_ASAN_BUILD_DIR:-build-asan}
bash scripts/sanitizer_build.sh asan_tests.sh test_cpu test_emu diffuse_cli || exit $?
# detect_leaks: LeakSanitizer runs at every test binary's exit. The sanitizer runtimes print
# every report with a stack (print_stacktrace) and make it fatal.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:check_initialization_order=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
read -r -a selection <<< "${DIFFUSE_SANITIZE_CTEST_ARGS:--L ^(cpu|emu)$ -E ^(isa-|emu-rev:|emu-shuffle:|emu-race:|emu-fwd:racecheck:.vector.and.sub-word|docs/examples/embed.builds|.*in.Chromium)}"
total=$(ctest --test-dir "$build_dir" -N "${selection[@]}" | sed -n 's/^Total Tests: //p')
echo "asan_tests.sh: running ${total:-0} tests under ASan + UBSan in $build_dir (${selection[*]})"
ctest --test-dir "$build_dir" --output-on-failure --no-tests=error -j "$(nproc)" "${selection[@]}"
