#!/usr/bin/env bash
# The LLM-Pruner paper's Table-1 grid on one model: importance criteria x {no tune, LoRA} at one
# pruning ratio, measured in ONE `llmprune eval --compare` run -> one results table.
#
# For each criterion: `llmprune prune` (block strategy by default; calibration 10 x 64 tokens,
# seed 0), then `llmprune tune` (LoRA r 8, alpha 16, dropout 0.05 on q,k,v,o,gate,up,down; the
# adapters are merged into the saved model). Then one `llmprune eval` over the original model,
# every pruned and every tuned model: perplexity columns (--ppl), zero-shot task columns
# (--tasks/--task-dir), their average; Markdown on stdout -> OUT/table1.md, JSON -> OUT/table1.json.
#
# Usage: scripts/experiment_table1.sh --model DIR --calib FILE --tune-data FILE --ppl NAME=FILE[,..]
#            --out DIR [--task-dir DIR] [options]          (run from the repository root)
# Every option also has an environment variable (in brackets); a flag wins over the variable.
#   --model DIR           [MODEL]        model to prune (HF directory or .gguf)
#   --calib FILE          [CALIB]        calibration text
#   --tune-data FILE      [TUNE_DATA]    LoRA training data (plain text or Alpaca JSON/JSONL)
#   --val-file FILE       [VAL_FILE]     validation data for tune (default: none)
#   --ppl LIST            [PPL]          perplexity texts, NAME=FILE comma-separated
#   --task-dir DIR        [TASK_DIR]     zero-shot task folder (docs/eval.md); none: PPL only
#   --tasks LIST          [TASKS=auto]   zero-shot tasks; auto = every task with files in --task-dir
#   --limit N             [LIMIT=0]      first N items of each task (0 = all)
#   --out DIR             [OUT]          output folder
#   --criteria LIST       [CRITERIA=element1,element2,vector,random,l1,l2]
#                                        element1 element2 vector fisher (Taylor), random, l1, l2
#   --strategy S          [STRATEGY=block]
#   --ratio R             [RATIO=0.2]    prune --ratio
#   --layers A:B          [LAYERS=]      --attn-layers and --mlp-layers (default: all layers)
#   --calib-samples N     [CALIB_SAMPLES=10]   --calib-seq-len N [CALIB_SEQ_LEN=64]
#   --seed N              [SEED=0]       prune seed (calibration windows, random criterion)
#   --steps N             [STEPS=]       tune --max-steps (default: --epochs)
#   --epochs N            [EPOCHS=2]     used when --steps is not given
#   --lr X                [LR=1e-4]      --batch N [BATCH=64]   --micro-batch N [MICRO_BATCH=4]
#   --cutoff N            [CUTOFF=256]   --warmup N [WARMUP=100]   --tune-seed N [TUNE_SEED=42]
#   --lora-r N [LORA_R=8]  --lora-alpha X [LORA_ALPHA=16]  --lora-dropout X [LORA_DROPOUT=0.05]
#   --lora-targets LIST   [LORA_TARGETS=q,k,v,o,gate,up,down]
#   --seq-len N           [SEQ_LEN=128]  perplexity window;  --max-windows N [MAX_WINDOWS=0]
#   --no-tune             [NO_TUNE=0]    prune and evaluate only (the no-tune half)
#   --jobs N              [JOBS=1]       criteria pruned+tuned concurrently (set OMP_NUM_THREADS)
#   --bin PATH            [BIN=build/llmprune]
#   --force               [FORCE=0]      redo every step (else steps whose output exists are reused)
#   --dry-run                            print the commands, run nothing
#
# Idempotent: a step whose output exists and whose recorded command (OUT/stamps/) is the same is
# skipped; one whose output exists from a different command is refused (use --force). --force
# redoes everything, overwriting. Every command is printed ("+ ...") and appended to
# OUT/commands.sh; each step's stderr is in OUT/logs/. Any failure stops the script (exit != 0)
# with the end of the failing step's log.
set -euo pipefail

