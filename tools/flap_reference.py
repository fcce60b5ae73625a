#!/usr/bin/python3
"""Dev-time oracle for FLAP (An et al., AAAI 2024): writes tests/golden/flap_<model>.json.

An independent reimplementation in torch/numpy of what llmprune's --importance flap selects:
activation statistics of the o_proj / down_proj inputs over calibration windows (float64),
the WIFV / IFV / WIFN channel metrics, unit scores (attention: metric^2 summed over a unit's
o_proj columns; a GQA KV group covers all its query heads), and two allocations: uniform (the
lowest units of each layer) and FLAP's adaptive search (per layer/module standardization, one
threshold over all units weighed by their parameter counts, FLAP's mask `z > threshold`).

    /usr/bin/python3 tools/flap_reference.py [--shared DIR] [--out DIR]
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import sentencepiece as spm
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WINDOWS, SEQ = 16, 64  # sequential windows of the validation text
RATIOS = [0.2, 0.5]
METRICS = ["wifv", "ifv", "wifn"]
STATS_SHOWN = 32  # channels of each statistic stored for the C++ statistics check


@torch.no_grad()
def layer_inputs(P, cfg, ids):
    """Per layer: (o_proj input [N, nh*hd], down_proj input [N, F]) as float64 numpy."""
    B, T = ids.shape
    hd, nh, nkv = cfg.head_dim, cfg.n_heads, cfg.n_kv
    cos, sin = ref.rope_cos_sin(cfg, T)
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    x = P["model.embed_tokens.weight"][ids]
    out = []
    for l in range(cfg.n_layers):
        p = f"model.layers.{l}."
        h = ref.rms_norm(x, P[p + "input_layernorm.weight"], cfg.eps)
        q = ref.linear(h, P, p + "self_attn.q_proj").view(B, T, nh, hd).transpose(1, 2)
        k = ref.linear(h, P, p + "self_attn.k_proj").view(B, T, nkv, hd).transpose(1, 2)
        v = ref.linear(h, P, p + "self_attn.v_proj").view(B, T, nkv, hd).transpose(1, 2)
        q = q * cos + ref.rotate_half(q) * sin
        k = k * cos + ref.rotate_half(k) * sin
        k = k.repeat_interleave(cfg.rep, dim=1)
        v = v.repeat_interleave(cfg.rep, dim=1)
        att = ((q @ k.transpose(-1, -2)) / math.sqrt(hd)).masked_fill(mask, float("-inf")).softmax(-1)
        o = (att @ v).transpose(1, 2).reshape(B, T, nh * hd)
        x = x + ref.linear(o, P, p + "self_attn.o_proj")
        h = ref.rms_norm(x, P[p + "post_attention_layernorm.weight"], cfg.eps)
        m = F.silu(ref.linear(h, P, p + "mlp.gate_proj")) * ref.linear(h, P, p + "mlp.up_proj")
        x = x + ref.linear(m, P, p + "mlp.down_proj")
        out.append((o.reshape(B * T, -1).double().numpy(), m.reshape(B * T, -1).double().numpy()))
    return out


def channel_metric(metric, X, W):
    var = X.var(axis=0)  # population variance
    if metric == "ifv":
        return var
    if metric == "wifv":
        return var * (W ** 2).sum(axis=0)
    return np.abs(W).mean(axis=0) * np.sqrt((X ** 2).mean(axis=0))


def units(cfg, gqa_unit):
    """(kind, [channel lists per unit], cost per unit) of one layer's attention."""
    hd, C, rep = cfg.head_dim, cfg.hidden, cfg.rep
    if cfg.n_kv == cfg.n_heads:
        return "head", [list(range(h * hd, (h + 1) * hd)) for h in range(cfg.n_heads)], 4 * C * hd
    if gqa_unit == "kv-group":
        return "kv_group", [list(range(g * rep * hd, (g + 1) * rep * hd)) for g in range(cfg.n_kv)], (2 * rep + 2) * C * hd
    return "head", [list(range(h * hd, (h + 1) * hd)) for h in range(cfg.n_heads)], 2 * C * hd


def standardize(v):
    return (v - v.mean()) / v.std(ddof=1)


