#!/usr/bin/python3
"""Dev-time PyTorch oracle for ChatGLM-6B (v1): the official-output check and random-weight goldens.

Run with Debian's Python (torch 1.13 CPU, numpy; NOT the pyenv python3 on PATH):
    /usr/bin/python3 tools/chatglm_v1_reference.py [--shared DIR] [--verify-only]

1. Reproduces ../shared/fixtures/chatglm/glm_model.data (THUDM's modeling_chatglm.py on a tiny
   random model, written by chatglm.cpp's tests/test_convert.py; layout in its SOURCE.txt) and
   prints the largest difference: the math below is checked against the official code first.
2. Writes tests/data/models/chatglm-v1-tiny (config.json + model.safetensors in the official v1
   tensor names, fp32, random weights: numpy seed 16) and tests/golden/chatglm-v1-tiny.lpgd with
   logits, loss, every parameter gradient and the Fisher diagonal, computed in float64.

The math is written out from ../shared/guide/CHATGLM.md §1 (no THUDM code is copied):
LayerNorm with bias, per-head interleaved query_key_value [per head: q, k, v], GLM 2D rotary
(first half of each head rotated by the position, second half by the block position, each
rotate-half with fp16-rounded inverse frequencies), the prefix-bidirectional mask up to sop,
alpha = sqrt(2*28) on the normalised residual (hard-coded in THUDM's GLMBlock whatever
num_layers is), GELU-tanh MLP, tied lm_head (the config has no tie_word_embeddings key).

Positions (what llmprune does too, docs/DESIGN.md): c = index of sop (bos_token_id), m = index
of the first [gMASK] (else [MASK]). p_t = t for t < c, m after; b_t = 0 before c, t - c + 1
after; query i sees key j when j < c or j <= i. A sequence without sop is scored as a causal
LM: p_t = t, b_t = 0, causal mask (THUDM's code refuses such input).
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden  # noqa: E402
import reference  # noqa: E402  (write_safetensors)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = "chatglm-v1-tiny"
ALPHA = math.sqrt(2 * 28)


def inv_freq(head_dim):
    """The 2D rotary's inverse frequencies: RotaryEmbedding(dim = head_dim / 2), rounded to fp16."""
    dim = head_dim // 2
    f = 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))
    return f.half().float()


def rope_half(x, ang):
    """Rotate-half RoPE on the last axis of x [..., R] with angles ang [..., R/2] (broadcast)."""
    q = x.shape[-1] // 2
    c, s = torch.cos(ang), torch.sin(ang)
    a, b = x[..., :q], x[..., q:]
    return torch.cat([a * c - b * s, b * c + a * s], -1)


def glm_layout(ids, sop, gmask, mask):
    """positions, block positions and prefix length of one sequence (a list of ids)."""
    T = len(ids)
    if sop not in ids:
        return list(range(T)), [0] * T, 0
    c = ids.index(sop)
    m = ids.index(gmask) if gmask in ids else ids.index(mask)
    pos = [t if t < c else m for t in range(T)]
    bpos = [0 if t < c else t - c + 1 for t in range(T)]
    return pos, bpos, c


def layer_norm(x, w, b, eps):
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, eps)


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(0.7978845608028654 * (x + 0.044715 * x ** 3)))


def forward_hidden(P, cfg, ids, dtype=torch.float64):
    """Final-norm hidden states [B, T, H] for ids (list of lists); P: name -> tensor."""
    H, NH, L = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_layers"]
    d = H // NH
    eps = cfg["layernorm_epsilon"]
    B, T = len(ids), len(ids[0])
    layouts = [glm_layout(s, cfg["bos_token_id"], cfg["gmask_token_id"], cfg["mask_token_id"]) for s in ids]
    freqs = inv_freq(d)  # fp32 as the fp32 model holds them
    pos = torch.tensor([l[0] for l in layouts], dtype=torch.float32)
    bpos = torch.tensor([l[1] for l in layouts], dtype=torch.float32)
    # angles in fp32 (t * inv_freq as THUDM's fp32 model computes them), then widened
    ang_p = (pos[..., None] * freqs).to(dtype)[:, :, None, :]  # [B, T, 1, d/4]
    ang_b = (bpos[..., None] * freqs).to(dtype)[:, :, None, :]
    allowed = torch.zeros(B, T, T, dtype=torch.bool)
    for bi, (_, _, c) in enumerate(layouts):
        for i in range(T):
            for j in range(T):
                allowed[bi, i, j] = j < c or j <= i
    x = P["transformer.word_embeddings.weight"][torch.tensor(ids)]
    for l in range(L):
        p = f"transformer.layers.{l}."
        a = layer_norm(x, P[p + "input_layernorm.weight"], P[p + "input_layernorm.bias"], eps)
        y = a @ P[p + "attention.query_key_value.weight"].T + P[p + "attention.query_key_value.bias"]
        y = y.view(B, T, NH, 3 * d)
        q, k, v = y[..., :d], y[..., d:2 * d], y[..., 2 * d:]
        r = d // 2
        q = torch.cat([rope_half(q[..., :r], ang_p), rope_half(q[..., r:], ang_b)], -1)
        k = torch.cat([rope_half(k[..., :r], ang_p), rope_half(k[..., r:], ang_b)], -1)
        s = torch.einsum("bihe,bjhe->bhij", q, k) / math.sqrt(d)
        s = s.masked_fill(~allowed[:, None], float("-inf"))
        prob = torch.softmax(s, -1)
        ctx = torch.einsum("bhij,bjhe->bihe", prob, v).reshape(B, T, NH * d)
        o = ctx @ P[p + "attention.dense.weight"].T + P[p + "attention.dense.bias"]
        h1 = ALPHA * a + o
        m = layer_norm(h1, P[p + "post_attention_layernorm.weight"], P[p + "post_attention_layernorm.bias"], eps)
        f = gelu_tanh(m @ P[p + "mlp.dense_h_to_4h.weight"].T + P[p + "mlp.dense_h_to_4h.bias"])
        f = f @ P[p + "mlp.dense_4h_to_h.weight"].T + P[p + "mlp.dense_4h_to_h.bias"]
        x = ALPHA * m + f
    return layer_norm(x, P["transformer.final_layernorm.weight"], P["transformer.final_layernorm.bias"], eps)


