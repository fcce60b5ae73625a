#!/usr/bin/python3
"""Dev-time PyTorch oracle for `llmprune eval --tasks`: writes tests/golden/eval_<task>.json.

Run with Debian's Python (torch 1.13 CPU, numpy, sentencepiece; no `transformers`):
    /usr/bin/python3 tools/eval_reference.py                       # the goldens the tests use
    /usr/bin/python3 tools/eval_reference.py --tasks kjv_cloze --limit 300 --no-write

The model forward is tools/reference.py's plain-torch HF LlamaForCausalLM (float32). Scoring is
written from lm-evaluation-harness's rules (docs/eval.md), deliberately the simple way, one full
forward per (context, continuation) request with no shared-context caching, so that the C++
engine's KV-cache path is checked against an independent computation:
  - trailing spaces of the context move to the front of the continuation;
  - context_enc = [BOS] + encode(context) when BOS is on, else encode(context); an empty context
    becomes [BOS] (lm-eval's prefix token) either way;
  - whole = prefix + encode(context + continuation); continuation_enc = whole[len(context_enc):];
  - input = (context_enc + continuation_enc)[-(max_len+1):][:-1]; the log-likelihood is the sum of
    log_softmax over the continuation's tokens;
  - acc: argmax of the log-likelihoods; acc_norm: argmax of loglik / len(choice) where the length
    is in characters (Python len) of the choice string without the " " target delimiter.
"""

import argparse
import json
import os
import sys

import sentencepiece as spm
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reference  # noqa: E402  (plain-torch LLaMA forward, safetensors reader)

ROOT = os.path.dirname(HERE)


# ----------------------------------------------------------------------------- tasks
# Each reader returns a list of docs: {"contexts": [str]*K, "conts": [str]*K, "lens": [int]*K,
# "gold": int}. Only the tasks the goldens use are implemented here.

def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def task_kjv_cloze(d):
    out = []
    for doc in read_jsonl(os.path.join(d, "kjv-cloze", "test.jsonl")):
        ch = doc["choices"]
        # Generic multiple-choice jsonl: each choice appended to the query as is.
        out.append({"contexts": [doc["query"]] * len(ch), "conts": list(ch),
                    "lens": [len(c) for c in ch], "gold": int(doc["gold"])})
    return out


def task_piqa(d):
    docs = read_jsonl(os.path.join(d, "piqa", "valid.jsonl"))
    with open(os.path.join(d, "piqa", "valid-labels.lst")) as f:
        labels = [int(x) for x in f.read().split()]
    out = []
    for doc, lab in zip(docs, labels):
        sols = [doc["sol1"], doc["sol2"]]
        ctx = "Question: " + doc["goal"] + "\nAnswer:"
        out.append({"contexts": [ctx, ctx], "conts": [" " + s for s in sols],
                    "lens": [len(s) for s in sols], "gold": lab})
    return out


def task_winogrande(d):
    # The converted layout (context_options = sentence up to the blank with each option,
    # continuation = the rest); lm-eval scores " " + continuation.strip() after each context.
    out = []
    for doc in read_jsonl(os.path.join(d, "winogrande", "winogrande.jsonl")):
        ctxs = doc["context_options"]
        cont = " " + doc["continuation"].strip()
        out.append({"contexts": list(ctxs), "conts": [cont] * len(ctxs),
                    "lens": [len(c) for c in ctxs], "gold": int(doc["gold"])})
    return out


TASKS = {"kjv_cloze": task_kjv_cloze, "piqa": task_piqa, "winogrande": task_winogrande}
# BOS convention per task: the generic jsonl (kjv_cloze) is scored without BOS (fixtures README);
# the lm-eval benchmarks with BOS, as lm-eval's HF model does with a LLaMA tokenizer.
DEFAULT_BOS = {"kjv_cloze": False, "piqa": True, "winogrande": True}


# ----------------------------------------------------------------------------- scoring

def encode_pair(sp, bos_id, use_bos, context, cont):
    prefix = [bos_id] if use_bos else []
    if context == "":
        return [bos_id], sp.encode(cont, out_type=int)
    n = len(context) - len(context.rstrip())
    if n:
        cont = context[-n:] + cont
        context = context[:-n]
    whole = prefix + sp.encode(context + cont, out_type=int)
    ctx = prefix + sp.encode(context, out_type=int)
    return ctx, whole[len(ctx):]


@torch.no_grad()
def loglik(P, cfg, ctx, cont, max_len):
    assert ctx and cont
    seq = (ctx + cont)[-(max_len + 1):]
    inp = torch.tensor([seq[:-1]], dtype=torch.int64)
    lp = reference.forward(P, cfg, inp)[0].log_softmax(-1)  # [T, V] float32, as lm-eval
    n = len(cont)
    tgt = torch.tensor(cont, dtype=torch.int64)
    return float(lp[-n:].gather(-1, tgt[:, None]).squeeze(-1).double().sum())


def argmax(xs):
    best = 0
    for i, x in enumerate(xs):
        if x > xs[best]:
            best = i
    return best


def score_task(P, cfg, sp, docs, use_bos, max_len):
    items = []
    for i, doc in enumerate(docs):
        lls = []
        for c, t in zip(doc["contexts"], doc["conts"]):
            ce, te = encode_pair(sp, 1, use_bos, c, t)
            lls.append(loglik(P, cfg, ce, te, max_len))
        pred = argmax(lls)
        pred_norm = argmax([ll / n for ll, n in zip(lls, doc["lens"])])
        items.append({"index": i, "gold": doc["gold"], "pred": pred, "pred_norm": pred_norm,
                      "loglik": lls})
    n = len(items)
    acc = sum(it["pred"] == it["gold"] for it in items) / n
    acc_norm = sum(it["pred_norm"] == it["gold"] for it in items) / n
    return items, acc, acc_norm


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    ap.add_argument("--model", default="kjv-llama-mha")
    ap.add_argument("--tasks", default="kjv_cloze,piqa,winogrande")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--bos", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "golden"))
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    mdir = os.path.join(a.shared, "fixtures", "models", a.model)
    cfg = reference.Config(os.path.join(mdir, "config.json"))
    P = reference.load_safetensors(os.path.join(mdir, "model.safetensors"))
    with open(os.path.join(mdir, "config.json")) as f:
        max_len = json.load(f).get("max_position_embeddings", 2048)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(mdir, "tokenizer.model"))
    tdir = os.path.join(a.shared, "fixtures", "tasks")
    for task in a.tasks.split(","):
        docs = TASKS[task](tdir)[:a.limit]
        use_bos = DEFAULT_BOS[task] if a.bos == "auto" else a.bos == "on"
        items, acc, acc_norm = score_task(P, cfg, sp, docs, use_bos, max_len)
        print(f"{task}: n={len(items)} bos={'on' if use_bos else 'off'} acc={acc:.4f} acc_norm={acc_norm:.4f}")
        if a.no_write:
            continue
        out = {"task": task, "model": a.model, "limit": a.limit, "bos": use_bos, "n": len(items),
               "acc": acc, "acc_norm": acc_norm, "items": items}
        path = os.path.join(a.out, f"eval_{task}.json")
        with open(path, "w") as f:
            json.dump(out, f, indent=None, separators=(",", ":"))
            f.write("\n")
        print("wrote", path)


if __name__ == "__main__":
    main()