die() { echo "experiment_table1: error: $*" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

BIN=${BIN:-build/llmprune}
MODEL=${MODEL:-}; CALIB=${CALIB:-}; TUNE_DATA=${TUNE_DATA:-}; VAL_FILE=${VAL_FILE:-}
PPL=${PPL:-}; TASK_DIR=${TASK_DIR:-}; TASKS=${TASKS:-auto}; LIMIT=${LIMIT:-0}; OUT=${OUT:-}
CRITERIA=${CRITERIA:-element1,element2,vector,random,l1,l2}
STRATEGY=${STRATEGY:-block}; RATIO=${RATIO:-0.2}; LAYERS=${LAYERS:-}
CALIB_SAMPLES=${CALIB_SAMPLES:-10}; CALIB_SEQ_LEN=${CALIB_SEQ_LEN:-64}; SEED=${SEED:-0}
STEPS=${STEPS:-}; EPOCHS=${EPOCHS:-2}; LR=${LR:-1e-4}; BATCH=${BATCH:-64}; MICRO_BATCH=${MICRO_BATCH:-4}
CUTOFF=${CUTOFF:-256}; WARMUP=${WARMUP:-100}; TUNE_SEED=${TUNE_SEED:-42}
LORA_R=${LORA_R:-8}; LORA_ALPHA=${LORA_ALPHA:-16}; LORA_DROPOUT=${LORA_DROPOUT:-0.05}
LORA_TARGETS=${LORA_TARGETS:-q,k,v,o,gate,up,down}
SEQ_LEN=${SEQ_LEN:-128}; MAX_WINDOWS=${MAX_WINDOWS:-0}
NO_TUNE=${NO_TUNE:-0}; JOBS=${JOBS:-1}; FORCE=${FORCE:-0}; DRY_RUN=0

while (($#)); do
  opt=$1
  case $opt in
    -h|--help) usage; exit 0 ;;
    --force) FORCE=1; shift; continue ;;
    --no-tune) NO_TUNE=1; shift; continue ;;
    --dry-run) DRY_RUN=1; shift; continue ;;
  esac
  (($# >= 2)) || die "$opt needs a value (see --help)"
  v=$2; shift 2
  case $opt in
    --model) MODEL=$v ;; --calib) CALIB=$v ;; --tune-data) TUNE_DATA=$v ;; --val-file) VAL_FILE=$v ;;
    --ppl) PPL=$v ;; --task-dir) TASK_DIR=$v ;; --tasks) TASKS=$v ;; --limit) LIMIT=$v ;; --out) OUT=$v ;;
    --criteria) CRITERIA=$v ;; --strategy) STRATEGY=$v ;; --ratio) RATIO=$v ;; --layers) LAYERS=$v ;;
    --calib-samples) CALIB_SAMPLES=$v ;; --calib-seq-len) CALIB_SEQ_LEN=$v ;; --seed) SEED=$v ;;
    --steps) STEPS=$v ;; --epochs) EPOCHS=$v ;; --lr) LR=$v ;; --batch) BATCH=$v ;;
    --micro-batch) MICRO_BATCH=$v ;; --cutoff) CUTOFF=$v ;; --warmup) WARMUP=$v ;; --tune-seed) TUNE_SEED=$v ;;
    --lora-r) LORA_R=$v ;; --lora-alpha) LORA_ALPHA=$v ;; --lora-dropout) LORA_DROPOUT=$v ;;
    --lora-targets) LORA_TARGETS=$v ;; --seq-len) SEQ_LEN=$v ;; --max-windows) MAX_WINDOWS=$v ;;
    --jobs) JOBS=$v ;; --bin) BIN=$v ;;
    *) die "unknown option $opt (see --help)" ;;
  esac
done

