#!/usr/bin/env bash
# llmprune against llama.cpp, prompt and decode tokens/s, back to back in one run (docs/performance.md).
#
#   bench/vs_llamacpp.sh [BUILD_DIR]            (default: build)
#
# Writes the random 1B-class checkpoint (hidden 2048, 22 layers, GQA 32/4, MLP 5632, vocab 32000,
# bf16; bench_make_random_checkpoint) with the LLaMA-2 tokenizer, exports it as GGUF in each
# dtype of $DTYPES with `llmprune export --gguf`, and for each GGUF runs, one after the other:
#   - bench_forward --json on that .gguf (llmprune loads GGUF; the same file llama.cpp runs),
#   - bench/llamacpp_bench.mjs: llama.cpp through node-llama-cpp@3.21.1 (prebuilt CPU build),
#   - $LLAMA_BENCH (a llama-bench binary) when given: llama.cpp's own `-p $PROMPT -n $DECODE`.
# All with $THREADS threads. Prints both tools' prompt and decode tokens/s and the ratios, the
# decode weight GB/s against the read bandwidth measured in the same run (bench_membw), and
# the load average around each measurement (the machine is shared: compare ratios, not figures
# from different runs). Everything it wrote is deleted at the end (KEEP=1 keeps it).
#
# Environment: WORK (scratch dir, default /tmp; needs ~9 GB), THREADS (2), PROMPT (128),
# DECODE (32), DTYPES ("f32 bf16"; also f16), COMPUTE ("fp32 bf16": one bench_forward per
# --compute value; it changes the prompt pass only, decode reads the weights as stored), ROUNDS (1: repeat the pairs, alternating),
# NODE_LLAMA_CPP_MODULES (node_modules holding node-llama-cpp; default tools/llamacpp/node_modules,
# filled by `npm ci` there), LLAMA_BENCH (optional path to llama-bench), KEEP (0).
set -euo pipefail

BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
WORK=${WORK:-/tmp}/llmprune-vs-llamacpp-$$
THREADS=${THREADS:-2}
PROMPT=${PROMPT:-128}
DECODE=${DECODE:-32}
DTYPES=${DTYPES:-f32 bf16}
COMPUTE=${COMPUTE:-fp32 bf16}
ROUNDS=${ROUNDS:-1}
KEEP=${KEEP:-0}
LLAMA_BENCH=${LLAMA_BENCH:-}
export NODE_LLAMA_CPP_MODULES=${NODE_LLAMA_CPP_MODULES:-$ROOT/tools/llamacpp/node_modules}
TOKENIZER="$ROOT/../shared/fixtures/tokenizers/llama2/tokenizer.model"

for b in llmprune bench_make_random_checkpoint bench_forward bench_membw; do
  [ -x "$BUILD/$b" ] || { echo "missing $BUILD/$b (build first: cmake --build $BUILD)" >&2; exit 2; }
done
[ -f "$TOKENIZER" ] || { echo "missing $TOKENIZER" >&2; exit 2; }
[ -d "$NODE_LLAMA_CPP_MODULES/node-llama-cpp" ] || {
  echo "node-llama-cpp not found in $NODE_LLAMA_CPP_MODULES (npm ci in tools/llamacpp, or set NODE_LLAMA_CPP_MODULES)" >&2
  exit 2
}
[ -z "$LLAMA_BENCH" ] || [ -x "$LLAMA_BENCH" ] || { echo "LLAMA_BENCH=$LLAMA_BENCH is not executable" >&2; exit 2; }

