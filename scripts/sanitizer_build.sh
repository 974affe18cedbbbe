#!/usr/bin/env bash
# Configures and builds the sanitizer flavour (cmake/sanitizers.cmake: clang, ASan + UBSan, libFuzzer
# coverage, -DDIFFUSE_CUDA=OFF) into build-asan (or $DIFFUSE_ASAN_BUILD_DIR). One directory serves
# scripts/asan_tests.sh (the cpu and emu test labels) and scripts/fuzz.sh (the fuzz targets).
#   scripts/sanitizer_build.sh CALLER [cmake --build targets...]   (no targets: everything)
# CALLER prefixes its messages. Exits 2 after "CALLER: skipped, <why>" when clang or its
# libFuzzer/sanitizer runtimes are missing (Debian: clang, libclang-rt-dev), 1 after the build's
# last lines when the build fails, 0 quietly when everything is built.
set -euo pipefail
cd "$(dirname "$0")/.."
caller=$1
shift
build_dir=${DIFFUSE_ASAN_BUILD_DIR:-build-asan}
cxx=${DIFFUSE_ASAN_CXX:-clang++}
cc=${DIFFUSE_ASAN_CC:-clang}
if ! command -v "$cxx" >/dev/null || ! command -v "$cc" >/dev/null; then
  echo "$caller: skipped, no $cxx/$cc (Debian package clang)"
  exit 2
fi
# The runtimes come in a separate package: link a one-line fuzz target to be sure they are there.
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' > "$probe/p.cpp"
if ! "$cxx" -fsanitize=fuzzer,address,undefined "$probe/p.cpp" -o "$probe/p" 2>"$probe/err"; then
  echo "$caller: skipped, $cxx cannot link libFuzzer with ASan + UBSan (Debian package libclang-rt-dev): $(head -1 "$probe/err")"
  exit 2
fi
log="$probe/build.log"
if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  # Release (-O3): the tests run at a usable speed under the sanitizers; -gline-tables-only
  # (cmake/sanitizers.cmake) still gives file:line in every report.
  cmake -S . -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER="$cc" \
    -DCMAKE_CXX_COMPILER="$cxx" -DDIFFUSE_CUDA=OFF -DDIFFUSE_SANITIZE=ON >"$log" 2>&1 || {
    tail -30 "$log"
    echo "$caller: configuring $build_dir failed"
    exit 1
  }
fi
targets=()
for t in "$@"; do targets+=(--target "$t"); done
if ! cmake --build "$build_dir" -j "$(nproc)" "${targets[@]}" >"$log" 2>&1; then
  tail -30 "$log"
  echo "$caller: building the sanitizer flavour in $build_dir failed"
  exit 1
fi