def select(cfg, P, inputs, metric, allocation, ratio, gqa_unit):
    kind, chans, head_cost = units(cfg, gqa_unit)
    query_even = kind == "head" and cfg.n_kv != cfg.n_heads
    rows = []  # (kind, layer, index, raw, z, cost)
    for l, (xo, xd) in enumerate(inputs):
        p = f"model.layers.{l}."
        Wo = P[p + "self_attn.o_proj.weight"].double().numpy()
        Wd = P[p + "mlp.down_proj.weight"].double().numpy()
        ao = channel_metric(metric, xo, Wo) ** 2
        ad = channel_metric(metric, xd, Wd)
        zo, zd = standardize(ao), standardize(ad)
        for i, c in enumerate(chans):
            rows.append((kind, l, i, ao[c].sum(), zo[c].mean(), head_cost))
        for j in range(len(ad)):
            rows.append(("mlp", l, j, ad[j], zd[j], 3 * cfg.hidden))
    removed = []
    by_layer = {}
    for r in rows:
        by_layer.setdefault((r[0], r[1]), []).append(r)
    if allocation == "uniform":
        for (k, l), rs in by_layer.items():
            n = len(rs)
            if k == "head" and query_even:
                keep_per = max(1, math.floor(cfg.rep * (1 - ratio) + 1e-9))
                for g in range(cfg.n_kv):
                    grp = sorted([r for r in rs if r[2] // cfg.rep == g], key=lambda r: (r[3], r[2]))
                    removed += [(k, l, r[2]) for r in grp[:cfg.rep - keep_per]]
                continue
            keep = max(1, math.floor(n * (1 - ratio) + 1e-9))
            removed += [(k, l, r[2]) for r in sorted(rs, key=lambda r: (r[3], r[2]))[:n - keep]]
    else:
        z = np.array([r[4] for r in rows])
        cost = np.array([r[5] for r in rows], dtype=np.float64)
        order = np.argsort(-z, kind="stable")
        cum = np.cumsum(cost[order])
        thr = z[order[np.argmin(np.abs(cum - cost.sum() * (1 - ratio)))]]
        for (k, l), rs in by_layer.items():
            gone = [r for r in rs if not r[4] > thr]
            keep = len(rs) - len(gone)
            if k == "head" and query_even:
                raise ValueError("adaptive + query heads under GQA is not covered by this oracle")
            if keep == 0:  # llmprune keeps at least one unit per layer and kind: the best one
                gone = sorted(gone, key=lambda r: r[4])[:-1]
            removed += [(k, l, r[2]) for r in gone]
    return sorted(removed, key=lambda t: (t[0], t[1], t[2]))


def build(model, shared):
    mdir = os.path.join(shared, "fixtures", "models", model)
    cfg = ref.Config(os.path.join(mdir, "config.json"))
    P = ref.load_safetensors(os.path.join(mdir, "model.safetensors"))
    sp = spm.SentencePieceProcessor(model_file=os.path.join(mdir, "tokenizer.model"))
    valid = ref.tokenize_file(sp, os.path.join(shared, "fixtures", "text", "kjv.valid.txt"))
    ids = torch.tensor(valid[:WINDOWS * SEQ], dtype=torch.int64).view(WINDOWS, SEQ)
    inputs = layer_inputs(P, cfg, ids)
    stats = []
    for xo, xd in inputs:
        stats.append({"o_mean": xo.mean(0)[:STATS_SHOWN].tolist(), "o_var": xo.var(0)[:STATS_SHOWN].tolist(),
                      "down_mean": xd.mean(0)[:STATS_SHOWN].tolist(), "down_var": xd.var(0)[:STATS_SHOWN].tolist(),
                      "down_sq": (xd ** 2).mean(0)[:STATS_SHOWN].tolist()})
    cases = []
    unit_choices = ["kv-group"] if cfg.n_kv == cfg.n_heads else ["kv-group", "query"]
    # WIFV (the default) in every setting; IFV and WIFN adaptive at 20% (keeps the file small).
    settings = [(u, "wifv", a, r) for u in unit_choices for a in ["uniform", "adaptive"] for r in RATIOS
                if not (a == "adaptive" and u == "query")]
    settings += [("kv-group", m, "adaptive", 0.2) for m in METRICS if m != "wifv"]
    for gqa_unit, metric, allocation, ratio in settings:
        rem = select(cfg, P, inputs, metric, allocation, ratio, gqa_unit)
        removed = {}  # "kind/layer" -> removed indices
        for k, l, i in rem:
            removed.setdefault(f"{k}/{l}", []).append(int(i))
        cases.append({"metric": metric, "allocation": allocation, "ratio": ratio, "gqa_unit": gqa_unit,
                      "removed": removed})
    return {"model": model, "windows": WINDOWS, "seq": SEQ, "ids": ids.reshape(-1).tolist(), "stats": stats,
            "cases": cases}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "golden"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    for model in ref.MODELS:
        g = build(model, args.shared)
        path = os.path.join(args.out, f"flap_{model}.json")
        with open(path, "w") as f:
            json.dump(g, f, separators=(",", ":"))
            f.write("\n")
        print(path, len(g["cases"]), "cases,", sum(len(v) for c in g["cases"] for v in c["removed"].values()), "removals")


if __name__ == "__main__":
    main()