# ---- checks: everything that can be wrong is refused before the first step runs
[[ -n $MODEL && -n $CALIB && -n $PPL && -n $OUT ]] || die "--model, --calib, --ppl and --out are required (see --help)"
[[ $NO_TUNE == 1 || -n $TUNE_DATA ]] || die "--tune-data is required (or --no-tune)"
[[ -x $BIN ]] || die "llmprune binary $BIN not found or not executable (build it, or --bin PATH)"
[[ -e $MODEL ]] || die "model $MODEL not found"
for f in "$CALIB" ${TUNE_DATA:+"$TUNE_DATA"} ${VAL_FILE:+"$VAL_FILE"}; do [[ -f $f ]] || die "file $f not found"; done
IFS=, read -r -a PPL_SPECS <<< "$PPL"
for spec in "${PPL_SPECS[@]}"; do f=${spec#*=}; [[ -f $f ]] || die "perplexity text $f (from --ppl $spec) not found"; done
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || die "--jobs must be a positive integer"
[[ $LIMIT =~ ^[0-9]+$ ]] || die "--limit must be a non-negative integer"

criterion_args() {  # the prune options that select criterion $1
  case $1 in
    element1|element2|vector|fisher) echo "--importance taylor --taylor $1" ;;
    random|l1|l2) echo "--importance $1" ;;
    *) return 1 ;;
  esac
}
IFS=, read -r -a CRITS <<< "$CRITERIA"
((${#CRITS[@]})) || die "--criteria is empty"
for c in "${CRITS[@]}"; do criterion_args "$c" > /dev/null || die "unknown criterion '$c' (element1 element2 vector fisher random l1 l2)"; done
[[ $(printf '%s\n' "${CRITS[@]}" | sort | uniq -d) == "" ]] || die "--criteria lists a criterion twice"

# Tasks: `auto` = every task whose files are in TASK_DIR (the layout of docs/eval.md), paper order.
task_present() {
  local d=$TASK_DIR
  case $1 in
    boolq) [[ -f $d/boolq/val.jsonl || -f $d/boolq/dev.jsonl ]] ;;
    piqa) [[ -f $d/piqa/valid.jsonl ]] ;;
    hellaswag) [[ -f $d/hellaswag/hellaswag_val.jsonl ]] ;;
    winogrande) [[ -f $d/winogrande/dev.jsonl || -f $d/winogrande/winogrande.jsonl ]] ;;
    arc_easy) [[ -f $d/arc/ARC-Easy-Test.jsonl ]] ;;
    arc_challenge) [[ -f $d/arc/ARC-Challenge-Test.jsonl ]] ;;
    openbookqa) [[ -f $d/openbookqa/test.jsonl || -f $d/openbookqa/test.tsv ]] ;;
    kjv_cloze) [[ -f $d/kjv-cloze/test.jsonl ]] ;;
    *) return 1 ;;
  esac
}
if [[ -z $TASK_DIR ]]; then
  [[ $TASKS == auto || -z $TASKS ]] || die "--tasks needs --task-dir"
  TASKS=
