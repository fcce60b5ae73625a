#!/usr/bin/env bash
# Runs every libFuzzer target built in BUILD/fuzz for SECONDS each (`make fuzz` calls this).
#   fuzz/run.sh [BUILD=build-fuzz] [SECONDS=60] [TARGETS="safetensors gguf ..."]
# Each target starts from its committed seeds (fuzz/corpus/<t>, read only) plus the corpus it grew
# in earlier runs (BUILD/fuzz-work/<t>/corpus); crash inputs land in BUILD/fuzz-work/<t>/artifacts.
# Prints executions and crashes per target; exits 1 when any target crashed.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build-fuzz}
SECS=${2:-60}
TARGETS=${3:-}
if [[ -z "$TARGETS" ]]; then
  for b in "$BUILD"/fuzz/fuzz_*; do TARGETS+="${b##*/fuzz_} "; done
fi
export OMP_NUM_THREADS=1
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
summary="$BUILD/fuzz-work/summary.tsv"
mkdir -p "$BUILD/fuzz-work"
printf "%-16s %12s %8s %8s %s\n" target executions corpus crashes log
failed=0
for t in $TARGETS; do
  bin="$BUILD/fuzz/fuzz_$t"
  [[ -x "$bin" ]] || { echo "no $bin (build it with make fuzz)"; failed=1; continue; }
  work="$BUILD/fuzz-work/$t"
  mkdir -p "$work/corpus" "$work/artifacts"
  dict=()
  case $t in safetensors|config|index|tokenizer_json|tasks|alpaca) dict=(-dict=fuzz/json.dict) ;; esac
  before=$(ls "$work/artifacts" | wc -l)
  "$bin" "$work/corpus" "fuzz/corpus/$t" "${dict[@]}" -max_total_time="$SECS" -timeout=20 -rss_limit_mb=2560 \
    -print_final_stats=1 -artifact_prefix="$work/artifacts/" > "$work/log" 2>&1
  rc=$?
  execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$work/log" | tail -1)
  ncorp=$(ls "$work/corpus" | wc -l)
  crashes=$(( $(ls "$work/artifacts" | wc -l) - before ))  # new crash/leak/timeout/oom inputs of this run
  [[ $rc -ne 0 && $crashes -eq 0 ]] && crashes="rc=$rc"
  printf "%-16s %12s %8s %8s %s\n" "$t" "${execs:-?}" "$ncorp" "$crashes" "$work/log"
  printf "%s\t%s\t%s\t%s\t%s\t%s\n" "$(date -u +%FT%TZ)" "$t" "$SECS" "${execs:-?}" "$crashes" "$(git rev-parse --short HEAD 2>/dev/null)" >> "$summary"
  if [[ $rc -ne 0 || "$crashes" != 0 ]]; then
    failed=1
    grep -m3 -E "ERROR|SUMMARY|runtime error|terminate called" "$work/log" | sed 's/^/    /'
  fi
done
exit $failed