def logits_of(P, cfg, ids):
    return forward_hidden(P, cfg, ids) @ P["transformer.word_embeddings.weight"].T  # tied


def param_shapes(cfg):
    H, F, V, L = cfg["hidden_size"], cfg["inner_hidden_size"], cfg["vocab_size"], cfg["num_layers"]
    out = [("transformer.word_embeddings.weight", (V, H))]
    for l in range(L):
        p = f"transformer.layers.{l}."
        out += [(p + "input_layernorm.weight", (H,)), (p + "input_layernorm.bias", (H,)),
                (p + "attention.query_key_value.weight", (3 * H, H)), (p + "attention.query_key_value.bias", (3 * H,)),
                (p + "attention.dense.weight", (H, H)), (p + "attention.dense.bias", (H,)),
                (p + "post_attention_layernorm.weight", (H,)), (p + "post_attention_layernorm.bias", (H,)),
                (p + "mlp.dense_h_to_4h.weight", (F, H)), (p + "mlp.dense_h_to_4h.bias", (F,)),
                (p + "mlp.dense_4h_to_h.weight", (H, F)), (p + "mlp.dense_4h_to_h.bias", (H,))]
    out += [("transformer.final_layernorm.weight", (H,)), ("transformer.final_layernorm.bias", (H,))]
    return out


def verify_fixture(shared):
    """glm_model.data: the official v1 outputs for ids 0 1 2 (gMASK at 1, sop at 2) + 3 + 4."""
    path = os.path.join(shared, "fixtures", "chatglm", "glm_model.data")
    raw = open(path, "rb").read()
    cfg = {"hidden_size": 32, "inner_hidden_size": 128, "vocab_size": 5, "num_layers": 1, "num_attention_heads": 8,
           "layernorm_epsilon": 1e-5, "bos_token_id": 2, "gmask_token_id": 1, "mask_token_id": 0}
    P, off = {}, 0
    for name, shape in param_shapes(cfg):
        n = int(np.prod(shape))
        P[name] = torch.tensor(np.frombuffer(raw, "<f4", n, off).reshape(shape).astype(np.float64))
        off += 4 * n
    x1 = np.frombuffer(raw, "<i4", 3, off); off += 12
    y1 = np.frombuffer(raw, "<f4", 96, off).reshape(3, 32); off += 384
    x2 = np.frombuffer(raw, "<i4", 1, off); off += 4
    y2 = np.frombuffer(raw, "<f4", 32, off); off += 128
    x3 = np.frombuffer(raw, "<i4", 1, off); off += 4
    y3 = np.frombuffer(raw, "<f4", 32, off); off += 128
    assert off == len(raw), (off, len(raw))
    ids = [list(x1) + list(x2) + list(x3)]
    # A prefill of 0 1 2 and two cached decode steps equal one pass over 0..4: the decode steps'
    # positions ([1],[2]) and ([1],[3]) are this layout's, and a later token never changes an
    # earlier one (keys after sop are causal).
    got = forward_hidden(P, cfg, [[int(i) for i in ids[0]]])[0].numpy()
    want = np.concatenate([y1, y2[None], y3[None]])
    err = float(np.abs(got - want).max())
    print(f"glm_model.data: max |reference - official| = {err:.3g} over {want.size} values")
    if err > 1e-5:
        raise SystemExit("the reference does not reproduce the official outputs")
    return err


