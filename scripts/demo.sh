#!/usr/bin/env bash
# The main job on the bundled model: inspect, measure, prune, measure again, generate.
# Uses only files in this repository (models/kjv-demo, data/kjv).
set -euo pipefail
BIN=${1:-build/llmprune}
MODEL=models/kjv-demo
OUT=out/demo
mkdir -p "$OUT"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "The model"
"$BIN" info "$MODEL"

step "Perplexity before pruning (held-out text, 128-token windows)"
"$BIN" eval "$MODEL" --ppl kjv-test=data/kjv/test.txt --max-windows 120

step "Generation before pruning"
"$BIN" generate "$MODEL" --prompt "And God said" --max-tokens 32

step "Prune: block strategy, Taylor element1, 10 x 64 calibration tokens, layers 1-4, 35% of heads and MLP channels"
"$BIN" prune "$MODEL" --out "$OUT/pruned" --force --strategy block --importance taylor --taylor element1 \
  --ratio 0.35 --attn-layers 1:5 --mlp-layers 1:5 --calib data/kjv/valid.txt --calib-samples 10 --calib-seq-len 64 \
  --save-importance "$OUT/importance.json"

step "Perplexity after pruning"
"$BIN" eval "$OUT/pruned" --ppl kjv-test=data/kjv/test.txt --max-windows 120

step "Generation after pruning"
"$BIN" generate "$OUT/pruned" --prompt "And God said" --max-tokens 32

echo
echo "pruned model: $OUT/pruned (pruning.json lists every removed group); scores: $OUT/importance.json"
