#!/usr/bin/env bash
# Prune a 7B-class model on this machine and show the speed (docs/scale.md).
#
#   bench/scale.sh [BUILD_DIR]            (default: build)
#
# Writes a randomly initialised LLaMA-7B-shape checkpoint (hidden 4096, 32 layers, 32 heads,
# MLP 11008, vocab 32000; bf16, ~12.6 GiB) tensor by tensor under $WORK (default /tmp), runs
# `llmprune prune` on it once per --compute value (block, taylor element1, 10 x 64 calibration
# tokens, layers 4:30, ratio 0.25) under /usr/bin/time -v, measures the sgemm rate in the same run (just before and just
# after the prune) and prints wall time, peak RSS and the achieved GFLOP/s of the gradient
# passes against the sgemm rate. Everything it wrote is deleted at the end (KEEP=1 keeps it).
#
# METHOD=flap instead runs the retraining-free path once per --stat-samples value in STAT_SAMPLES
# (FLAP statistics over N x 128-token windows, adaptive allocation, least-squares compensation of
# o_proj / down_proj) and prints the statistics and compensation times per window and the peak RSS:
# the statistics cost one forward pass per window, the compensation one more plus one Cholesky per
# module.
#
# Environment: WORK (scratch dir, needs ~25 GB free), SHAPE (7b | 1b | H,L,HEADS,KV,MLP,VOCAB),
# METHOD (taylor | flap), STAT_SAMPLES ("8 16", flap only),
# LAYERS (4:30), TAYLOR (element1), MAX_MEMORY (16G), COMPUTE ("fp32 bf16": one prune per
# --compute value, back to back, compared at the end), KEEP (0), WAIT_LOAD (3: wait up to 10
# minutes for the 1-minute load average to drop below this before the timed run; 0 = don't).
set -euo pipefail

BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
WORK=${WORK:-/tmp}/llmprune-scale-$$
SHAPE=${SHAPE:-7b}
LAYERS=${LAYERS:-4:30}
TAYLOR=${TAYLOR:-element1}
MAX_MEMORY=${MAX_MEMORY:-16G}
COMPUTE=${COMPUTE:-fp32 bf16}
KEEP=${KEEP:-0}
WAIT_LOAD=${WAIT_LOAD:-3}
METHOD=${METHOD:-taylor}
STAT_SAMPLES=${STAT_SAMPLES:-8 16}
TOKENIZER="$ROOT/../shared/fixtures/tokenizers/llama2/tokenizer.model"
CALIB="$ROOT/../shared/fixtures/text/kjv.train.txt"

for b in llmprune bench_make_random_checkpoint bench_sgemm; do
  [ -x "$BUILD/$b" ] || { echo "missing $BUILD/$b (build first: cmake --build $BUILD)" >&2; exit 2; }
done
[ -f "$TOKENIZER" ] && [ -f "$CALIB" ] || { echo "missing fixtures under $ROOT/../shared" >&2; exit 2; }

