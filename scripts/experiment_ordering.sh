#!/usr/bin/env bash
# The paper's Table-1 ordering on a model, without tuning: prune ~20% of parameters with the
# block strategy under each criterion and measure perplexity on held-out text.
# Usage: scripts/experiment_ordering.sh MODEL CALIB_TEXT TEST_TEXT OUT_DIR [RATIO] [LAYERS]
# (Kept because it produced docs/results.md's first tables, and for its channel-strategy row. The
# whole Table-1 grid -- the same pruning plus LoRA rows, zero-shot tasks, one eval table -- is
# scripts/experiment_table1.sh.)
set -euo pipefail
BIN=${BIN:-build/llmprune}
MODEL=$1; CALIB=$2; TEST=$3; OUT=$4; RATIO=${5:-0.45}; LAYERS=${6:-1:5}
mkdir -p "$OUT"
BLOCK="--strategy block --ratio $RATIO --attn-layers $LAYERS --mlp-layers $LAYERS"
ppl() { "$BIN" eval "$1" --ppl "$TEST" --seq-len 128 --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.4f %d" % (list(d["ppl"].values())[0]["ppl"], d["params"]))'; }
printf '| criterion | params | removed | PPL |\n|---|---|---|---|\n'
read -r base params0 <<< "$(ppl "$MODEL")"
printf '| unpruned | %s | 0%% | %s |\n' "$params0" "$base"
run() {  # name, extra prune args (block strategy over LAYERS at RATIO unless overridden)
  local name=$1; shift
  "$BIN" prune "$MODEL" --out "$OUT/$name" --force --calib "$CALIB" --calib-samples 10 --calib-seq-len 64 --seed 0 \
    --json "$@" > "$OUT/$name.prune.json"
  read -r p n <<< "$(ppl "$OUT/$name")"
  python3 -c "import sys; n=int(sys.argv[2]); n0=int(sys.argv[3]); print('| %s | %d | %.1f%% | %s |' % (sys.argv[1], n, 100*(1-n/n0), sys.argv[4]))" "$name" "$n" "$params0" "$p"
}
run element1 --importance taylor --taylor element1 $BLOCK
run element2 --importance taylor --taylor element2 $BLOCK
run vector --importance taylor --taylor vector $BLOCK
run random --importance random $BLOCK
run l1 --importance l1 $BLOCK
run l2 --importance l2 $BLOCK
run channel-element1 --strategy channel --ratio "${CHANNEL_RATIO:-0.2}" --importance taylor --taylor element1
