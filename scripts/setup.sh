#!/usr/bin/env bash
# Installs, from Debian's apt only, whatever diffuse needs that is missing. Idempotent and quiet
# when everything is present: `apt-get update` runs at most once, and only if something is missing.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  catch2 libcxxopts-dev libstb-dev libopenblas-dev nlohmann-json3-dev zlib1g-dev
  libpng-dev libjpeg62-turbo-dev  # PNG and JPEG decoding (engine/image_decode.h)
  libboost-context-dev libomp-dev
  clang libclang-rt-dev  # the sanitizer flavour and its libFuzzer targets (scripts/sanitizer_build.sh)
  dataset-fashion-mnist
  python3 python3-torch python3-numpy
  openmpi-bin libopenmpi-dev  # data-parallel training: mpirun and MPI (docs/distributed.md)
  chromium  # renders report.html in the report tests (headless: tests/cpu/test_report_browser.cpp)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "setup: installing ${missing[*]}"
sudo_cmd=()
[ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
