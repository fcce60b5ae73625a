#!/usr/bin/env bash
# Runs a GoogleTest binary as JOBS parallel processes, each one shard of the suite
# (GTEST_TOTAL_SHARDS / GTEST_SHARD_INDEX), for `make test-asan`.
#   tests/sanitizer/run_shards.sh BINARY JOBS [EXCLUDE]
# EXCLUDE is a GoogleTest negative filter without the leading '-' (patterns joined by ':').
#
# Why not ctest: ctest starts one process per test (360), and an instrumented process spends
# ~0.4 s starting and leak-checking before and after its test, which on 2 cores was a quarter of
# the sanitizer run. The environment is the one ctest gives each test (one OpenMP/BLAS thread).
# A sanitizer report ends its shard's process: the tail of that shard's log is printed, the
# report included. Logs stay in BINARY's directory under shard-logs/.
set -uo pipefail
bin=$1
jobs=${2:-2}
exclude=${3:-}
logs="$(dirname "$bin")/shard-logs"
mkdir -p "$logs"
rm -f "$logs"/shard*.log
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
filter=()
[[ -n "$exclude" ]] && filter=("--gtest_filter=-$exclude")

t0=$(date +%s)
pids=()
for ((i = 0; i < jobs; i++)); do
  GTEST_TOTAL_SHARDS=$jobs GTEST_SHARD_INDEX=$i timeout 1800 "$bin" "${filter[@]}" > "$logs/shard$i.log" 2>&1 &
  pids+=($!)
done
failed=0
total=0
for ((i = 0; i < jobs; i++)); do
  wait "${pids[$i]}"
  rc=$?
  log="$logs/shard$i.log"
  ran=$(grep -m1 -E '^\[==========\] [0-9]+ tests? from .* ran\.' "$log" | awk '{print $2}')
  passed=$(grep -m1 -E '^\[  PASSED  \] [0-9]+ test' "$log" | awk '{print $4}')
  total=$(( total + ${passed:-0} ))
  echo "shard $i/$jobs: exit $rc, ${ran:-?} tests ran, ${passed:-0} passed ($log)"
  if [[ $rc -ne 0 ]]; then
    failed=1
    # The failing tests' own output, then the end of the log (a sanitizer report ends the process).
    for t in $(grep -E '^\[  FAILED  \] [A-Za-z0-9_/.]+ \(' "$log" | awk '{print $4}'); do
      awk -v t="$t" '$0 ~ "^\\[ RUN      \\] " t "$" {p = 1} p {print "    " $0} $0 ~ "^\\[  FAILED  \\] " t " " {p = 0}' "$log"
    done
    echo "---- last 40 lines of $log"
    tail -n 40 "$log" | sed 's/^/    /'
  fi
done
echo "sanitizer run: $total tests passed in $(( $(date +%s) - t0 )) s"
exit $failed
