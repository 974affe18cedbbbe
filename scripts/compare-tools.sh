# Sourced by scripts/compare.sh and scripts/compare-cpu.sh: finds the two programs they compare and
# sets $bin (the diffuse binary: $DIFFUSE_BIN, default build/bin/diffuse) and $python (a python3
# that imports torch: $PYTHON, else the first of python3 and /usr/bin/python3 that does). Either
# missing is a usage error (exit 2) naming the script in $script.
bin="${DIFFUSE_BIN:-build/bin/diffuse}"
[[ -x "$bin" ]] || { echo "$script: $bin not found; build first (scripts/build.sh) or set DIFFUSE_BIN" >&2; exit 2; }
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  for p in python3 /usr/bin/python3; do
    if command -v "$p" >/dev/null && "$p" -c 'import torch' 2>/dev/null; then python="$p"; break; fi
  done
fi
[[ -n "$python" ]] || { echo "$script: no python3 with torch found; set PYTHON" >&2; exit 2; }

# make_results_folder DIR: creates the folder the JSON files go to. The reports read every round
# file they find there (NAME.rN.json), so an earlier run's, left in the same folder, would count as
# rounds of this one: they are removed first, and the script says so.
make_results_folder() {
  mkdir -p "$1"
  local old=("$1"/*.r[0-9]*.json)
  if [[ -e "${old[0]}" ]]; then
    echo "$script: removing ${#old[@]} round file(s) of an earlier run from $1"
    rm -f "${old[@]}"
  fi
}