cleanup() { [ "$KEEP" = 1 ] || rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$WORK"
avail=$(df -Pk "$WORK" | awk 'NR==2 {print $4}')
if [ "$SHAPE" = 7b ] && [ "$avail" -lt $((26 * 1024 * 1024)) ]; then
  echo "need ~26 GB free under $WORK (have $((avail / 1024 / 1024)) GB)" >&2
  exit 2
fi

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GB RAM, load $(loadavg)"

echo "== writing the random $SHAPE checkpoint (bf16, tensor by tensor)"
"$BUILD/bench_make_random_checkpoint" "$WORK/model" "$SHAPE" bf16 1
cp "$TOKENIZER" "$WORK/model/tokenizer.model"
read -r H C <<<"$(python3 -c "import json; c=json.load(open('$WORK/model/config.json')); print(c['hidden_size'], c['intermediate_size'])")"

if [ "$WAIT_LOAD" != 0 ]; then
  for _ in $(seq 60); do
    awk -v max="$WAIT_LOAD" '{exit !($1 < max)}' /proc/loadavg && break
    sleep 10
  done
fi

if [ "$METHOD" = flap ]; then
  for N in $STAT_SAMPLES; do
    echo "== llmprune prune --importance flap --compensate lstsq ($N x 128 statistics tokens, layers $LAYERS, ratio 0.25, --max-memory $MAX_MEMORY; load $(loadavg))"
    set +e
    /usr/bin/time -v -o "$WORK/time-flap-$N.txt" "$BUILD/llmprune" prune "$WORK/model" --out "$WORK/pruned-flap-$N" --strategy block \
      --importance flap --allocation adaptive --compensate lstsq --calib "$CALIB" --stat-samples "$N" --stat-seq-len 128 \
      --attn-layers "$LAYERS" --mlp-layers "$LAYERS" --ratio 0.25 --max-memory "$MAX_MEMORY" | tail -4
    rc=${PIPESTATUS[0]}
    set -e
    [ "$rc" = 0 ] || { echo "prune failed (exit $rc)" >&2; cat "$WORK/time-flap-$N.txt" >&2; exit 1; }
    rm -rf "$WORK/pruned-flap-$N/model.safetensors"*  # keep pruning.json only (disk)
  done
  python3 - "$WORK" $STAT_SAMPLES <<'EOF'
import json, sys
work, ns = sys.argv[1], sys.argv[2:]
gib = 1 << 30
for n in ns:
    pj = json.load(open(f"{work}/pruned-flap-{n}/pruning.json"))
    wall = rss = None
    for line in open(f"{work}/time-flap-{n}.txt"):
        if "Elapsed (wall clock)" in line: wall = line.split(": ")[1].strip()
        if "Maximum resident set size" in line: rss = int(line.split(": ")[1]) * 1024
    st, cs = pj["statistics_seconds"], pj.get("compensation_seconds", 0)
    print(f"\nflap + lstsq, {n} x 128 statistics tokens")
    print(f"model            {pj['params_before'] / 1e9:.2f}B -> {pj['params_after'] / 1e9:.2f}B parameters")
    print(f"wall time        {wall} (pruning.json {pj['seconds']:.1f}s: load {pj['load_seconds']:.1f}s, statistics {st:.1f}s = {st / int(n):.1f}s/window, "
          f"compensation {cs:.1f}s = {cs / int(n):.1f}s/window, save {pj['save_seconds']:.1f}s)")
    print(f"peak RSS         {rss / gib:.2f} GiB (/usr/bin/time -v); {pj['peak_rss_bytes'] / gib:.2f} GiB (pruning.json); estimate {pj['memory_estimate']['total_bytes'] / gib:.2f} GiB")
    print("target (RSS <= 16 GB):", "met" if rss <= 16e9 else "NOT met")
EOF
  echo "load average     $(loadavg) at the end"
  exit 0
fi

LOAD_BEFORE=$(loadavg)
echo "== sgemm rate before (load $LOAD_BEFORE)"
SG1=$("$BUILD/bench_sgemm" 640 "$H" "$C" bf16 | tee /dev/stderr | awk '/^sgemm_gflops/ {print $2}')

# One prune per --compute value, back to back on the same checkpoint (compare them in one run).
for COMP in $COMPUTE; do
  echo "== llmprune prune ($TAYLOR, 10 x 64 tokens, layers $LAYERS, ratio 0.25, --max-memory $MAX_MEMORY, --compute $COMP; load $(loadavg))"
  set +e
  /usr/bin/time -v -o "$WORK/time-$COMP.txt" "$BUILD/llmprune" prune "$WORK/model" --out "$WORK/pruned-$COMP" --strategy block \
    --importance taylor --taylor "$TAYLOR" --calib "$CALIB" --calib-samples 10 --calib-seq-len 64 \
    --attn-layers "$LAYERS" --mlp-layers "$LAYERS" --ratio 0.25 --max-memory "$MAX_MEMORY" --compute "$COMP" | tail -4
  rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" = 0 ] || { echo "prune failed (exit $rc)" >&2; cat "$WORK/time-$COMP.txt" >&2; exit 1; }
done
LOAD_DURING=$(loadavg)

echo "== sgemm rate after (load $LOAD_DURING)"
SG2=$("$BUILD/bench_sgemm" 640 "$H" "$C" bf16 | tee /dev/stderr | awk '/^sgemm_gflops/ {print $2}')

python3 - "$WORK" "$SG1" "$SG2" "$LOAD_BEFORE" "$LOAD_DURING" $COMPUTE <<'EOF'
import json, sys
work, sg1, sg2 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
computes = sys.argv[6:]
sg = max(sg1, sg2)
gib = 1 << 30

def time_v(path):
    wall = rss = None
    for line in open(path):
        if "Elapsed (wall clock)" in line:
            wall = line.split(": ")[1].strip()
        if "Maximum resident set size" in line:
            rss = int(line.split(": ")[1])
    parts = [float(x) for x in wall.split(":")]
    secs = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    return wall, secs, rss * 1024

res = {}
for comp in computes:
    pj = json.load(open(f"{work}/pruned-{comp}/pruning.json"))
    wall, secs, rss = time_v(f"{work}/time-{comp}.txt")
    res[comp] = (pj, secs, rss)
    gf = pj["gradient_gflops_per_s"]
    print()
    print(f"--compute {comp}")
    print(f"model            {pj['params_before'] / 1e9:.2f}B -> {pj['params_after'] / 1e9:.2f}B parameters")
    print(f"wall time        {wall} (load {pj['load_seconds']:.1f}s, importance {pj['importance_seconds']:.1f}s, save {pj['save_seconds']:.1f}s; pruning.json: {pj['seconds']:.1f}s)")
    print(f"peak RSS         {rss / gib:.2f} GiB (/usr/bin/time -v); {pj['peak_rss_bytes'] / gib:.2f} GiB (pruning.json); estimate {pj['memory_estimate']['total_bytes'] / gib:.2f} GiB")
    print(f"gradient passes  {pj['gradient_flops'] / 1e12:.2f} TFLOP in {pj['importance_seconds']:.1f}s = {gf:.1f} GFLOP/s = {100 * gf / sg:.0f}% of sgemm")
    ok = rss <= 16e9 and pj["seconds"] < 900 and (comp != "fp32" or gf >= 0.6 * sg)
    print("targets (RSS <= 16 GB, < 15 min" + (", >= 60% of sgemm" if comp == "fp32" else "") + "):", "met" if ok else "NOT met")
print()
print(f"sgemm            {sg1:.1f} GFLOP/s before, {sg2:.1f} after (best {sg:.1f})")
if "fp32" in res and "bf16" in res:
    (p32, s32, r32), (p16, s16, r16) = res["fp32"], res["bf16"]
    print(f"bf16 vs fp32     wall {s32 / s16:.2f}x faster, importance {p32['importance_seconds'] / p16['importance_seconds']:.2f}x faster, "
          f"peak RSS {r16 / gib:.2f} vs {r32 / gib:.2f} GiB (target >= 1.5x faster, RSS not above fp32: "
          + ("met" if s32 / s16 >= 1.5 and r16 <= r32 else "NOT met") + ")")
print(f"load average     {sys.argv[4]} before, {sys.argv[5]} after")
EOF
