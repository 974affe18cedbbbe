#!/usr/bin/env bash
# Used by tests/cpu/test_distributed.cpp: starts a long 2-rank training run under mpirun, waits
# until it has logged two steps, sends signal $3 (STOP: a hung rank; KILL: a dead one) to rank 1,
# and reports how mpirun ended: "exit=<code> seconds=<from the signal to mpirun's exit>" after
# mpirun's own output. A stuck job is cut off at 120 s by `timeout` (exit 124), which the test
# reports as a failure.
#   kill_rank.sh <mpirun> <diffuse> <run dir> <STOP|KILL> <data args...>
set -u
mpirun=$1 diffuse=$2 out=$3 sig=$4
shift 4
"$mpirun" --allow-run-as-root --oversubscribe --bind-to none -np 2 \
  "$diffuse" train --out "$out" --steps 100000 --threads 1 "$@" >"$out.log" 2>&1 &
launcher=$!
for _ in $(seq 1 1200); do  # up to 120 s for two logged steps
  [ -f "$out/metrics.jsonl" ] && [ "$(wc -l <"$out/metrics.jsonl")" -ge 2 ] && break
  sleep 0.1
done
# Rank 1: the process of this run whose environment says OMPI_COMM_WORLD_RANK=1 (not its name:
# diffuse may re-execute itself through /proc/self/exe).
victim=""
for pid in $(pgrep -f -- "--out $out" || true); do
  if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=1'; then
    victim=$pid
  fi
done
if [ -z "$victim" ]; then
  echo "kill_rank.sh: rank 1 not found (no two logged steps within 120 s?)"
  kill -KILL "$launcher" 2>/dev/null
  cat "$out.log"
  exit 2
fi
start=$(date +%s%N)
kill -"$sig" "$victim"
# Waits for mpirun at most 120 s; then ends it, and `wait` reports the kill.
timeout 120 tail --pid="$launcher" -f /dev/null || kill -KILL "$launcher" 2>/dev/null
wait "$launcher"
code=$?
end=$(date +%s%N)
kill -KILL "$victim" 2>/dev/null  # a stopped rank that mpirun left behind
cat "$out.log"
echo "exit=$code seconds=$(( (end - start) / 1000000000 ))"