def tiny_config():
    # The v1 config keys (CHATGLM.md §1.1) on a 144-token vocabulary (the goldens are on ids):
    # ice_text.model's 143 pieces (tools/chatglm_v1_tokenizer.py) = 56 text pieces, the specials
    # in v1's order [MASK] [gMASK] [sMASK] <unused_0> <sop> <eop> at 56..61, the whitespace
    # escapes <n> <|tab|> <|blank_2..80|> at 62..142.
    # head_dim 16: each half rotates with 4 frequencies, two of them changed by the fp16 rounding.
    return {"architectures": ["ChatGLMModel"], "model_type": "chatglm", "hidden_size": 64,
            "inner_hidden_size": 96, "num_layers": 2, "num_attention_heads": 4, "layernorm_epsilon": 1e-05,
            "max_sequence_length": 256, "position_encoding_2d": True, "vocab_size": 144,
            "mask_token_id": 56, "gmask_token_id": 57, "bos_token_id": 60, "eos_token_id": 61,
            "pad_token_id": 3, "torch_dtype": "float32"}


def make_model(shared):
    cfg = tiny_config()
    out = os.path.join(ROOT, "tests", "data", "models", MODEL)
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(16)
    t = []
    for name, shape in param_shapes(cfg):
        if name.endswith("layernorm.weight"):
            a = 1 + 0.1 * rng.standard_normal(shape)
        elif name.endswith(".bias"):
            a = 0.1 * rng.standard_normal(shape)
        elif len(shape) == 2 and "word_embeddings" not in name:
            a = rng.standard_normal(shape) / math.sqrt(shape[1])
        else:
            a = 0.1 * rng.standard_normal(shape)  # logits of O(1): a loss near log(144)
        t.append((name, a.astype(np.float32)))
    # THUDM's checkpoints store lm_head.weight too; tied, the loader reads the embedding.
    t.append(("lm_head.weight", t[0][1].copy()))
    reference.write_safetensors(os.path.join(out, "model.safetensors"), t, "F32")
    with open(os.path.join(out, "config.json"), "w") as f:
        f.write(json.dumps(cfg, indent=2) + "\n")
    print(f"{MODEL}: written to {out}")
    return cfg, {n: torch.tensor(a.astype(np.float64)) for n, a in t if n != "lm_head.weight"}


def f32(t):
    """float64 results stored as float32 (half the size; the tests' tolerances are far above)."""
    return t.numpy().astype(np.float32)


def goldens(cfg, P):
    V = cfg["vocab_size"]
    sop, gm, mk, eop = cfg["bos_token_id"], cfg["gmask_token_id"], cfg["mask_token_id"], cfg["eos_token_id"]
    rng = np.random.default_rng(17)
    words = lambda n: [int(i) for i in rng.integers(4, 56, n)]  # noqa: E731
    T = 12
    # sequence 0: prompt + [gMASK] sop + answer + eop (LLM-Pruner's layout, CHATGLM.md §1.5);
    # sequence 1: a [MASK] inside the prompt, sop later; sequence 2: plain text (causal LM mode).
    ids = [words(4) + [gm, sop] + words(5) + [eop],
           words(2) + [mk] + words(3) + [sop] + words(5),
           words(T)]
    assert all(len(s) == T for s in ids)
    Pg = {n: t.clone().requires_grad_(True) for n, t in P.items()}
    logits = logits_of(Pg, cfg, ids)  # [B, T, V]
    tgt = torch.tensor(ids)[:, 1:]
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), tgt.reshape(-1), reduction="none").view(len(ids), -1)
    loss = nll.mean()
    loss.backward()
    entries = [("fwd/ids", np.array(ids, dtype=np.int32)), ("fwd/logits", f32(logits.detach())),
               ("fwd/loss", np.array(loss.item()))]
    for n in sorted(Pg):
        entries.append(("grad/" + n, f32(Pg[n].grad)))
    # Fisher diagonal: mean over samples of (gradient of the sample's own mean loss)^2.
    fisher = {n: torch.zeros_like(t) for n, t in P.items()}
    for b in range(len(ids)):
        Pb = {n: t.clone().requires_grad_(True) for n, t in P.items()}
        lb = logits_of(Pb, cfg, [ids[b]])
        nb = torch.nn.functional.cross_entropy(lb[0, :-1], torch.tensor(ids[b][1:]))
        nb.backward()
        for n in fisher:
            fisher[n] += Pb[n].grad ** 2 / len(ids)
    for n in sorted(fisher):
        entries.append(("fisher/" + n, f32(fisher[n])))
    path = os.path.join(ROOT, "tests", "golden", MODEL + ".lpgd")
    golden.write(path, entries)
    print(f"{MODEL}: loss {loss.item():.6f}, {len(entries)} entries -> {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    ap.add_argument("--verify-only", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    verify_fixture(args.shared)
    if args.verify_only:
        return
    cfg, P = make_model(args.shared)
    goldens(cfg, P)


if __name__ == "__main__":
    main()