cleanup() { [ "$KEEP" = 1 ] || rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$WORK"
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
export OMP_NUM_THREADS=$THREADS

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GB RAM, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(loadavg)"
echo "== random 1B-class checkpoint (bf16) and GGUF exports: $DTYPES"
"$BUILD/bench_make_random_checkpoint" "$WORK/model" 1b bf16 1 >/dev/null
cp "$TOKENIZER" "$WORK/model/tokenizer.model"
for dt in $DTYPES; do
  "$BUILD/llmprune" export "$WORK/model" --gguf "$WORK/model-$dt.gguf" --dtype "$dt" >/dev/null
  echo "   model-$dt.gguf $(du -h "$WORK/model-$dt.gguf" | cut -f1)"
done
rm -rf "$WORK/model"  # only the GGUF files are benchmarked (less page cache competing)

echo "== memory bandwidth (bench_membw, 1 and $THREADS threads), load $(loadavg)"
"$BUILD/bench_membw" 1024 | sed 's/^/   /'

RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
for round in $(seq "$ROUNDS"); do
  for dt in $DTYPES; do
    gguf="$WORK/model-$dt.gguf"
    for c in $COMPUTE; do
      tool=llmprune; [ "$c" = fp32 ] || tool="llmprune --compute $c"
      echo "== round $round, $dt: $tool (bench_forward), load $(loadavg)"
      "$BUILD/bench_forward" --json --no-random --compute "$c" --prompt "$PROMPT" --decode "$DECODE" "$gguf" |
        python3 -c "import json,sys; j=json.loads(sys.stdin.read()); j.update(tool='$tool', gguf='$dt', round=$round, load='$(loadavg)'); print(json.dumps(j))" |
        tee -a "$RESULTS"
    done
    echo "== round $round, $dt: llama.cpp (node-llama-cpp), load $(loadavg)"
    node "$ROOT/bench/llamacpp_bench.mjs" "$gguf" --threads "$THREADS" --prompt "$PROMPT" --decode "$DECODE" |
      python3 -c "import json,sys; j=json.loads(sys.stdin.read()); j.update(gguf='$dt', round=$round, load='$(loadavg)'); print(json.dumps(j))" |
      tee -a "$RESULTS"
    if [ -n "$LLAMA_BENCH" ]; then
      echo "== round $round, $dt: llama-bench, load $(loadavg)"
      "$LLAMA_BENCH" -m "$gguf" -p "$PROMPT" -n "$DECODE" -t "$THREADS" -o json |
        python3 -c "
import json,sys
rows=json.load(sys.stdin); out={'tool':'llama-bench','gguf':'$dt','round':$round,'load':'$(loadavg)'}
for r in rows:
    out['prompt_tok_s' if r['n_prompt']>0 else 'decode_tok_s']=r['avg_ts']
print(json.dumps(out))" | tee -a "$RESULTS"
    fi
  done
done

echo "== summary (best of $ROUNDS round(s); threads $THREADS, prompt $PROMPT tokens, decode $DECODE tokens)"
python3 - "$RESULTS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
best = {}
for r in rows:
    k = (r["gguf"], r["tool"])
    b = best.setdefault(k, dict(r))
    for f in ("prompt_tok_s", "decode_tok_s", "decode_weights_gb_s"):
        if f in r: b[f] = max(b.get(f, 0), r[f])
print(f"{'gguf':5} {'tool':28} {'prompt tok/s':>12} {'decode tok/s':>12}   decode vs llama.cpp   weights GB/s (of read bw)")
for dt in dict.fromkeys(r["gguf"] for r in rows):
    ours = [r for (g, tool), r in best.items() if g == dt and tool.startswith("llmprune")]
    for (g, tool), r in best.items():
        if g != dt: continue
        line = f"{dt:5} {tool:28} {r.get('prompt_tok_s', 0):12.1f} {r.get('decode_tok_s', 0):12.2f}"
        if tool.startswith("llmprune"):
            line += f"   {'':19}   {r['decode_weights_gb_s']:.1f} ({100 * r['decode_weights_gb_s'] / r['read_bandwidth_gb_s']:.0f}% of {r['read_bandwidth_gb_s']:.1f})"
        elif ours:
            # decode does not depend on --compute: the best llmprune row; prompt: each --compute row
            line += f"   llmprune/this: decode {max(o['decode_tok_s'] for o in ours) / r['decode_tok_s']:.2f}x, prompt"
            line += ",".join(f" {o['prompt_tok_s'] / r['prompt_tok_s']:.2f}x ({o.get('compute', 'fp32')})" for o in ours)
        print(line)
PY
echo "== load at the end: $(loadavg)"
