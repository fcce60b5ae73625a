#!/usr/bin/python3
"""Dev-time PyTorch oracle for `llmprune eval --tasks`: writes tests/golden/eval_<task>.json.

Run with Debian's Python (torch 1.13 CPU, numpy, sentencepiece; no `transformers`):
    /usr/bin/python3 tools/eval_reference.py                       # eval_<task>.json: no BOS
    /usr/bin/python3 tools/eval_reference.py --tasks piqa,winogrande --bos on   # eval_<task>_bos.json
    /usr/bin/python3 tools/eval_reference.py --tasks kjv_cloze --limit 300 --no-write

The model forward is tools/reference.py's plain-torch HF LlamaForCausalLM (float32). Scoring is
written from lm-evaluation-harness's rules (docs/eval.md), deliberately the simple way, one full
forward per (context, continuation) request with no shared-context caching, so that the C++
engine's KV-cache path is checked against an independent computation:
  - trailing spaces of the context move to the front of the continuation;
  - context_enc = encode(context) (lm-eval 0.4's HF causal model with its default
    add_bos_token=False: tokenizer.encode(..., add_special_tokens=False)); with --bos on
    (add_bos_token=True) [BOS] + encode(context); an empty context becomes [BOS] (lm-eval's prefix
    token) either way;
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


def choice_item(ctx, choices, gold):
    return {"contexts": [ctx] * len(choices), "conts": [" " + c for c in choices],
            "lens": [len(c) for c in choices], "gold": gold}


def task_arc_easy(d):
    # lm-eval arc_easy: "Question: {{question}}\nAnswer:", choices.text, label.index(answerKey).
    out = []
    for doc in read_jsonl(os.path.join(d, "arc", "ARC-Easy-Test.jsonl")):
        q = doc["question"]
        labels = [c["label"] for c in q["choices"]]
        out.append(choice_item("Question: " + q["stem"] + "\nAnswer:", [c["text"] for c in q["choices"]],
                               labels.index(doc["answerKey"])))
    return out


def task_boolq(d):
    # lm-eval boolq (SuperGLUE val): "{{passage}}\nQuestion: {{question}}?\nAnswer:", ["no", "yes"].
    out = []
    for doc in read_jsonl(os.path.join(d, "boolq", "val.jsonl")):
        lab = doc["label"]
        if isinstance(lab, str):
            lab = lab.lower() == "true"
        out.append(choice_item(doc["passage"] + "\nQuestion: " + doc["question"] + "?\nAnswer:", ["no", "yes"],
                               int(bool(lab))))
    return out


def task_openbookqa(d):
    # lm-eval openbookqa: question_stem, choices.text, choices.label.index(answerKey.lstrip()); the
    # official test.tsv holds the choices as "(A) x (B) y (C) z (D) w".
    import csv
    import re
    out = []
    with open(os.path.join(d, "openbookqa", "test.tsv"), encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            parts = re.split(r"\(([A-Z])\) ?", row["Choices"])[1:]
            labels, texts = parts[0::2], [t.strip() for t in parts[1::2]]
            out.append(choice_item(row["Question Stem"], texts, labels.index(row["Answer Key"].lstrip())))
    return out


TASKS = {"kjv_cloze": task_kjv_cloze, "piqa": task_piqa, "winogrande": task_winogrande,
         "arc_easy": task_arc_easy, "boolq": task_boolq, "openbookqa": task_openbookqa}
# Default limits: small, to keep the C++ test fast; kjv_cloze's 300 reproduce the fixtures README.
DEFAULT_LIMIT = {"kjv_cloze": 300, "piqa": 200, "winogrande": 100, "arc_easy": 100, "boolq": 40,
                 "openbookqa": 100}


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
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--limit", type=int, default=0, help="items per task (0: DEFAULT_LIMIT)")
    ap.add_argument("--bos", choices=["off", "on"], default="off",
                    help="off: lm-eval 0.4's default (add_bos_token=False); on: add_bos_token=True, "
                         "written as eval_<task>_bos.json")
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
        limit = a.limit or DEFAULT_LIMIT[task]
        docs = TASKS[task](tdir)[:limit]
        use_bos = a.bos == "on"
        items, acc, acc_norm = score_task(P, cfg, sp, docs, use_bos, max_len)
        print(f"{task}: n={len(items)} bos={'on' if use_bos else 'off'} acc={acc:.4f} acc_norm={acc_norm:.4f}")
        if a.no_write:
            continue
        out = {"task": task, "model": a.model, "limit": limit, "bos": use_bos, "n": len(items),
               "acc": acc, "acc_norm": acc_norm, "items": items}
        path = os.path.join(a.out, f"eval_{task}{'_bos' if use_bos else ''}.json")
        with open(path, "w") as f:
            json.dump(out, f, indent=None, separators=(",", ":"))
            f.write("\n")
        print("wrote", path)


if __name__ == "__main__":
    main()