elif [[ $TASKS == auto ]]; then
  [[ -d $TASK_DIR ]] || die "task directory $TASK_DIR not found"
  found=()
  for t in boolq piqa hellaswag winogrande arc_easy arc_challenge openbookqa kjv_cloze; do
    if task_present "$t"; then found+=("$t"); fi
  done
  ((${#found[@]})) || die "no task files found in $TASK_DIR (docs/eval.md, task directory layout)"
  TASKS=$(IFS=,; echo "${found[*]}")
fi

PRUNE_COMMON=(--calib "$CALIB" --calib-samples "$CALIB_SAMPLES" --calib-seq-len "$CALIB_SEQ_LEN" --seed "$SEED")
PRUNE_SHAPE=(--strategy "$STRATEGY" --ratio "$RATIO")
[[ -n $LAYERS ]] && PRUNE_SHAPE+=(--attn-layers "$LAYERS" --mlp-layers "$LAYERS")
TUNE_OPTS=(--data "$TUNE_DATA")
[[ -n $VAL_FILE ]] && TUNE_OPTS+=(--val-file "$VAL_FILE")
if [[ -n $STEPS ]]; then TUNE_OPTS+=(--max-steps "$STEPS"); else TUNE_OPTS+=(--epochs "$EPOCHS"); fi
TUNE_OPTS+=(--lr "$LR" --batch "$BATCH" --micro-batch "$MICRO_BATCH" --cutoff-len "$CUTOFF" --warmup-steps "$WARMUP"
  --lora-r "$LORA_R" --lora-alpha "$LORA_ALPHA" --lora-dropout "$LORA_DROPOUT" --lora-targets "$LORA_TARGETS"
  --seed "$TUNE_SEED" --eval-every 0 --save-every 0 --log-every 10)

mkdir -p "$OUT/models" "$OUT/logs" "$OUT/stamps"
if [[ ! -f $OUT/commands.sh || $FORCE == 1 ]]; then
  printf '#!/usr/bin/env bash\n# commands run by scripts/experiment_table1.sh, from %q (appended per run)\n' "$PWD" > "$OUT/commands.sh"
fi

# Shell-quote for printing: words of safe characters as they are (commas included), else %q.
shq() {
  local w out=()
  for w in "$@"; do
    if [[ $w =~ ^[A-Za-z0-9_./=:,+@%^-]+$ ]]; then out+=("$w"); else out+=("$(printf '%q' "$w")"); fi
  done
  echo "${out[*]}"
}

# step NAME TARGET STDOUT_FILE FORCEABLE UPSTREAM_RAN CMD...: run CMD (stdout -> STDOUT_FILE, stderr
# -> OUT/logs/NAME.log) unless TARGET exists from the same command. FORCEABLE=1 appends --force
# when TARGET is to be replaced. Sets STEP_RAN=1 when it ran.
STEP_RAN=0
step() {
  local name=$1 target=$2 stdout=$3 forceable=$4 upstream=$5; shift 5
  local stamp=$OUT/stamps/$name.cmd log=$OUT/logs/$name.log cmdline
  cmdline=$(shq "$@")
  STEP_RAN=0
  local replace=0
  if [[ -e $target ]]; then
    if [[ $FORCE == 0 && $upstream == 0 ]]; then
      if [[ -f $stamp && $(< "$stamp") == "$cmdline" ]]; then
        echo "= $name: up to date ($target)"
        return 0
      fi
      die "$target exists, made by another command than this one (see $stamp); rerun with --force to replace it"
    fi
    replace=1
  fi
  local cmd=("$@")
  ((replace && forceable)) && cmd+=(--force)
  local shown
  shown="$(shq "${cmd[@]}") > $(shq "$stdout") 2> $(shq "$log")"
  echo "+ $shown"
  echo "$shown" >> "$OUT/commands.sh"
  ((DRY_RUN)) && return 0
  local t0=$SECONDS rc=0
  rm -f "$stamp"
  "${cmd[@]}" > "$stdout.tmp" 2> "$log" || rc=$?
  if ((rc != 0)); then
    {
      echo "experiment_table1: FAILED (exit $rc): $name"
      echo "  command: $shown"
      echo "  last lines of $log:"
      tail -n 20 "$log" | sed 's/^/    /'
    } >&2
    exit 1
  fi
  mv -f "$stdout.tmp" "$stdout"
  printf '%s\n' "$cmdline" > "$stamp"
  echo "  $name: done in $((SECONDS - t0)) s"
  STEP_RAN=1
}

# One criterion: prune, then tune the pruned model.
pipeline() {
  local c=$1 pruned=$OUT/models/$1 tuned=$OUT/models/$1-lora
  local crit_args
  read -r -a crit_args <<< "$(criterion_args "$c")"
  step "$c.prune" "$pruned" "$OUT/logs/$c.prune.json" 1 0 \
    "$BIN" prune "$MODEL" --out "$pruned" "${PRUNE_COMMON[@]}" --json "${crit_args[@]}" "${PRUNE_SHAPE[@]}"
  ((NO_TUNE)) && return 0
  step "$c.tune" "$tuned" "$OUT/logs/$c.tune.json" 1 "$STEP_RAN" \
    "$BIN" tune "$pruned" --out "$tuned" "${TUNE_OPTS[@]}" --json
}

T0=$SECONDS
echo "experiment_table1: $MODEL -> $OUT; criteria ${CRITS[*]}; $STRATEGY ratio $RATIO, layers ${LAYERS:-all};" \
  "tune: $([[ $NO_TUNE == 1 ]] && echo none || echo "${STEPS:-$EPOCHS epochs}${STEPS:+ steps}, lr $LR, batch $BATCH/$MICRO_BATCH, cutoff $CUTOFF");" \
  "tasks: ${TASKS:-none}${TASKS:+, limit $LIMIT}; OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}"

# Models: criteria one after another, or JOBS at a time (each pipeline in a subshell; the first
# failure stops the rest).
ANY_RAN=0
if ((JOBS == 1)); then
  for c in "${CRITS[@]}"; do
    pipeline "$c"
  done
else
  declare -A PID_CRIT=()
  running=0 failed=
  kill_all() { for p in "${!PID_CRIT[@]}"; do kill "$p" 2> /dev/null || true; done; }
  for c in "${CRITS[@]}"; do
    if ((running >= JOBS)); then
      if ! wait -n -p done_pid; then failed=${PID_CRIT[$done_pid]}; break; fi
      unset "PID_CRIT[$done_pid]"; running=$((running - 1))
    fi
    pipeline "$c" &
    PID_CRIT[$!]=$c; running=$((running + 1))
  done
  while [[ -z $failed ]] && ((running > 0)); do
    if ! wait -n -p done_pid; then failed=${PID_CRIT[$done_pid]}; break; fi
    unset "PID_CRIT[$done_pid]"; running=$((running - 1))
  done
  if [[ -n $failed ]]; then
    unset "PID_CRIT[$done_pid]"; kill_all; wait || true
    echo "experiment_table1: FAILED: criterion $failed (see above and $OUT/logs/)" >&2
    exit 1
  fi
fi
# A model step that ran (this time, or in a background job) makes the table stale: compare each
# model's stamp with the table's.
TABLE=$OUT/table1.md
if [[ -f $TABLE ]]; then
  for s in "$OUT"/stamps/*.prune.cmd "$OUT"/stamps/*.tune.cmd; do
    [[ -f $s && $s -nt $TABLE ]] && ANY_RAN=1
  done
fi

# The table: one eval run over original + pruned + tuned models.
EVAL=("$BIN" eval "original=$MODEL" --ppl "$PPL" --seq-len "$SEQ_LEN")
((MAX_WINDOWS > 0)) && EVAL+=(--max-windows "$MAX_WINDOWS")
[[ -n $TASKS ]] && EVAL+=(--tasks "$TASKS" --task-dir "$TASK_DIR" --limit "$LIMIT")
EVAL+=(--markdown --save-json "$OUT/table1.json" --compare)
for c in "${CRITS[@]}"; do EVAL+=("$c=$OUT/models/$c"); done
if ((!NO_TUNE)); then for c in "${CRITS[@]}"; do EVAL+=("$c+LoRA=$OUT/models/$c-lora"); done; fi
step eval "$TABLE" "$TABLE" 0 "$ANY_RAN" "${EVAL[@]}"
((DRY_RUN)) && exit 0

# Side table: what each step did (from pruning / tune JSON), for the write-up.
SUMMARY=$OUT/summary.md
python3 - "$OUT" "$NO_TUNE" "${CRITS[@]}" > "$SUMMARY.tmp" << 'EOF'
import json, sys, os
out, no_tune, crits = sys.argv[1], sys.argv[2] == "1", sys.argv[3:]
table = json.load(open(os.path.join(out, "table1.json")))["models"]
params = {m["label"]: m["params"] for m in table}
p0 = params["original"]
print("| criterion | params | removed | tune val PPL before → after | tune tok/s | prune s | tune s |")
print("|---|---:|---:|---:|---:|---:|---:|")
for c in crits:
    pr = json.load(open(os.path.join(out, "logs", c + ".prune.json")))
    n = params[c]
    row = [c, f"{n:,}", f"{100 * (1 - n / p0):.1f}%"]
    if no_tune:
        row += ["–", "–"]
        tsec = "–"
    else:
        t = json.load(open(os.path.join(out, "logs", c + ".tune.json")))
        if "initial_val_ppl" in t:
            row.append(f"{t['initial_val_ppl']:.2f} → {t['final_val_ppl']:.2f}")
        else:
            row.append("–")
        row.append(f"{t['train_tokens_per_s']:.0f}")
        tsec = f"{t['seconds']:.0f}"
    ps = pr.get("seconds", pr.get("timings", {}).get("total_s"))
    row += [f"{ps:.1f}" if isinstance(ps, (int, float)) else "–", tsec]
    print("| " + " | ".join(row) + " |")
EOF
mv -f "$SUMMARY.tmp" "$SUMMARY"

echo
cat "$TABLE"
echo
cat "$SUMMARY"
echo
echo "experiment_table1: done in $((SECONDS - T0)) s: $TABLE, $OUT/table1.json, $SUMMARY, $OUT/commands.sh"
