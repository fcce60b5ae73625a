#!/usr/bin/env bash
# The LLaMA path of two builds in one run: bench_forward (prompt and decode of the demo model
# and the random 1B-class model, next to sgemm and the read bandwidth) and the whole 1B prune
# (bench/peer_torch.py's command: bf16 checkpoint, taylor element1, heads and MLP channels of
# layers 3:19, ratio 0.25, 10 x 64 calibration tokens, fp32 compute), wall time and peak RSS,
# the two builds alternating round by round so that both see the same machine.
#
#   bench/before_after.sh BUILD_BEFORE BUILD_AFTER [ROUNDS=2] [WORK=/tmp/llmprune-before-after]
#
# e.g. the engine before issue 15 (e5e67ea, built in its own worktree) against main:
#   git worktree add /tmp/before e5e67ea && (cd /tmp/before && cmake -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j2)
#   chrt -r 10 bench/before_after.sh /tmp/before/build build
set -euo pipefail
BEFORE=$(realpath "$1")
AFTER=$(realpath "$2")
ROUNDS=${3:-2}
WORK=${4:-/tmp/llmprune-before-after}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CALIB="$ROOT/../shared/fixtures/text/kjv.train.txt"
mkdir -p "$WORK"
MODEL="$WORK/model-1b"
[ -f "$MODEL/config.json" ] || "$AFTER/bench_make_random_checkpoint" "$MODEL" 1b bf16 1 >/dev/null
cp "$ROOT/../shared/fixtures/tokenizers/llama2/tokenizer.model" "$MODEL/tokenizer.model"  # as bench/peer_torch.py

echo "before: $BEFORE ($(git -C "$BEFORE/.." rev-parse --short HEAD 2>/dev/null || echo '?'))"
echo "after:  $AFTER ($(git -C "$AFTER/.." rev-parse --short HEAD 2>/dev/null || echo '?'))"
echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A PRUNE
for round in $(seq 1 "$ROUNDS"); do
  for side in before after; do
    build=$BEFORE
    [ "$side" = after ] && build=$AFTER
    echo "== round $round, $side: bench_forward"
    "$build/bench_forward" 2>&1 | sed "s/^/[$side] /"
    rm -rf "$WORK/pruned"
    /usr/bin/time -f '%e %M' -o "$WORK/time" "$build/llmprune" prune "$MODEL" --out "$WORK/pruned" --strategy block \
      --importance taylor --taylor element1 --calib "$CALIB" --calib-samples 10 --calib-seq-len 64 \
      --calib-sampling sequential --attn-layers 3:19 --mlp-layers 3:19 --ratio 0.25 --json >"$WORK/prune-$side.json"
    read -r wall rss_kb <"$WORK/time"
    PRUNE[$side]="${PRUNE[$side]:-} $wall"
    printf '== round %s, %s: 1B prune %.1f s wall, peak RSS %.2f GiB (load %s)\n' "$round" "$side" "$wall" \
      "$(echo "$rss_kb / 1048576" | bc -l)" "$(cut -d' ' -f1 /proc/loadavg)"
  done
done
best() { tr ' ' '\n' | grep -v '^$' | sort -g | head -1; }
b=$(echo "${PRUNE[before]}" | best)
a=$(echo "${PRUNE[after]}" | best)
printf '1B prune, best of %s: before %.1f s, after %.1f s, after/before = %.3f\n' "$ROUNDS" "$b" "$a" "$(echo "$a / $b" | bc -l)"
python3 - "$WORK/prune-before.json" "$WORK/prune-after.json" <<'PY'
import json, sys
b, a = (json.load(open(f)) for f in sys.argv[1:3])
same = b["layers"] == a["layers"] and b["params_after"] == a["params_after"]
print(f"pruned shapes (per-layer sizes, parameters after): {'equal' if same else 'DIFFER'}; "
      f"calibration loss before {b['calib_loss']:.6f}, after {a['calib_loss']:.6f}")
PY
