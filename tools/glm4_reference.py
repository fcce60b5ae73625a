#!/usr/bin/python3
"""Dev-time PyTorch oracle for the GLM-4-0414 family (transformers' Glm4ForCausalLM, model_type "glm4").

Run with Debian's Python (torch 1.13 CPU, numpy; NOT the pyenv python3 on PATH):
    /usr/bin/python3 tools/glm4_reference.py [--shared DIR]

Writes tests/data/models/glm4-tiny (config.json, model.safetensors in transformers' glm4 tensor
names, bf16, random weights: numpy seed 41; the KJV SentencePiece tokenizer of kjv-llama-mha so the
CLI runs on it) and tests/golden/glm4-tiny.lpgd with logits, loss, every parameter gradient and
the Fisher diagonal, computed in float64 from the stored (bf16) values.

The math is written out from ../shared/guide/CHATGLM.md §3.2-3.3 (no transformers code is copied):
RMSNorm; q/k/v_proj with bias (attention_bias), o_proj without; explicit head_dim (here 8 with
hidden 40 / 4 heads = 10, so the two differ); GQA (4 query heads, 2 KV heads); rotary on the first
head_dim * partial_rotary_factor (0.5) dims in CONSECUTIVE pairs (2i, 2i+1) with base rope_theta;
fused gate_up_proj = [gate | up], down(up * silu(gate)); untied lm_head; and per layer
    h   = x + post_self_attn_layernorm(attn(input_layernorm(x)))
    out = h + post_mlp_layernorm(mlp(post_attention_layernorm(h)))
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden  # noqa: E402
import reference  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "glm4-tiny"
H, FF, L, NH, NKV, HD, V = 40, 48, 2, 4, 2, 8, 4096
ROT = HD // 2  # partial_rotary_factor 0.5
EPS, THETA = 1e-5, 10000.0
# Three sequences of 10 tokens.
IDS = [[1] + [(37 * i + 11) % (V - 3) + 3 for i in range(9)],
       [1] + [(101 * i + 5) % (V - 3) + 3 for i in range(9)],
       [(53 * i + 7) % (V - 3) + 3 for i in range(10)]]


def config():
    return {"architectures": ["Glm4ForCausalLM"], "model_type": "glm4", "hidden_size": H, "intermediate_size": FF,
            "num_hidden_layers": L, "num_attention_heads": NH, "num_key_value_heads": NKV, "head_dim": HD,
            "vocab_size": V, "max_position_embeddings": 64, "rms_norm_eps": EPS, "rope_theta": THETA,
            "partial_rotary_factor": 0.5, "hidden_act": "silu", "attention_bias": True, "attention_dropout": 0.0,
            "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
            "torch_dtype": "bfloat16"}


def weights():
    rng = np.random.default_rng(41)
    t = [("model.embed_tokens.weight", 0.5 * rng.standard_normal((V, H))),
         ("model.norm.weight", 1 + 0.1 * rng.standard_normal(H)),
         ("lm_head.weight", rng.standard_normal((V, H)) / math.sqrt(H))]
    for l in range(L):
        p = f"model.layers.{l}."
        for n, rows in (("q", NH * HD), ("k", NKV * HD), ("v", NKV * HD)):
            t.append((p + f"self_attn.{n}_proj.weight", rng.standard_normal((rows, H)) / math.sqrt(H)))
            t.append((p + f"self_attn.{n}_proj.bias", 0.1 * rng.standard_normal(rows)))
        t.append((p + "self_attn.o_proj.weight", rng.standard_normal((H, NH * HD)) / math.sqrt(NH * HD)))
        t.append((p + "mlp.gate_up_proj.weight", rng.standard_normal((2 * FF, H)) / math.sqrt(H)))
        t.append((p + "mlp.down_proj.weight", rng.standard_normal((H, FF)) / math.sqrt(FF)))
        for n in ("input_layernorm", "post_self_attn_layernorm", "post_attention_layernorm", "post_mlp_layernorm"):
            t.append((p + n + ".weight", 1 + 0.1 * rng.standard_normal(H)))
    return [(n, a.astype(np.float32)) for n, a in t]


def rope_consecutive(x, pos):
    """x [B, heads, T, HD]: dims (2i, 2i+1), i < ROT/2, rotated by pos * theta^(-2i/ROT); the rest pass."""
    inv = 1.0 / (THETA ** (torch.arange(0, ROT, 2, dtype=torch.float64) / ROT))
    ang = torch.outer(pos.double(), inv)  # [T, ROT/2]
    cos, sin = ang.cos(), ang.sin()
    r, rest = x[..., :ROT], x[..., ROT:]
    a, b = r[..., 0::2], r[..., 1::2]
    rot = torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1).flatten(-2)
    return torch.cat((rot, rest), dim=-1)


def logits_of(P, ids):
    """ids (list of lists) -> logits [B, T, V] in float64."""
    ids = torch.tensor(ids)
    B, T = ids.shape
    pos = torch.arange(T)
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    x = P["model.embed_tokens.weight"][ids]
    for l in range(L):
        p = f"model.layers.{l}."
        h = reference.rms_norm(x, P[p + "input_layernorm.weight"], EPS)
        q = reference.linear(h, P, p + "self_attn.q_proj").view(B, T, NH, HD).transpose(1, 2)
        k = reference.linear(h, P, p + "self_attn.k_proj").view(B, T, NKV, HD).transpose(1, 2)
        v = reference.linear(h, P, p + "self_attn.v_proj").view(B, T, NKV, HD).transpose(1, 2)
        q, k = rope_consecutive(q, pos), rope_consecutive(k, pos)
        k, v = k.repeat_interleave(NH // NKV, 1), v.repeat_interleave(NH // NKV, 1)
        att = ((q @ k.transpose(-1, -2)) / math.sqrt(HD)).masked_fill(mask, float("-inf")).softmax(-1)
        a = (att @ v).transpose(1, 2).reshape(B, T, NH * HD) @ P[p + "self_attn.o_proj.weight"].t()
        x = x + reference.rms_norm(a, P[p + "post_self_attn_layernorm.weight"], EPS)
        h = reference.rms_norm(x, P[p + "post_attention_layernorm.weight"], EPS)
        gate, up = (h @ P[p + "mlp.gate_up_proj.weight"].t()).chunk(2, dim=-1)
        m = (up * F.silu(gate)) @ P[p + "mlp.down_proj.weight"].t()
        x = x + reference.rms_norm(m, P[p + "post_mlp_layernorm.weight"], EPS)
    x = reference.rms_norm(x, P["model.norm.weight"], EPS)
    return x @ P["lm_head.weight"].t()


def f32(t):
    """float64 results stored as float32 (half the size; the tests' tolerances are far above)."""
    return t.numpy().astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = os.path.join(ROOT, "tests", "data", "models", NAME)
    os.makedirs(out, exist_ok=True)
    reference.write_safetensors(os.path.join(out, "model.safetensors"), weights(), "BF16")
    with open(os.path.join(out, "config.json"), "w") as f:
        f.write(json.dumps(config(), indent=2) + "\n")
    src = os.path.join(args.shared, "fixtures", "models", "kjv-llama-mha")
    for name in ["tokenizer.model", "tokenizer_config.json", "generation_config.json"]:
        with open(os.path.join(src, name), "rb") as fi, open(os.path.join(out, name), "wb") as fo:
            fo.write(fi.read())
    # The stored bf16 values, widened exactly, then float64.
    P = {n: t.double() for n, t in reference.load_safetensors(os.path.join(out, "model.safetensors")).items()}

    Pg = {n: t.clone().requires_grad_(True) for n, t in P.items()}
    logits = logits_of(Pg, IDS)
    tgt = torch.tensor(IDS)[:, 1:]
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, V), tgt.reshape(-1))
    loss.backward()
    entries = [("fwd/ids", np.array(IDS, dtype=np.int32)), ("fwd/logits", f32(logits.detach())),
               ("fwd/loss", np.array(loss.item()))]
    for n in sorted(Pg):
        entries.append(("grad/" + n, f32(Pg[n].grad)))
    # Fisher diagonal: mean over samples of (gradient of the sample's own mean loss)^2.
    fisher = {n: torch.zeros_like(t) for n, t in P.items()}
    for b in range(len(IDS)):
        Pb = {n: t.clone().requires_grad_(True) for n, t in P.items()}
        lb = logits_of(Pb, [IDS[b]])
        F.cross_entropy(lb[0, :-1], torch.tensor(IDS[b][1:])).backward()
        for n in fisher:
            fisher[n] += Pb[n].grad ** 2 / len(IDS)
    for n in sorted(fisher):
        entries.append(("fisher/" + n, f32(fisher[n])))
    path = os.path.join(ROOT, "tests", "golden", NAME + ".lpgd")
    golden.write(path, entries)
    print(f"{NAME}: model in {out}; loss {loss.item():.6f}, {len(entries)} entries -> {path}")


if __name__ == "__main__":
    main()
