#!/usr/bin/env bash
# The headline comparison of docs/results.md: retraining-free pruning (FLAP, least-squares and
# bias compensation, depth pruning) against LLM-Pruner's element¹ with and without LoRA, on one
# model at one parameter budget, measured in ONE `llmprune eval --compare` run.
#
# Usage: scripts/experiment_headline.sh MODEL OUT E_RATIO E_LAYERS F_RATIO      (from the repo root)
#   MODEL     model directory
#   OUT       output folder (models/, logs/, commands.sh, times.tsv, table.md, table.json)
#   E_RATIO   element¹'s block --ratio (heads and MLP channels of the pruned layers)
#   E_LAYERS  element¹'s --attn-layers/--mlp-layers (A:B), or "all"
#   F_RATIO   --ratio of the FLAP rows (--allocation adaptive: fraction of attention + MLP
#             parameters); choose it so both remove about the same share of all parameters
# Environment: F (fixtures dir, default ../shared/fixtures), BIN (default build/llmprune),
#   STEPS (LoRA steps, default 150), STAT_SAMPLES (activation-statistics windows of 128 tokens,
#   default 1024, FLAP's default), LIMIT (zero-shot items, default 300), EXTRA (more rows: "name|prune args"
#   separated by ';', e.g. depth pruning), SKIP_LORA=1 (no tune row).
# Calibration: the gradient criteria 10 windows of 64 tokens of kjv.valid.txt, seed 0 (the
# paper's default); activation statistics and compensation STAT_SAMPLES windows of 128 tokens of
# kjv.train.txt (131k tokens at 1024; LoRA reads 307k tokens of the same text at 150 steps).
# LoRA as docs/results.md's Table 1 grid: r 8, alpha 16, dropout 0.05 on every projection, AdamW
# lr 1e-3, batch 16 (micro 4), 128-token chunks of kjv.train.txt, 30 warm-up steps, seed 42.
# The wall time of each pruning step (and of the tune) is in OUT/times.tsv.
set -euo pipefail
[ $# -eq 5 ] || { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 2; }
MODEL=$1 OUT=$2 E_RATIO=$3 E_LAYERS=$4 F_RATIO=$5
F=${F:-../shared/fixtures}
BIN=${BIN:-build/llmprune}
STEPS=${STEPS:-150}
STAT_SAMPLES=${STAT_SAMPLES:-1024}
LIMIT=${LIMIT:-300}
EXTRA=${EXTRA:-}
SKIP_LORA=${SKIP_LORA:-0}
T=$F/text
[ -d "$MODEL" ] || { echo "experiment_headline: error: no model directory $MODEL" >&2; exit 2; }
mkdir -p "$OUT/models" "$OUT/logs"
: > "$OUT/commands.sh"
printf 'method\tseconds\n' > "$OUT/times.tsv"

run() {  # name, command...: runs it, logs stderr, records the command and its wall time
  local name=$1; shift
  echo "+ $*" | tee -a "$OUT/commands.sh" >&2
  local t0; t0=$(date +%s.%N)
  "$@" > "$OUT/logs/$name.out" 2> "$OUT/logs/$name.err" || { tail -5 "$OUT/logs/$name.err" >&2; exit 1; }
  printf '%s\t%.1f\n' "$name" "$(echo "$(date +%s.%N) - $t0" | bc)" >> "$OUT/times.tsv"
}

GRAD="--calib $T/kjv.valid.txt --calib-samples 10 --calib-seq-len 64 --seed 0"
STATS="--stat-calib $T/kjv.train.txt --stat-samples $STAT_SAMPLES --stat-seq-len 128"
LAYERS=""
[ "$E_LAYERS" = all ] || LAYERS="--attn-layers $E_LAYERS --mlp-layers $E_LAYERS"
E1="--importance taylor --taylor element1 --strategy block --ratio $E_RATIO $LAYERS"
FLAP="--importance flap --allocation adaptive --ratio $F_RATIO --strategy block"

declare -a NAMES=()
prune() {  # name, prune args...
  local name=$1; shift
  # shellcheck disable=SC2086
  run "$name" "$BIN" prune "$MODEL" --out "$OUT/models/$name" --force --json "$@"
  NAMES+=("$name")
}
# shellcheck disable=SC2086
{
  prune element1 $E1 $GRAD
  prune element1+bias $E1 $GRAD $STATS --compensate bias
  prune element1+lstsq $E1 $GRAD $STATS --compensate lstsq
  prune flap $FLAP --calib $T/kjv.train.txt $STATS --compensate bias
  prune flap+lstsq $FLAP --calib $T/kjv.train.txt $STATS --compensate bias+lstsq
}
if [ -n "$EXTRA" ]; then
  IFS=';' read -ra rows <<< "$EXTRA"
  for row in "${rows[@]}"; do
    # shellcheck disable=SC2086
    prune "${row%%|*}" ${row#*|}
  done
fi
if [ "$SKIP_LORA" != 1 ]; then
  run element1+LoRA "$BIN" tune "$OUT/models/element1" --out "$OUT/models/element1+LoRA" --force \
    --data "$T/kjv.train.txt" --max-steps "$STEPS" --lr 1e-3 --batch 16 --micro-batch 4 --cutoff-len 128 \
    --warmup-steps 30 --lora-r 8 --lora-alpha 16 --lora-dropout 0.05 --lora-targets q,k,v,o,gate,up,down \
    --seed 42 --eval-every 0 --save-every 0 --log-every 10 --json
  NAMES+=(element1+LoRA)
fi
compare=()
for n in "${NAMES[@]}"; do compare+=("$n=$OUT/models/$n"); done
run eval "$BIN" eval "original=$MODEL" --ppl "kjv=$T/kjv.test.txt" --seq-len 128 --tasks kjv_cloze \
  --task-dir "$F/tasks" --limit "$LIMIT" --markdown --save-json "$OUT/table.json" --compare "${compare[@]}"
cp "$OUT/logs/eval.out" "$OUT/table.md"
cat "$OUT/table.md"
column -t "$OUT/times.tsv"
