#!/usr/bin/python3
"""Dev-time PyTorch oracle for ChatGLM2/ChatGLM3/GLM-4 in THUDM's "chatglm" format.

Written from ../shared/guide/CHATGLM.md §2 (not from THUDM's code). Run with Debian's Python
(torch 1.13 CPU, numpy, sentencepiece):
    /usr/bin/python3 tools/chatglm_reference.py --check-official
        reproduce THUDM's official outputs (../shared/fixtures/chatglm/glm{2,3,4}_model.data)
    /usr/bin/python3 tools/chatglm_reference.py --golden [--model DIR] [--out FILE]
        write tests/golden/kjv-chatglm3.lpgd for the trained fixture (docs/goldens.md)

The goldens follow tools/reference.py's conventions (same windows, calibration batch and
subsampling); gradients and Fisher are stored under the checkpoint's own (fused) names.
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden  # noqa: E402
import reference  # noqa: E402  (safetensors reader, windows and golden conventions)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_MODEL = os.path.join(ROOT, "tests", "data", "models", "kjv-chatglm3")
PPL_PREFIX_WINDOWS = 64  # windows of the whole-file PPL the C++ test scores (ppl/kjv_test_128_first64_*)
# The 9 specials llmprune's chatglm arch appends after the SentencePiece pieces (src/arch/arch.cpp).
SPECIALS = ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"]


class Config:
    def __init__(self, c):
        self.hidden = c["hidden_size"]
        self.n_layers = c["num_layers"]
        self.n_heads = c["num_attention_heads"]
        self.n_groups = c["multi_query_group_num"] if c.get("multi_query_attention", True) else self.n_heads
        self.head_dim = c["kv_channels"]
        self.ffn = c["ffn_hidden_size"]
        self.vocab = c["padded_vocab_size"]
        self.eps = c.get("layernorm_epsilon", 1e-5)
        self.base = 10000.0 * c.get("rope_ratio", 1.0)
        if not c.get("multi_query_attention", True):
            raise ValueError("only the blocked multi_query_attention layout is implemented here")

    @staticmethod
    def load(path):
        with open(path) as f:
            return Config(json.load(f))


def rms_norm(x, w, eps):
    # w * x * rsqrt(mean(x^2) + eps)   (CHATGLM.md §2.3)
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotary(x, positions, base):
    """Consecutive-pair rotary on the first r = d/2 dims (CHATGLM.md §2.4).
    x [B, T, n, d]; positions [T]. Pair (2i, 2i+1) rotates by pos * base^(-2i/r), i < r/2."""
    d = x.shape[-1]
    r = d // 2
    theta = 1.0 / (base ** (torch.arange(0, r, 2, dtype=torch.float64) / r))  # [r/2]
    ang = positions.to(torch.float64)[:, None] * theta[None, :]  # [T, r/2]
    cos = ang.cos().to(x.dtype)[None, :, None, :]
    sin = ang.sin().to(x.dtype)[None, :, None, :]
    xr = x[..., :r].reshape(*x.shape[:-1], r // 2, 2)
    x0, x1 = xr[..., 0], xr[..., 1]
    rot = torch.stack((x0 * cos - x1 * sin, x1 * cos + x0 * sin), dim=-1).reshape(*x.shape[:-1], r)
    return torch.cat((rot, x[..., r:]), dim=-1)


linear = reference.linear  # y = x W^T (+ b)


def hidden_states(P, cfg, ids):
    """ids int64 [B, T] -> final-norm hidden states [B, T, H]; positions 0..T-1, causal."""
    B, T = ids.shape
    N, G, d, Fw = cfg.n_heads, cfg.n_groups, cfg.head_dim, cfg.ffn
    pos = torch.arange(T)
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    x = P["transformer.embedding.word_embeddings.weight"][ids]
    for l in range(cfg.n_layers):
        p = f"transformer.encoder.layers.{l}."
        a = rms_norm(x, P[p + "input_layernorm.weight"], cfg.eps)
        y = linear(a, P, p + "self_attention.query_key_value")  # [B, T, (N + 2G) d]: Q | K | V
        q = y[..., :N * d].reshape(B, T, N, d)
        k = y[..., N * d:(N + G) * d].reshape(B, T, G, d)
        v = y[..., (N + G) * d:].reshape(B, T, G, d)
        q, k = rotary(q, pos, cfg.base), rotary(k, pos, cfg.base)
        # query head h reads group h // (N/G)
        k = k.repeat_interleave(N // G, dim=2)
        v = v.repeat_interleave(N // G, dim=2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, N, T, d]
        att = (q @ k.transpose(-1, -2)) / math.sqrt(d)
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        ctx = (att @ v).transpose(1, 2).reshape(B, T, N * d)
        x = x + linear(ctx, P, p + "self_attention.dense")
        m = rms_norm(x, P[p + "post_attention_layernorm.weight"], cfg.eps)
        u = linear(m, P, p + "mlp.dense_h_to_4h")  # [B, T, 2F]: gate = first half
        x = x + linear(F.silu(u[..., :Fw]) * u[..., Fw:], P, p + "mlp.dense_4h_to_h")
    return rms_norm(x, P["transformer.encoder.final_layernorm.weight"], cfg.eps)


def forward(P, cfg, ids):
    """ids int64 [B, T] -> logits [B, T, padded_vocab]."""
    return hidden_states(P, cfg, ids) @ P["transformer.output_layer.weight"].t()


# ----------------------------------------------------------------------------- official fixtures

def read_official(path):
    """chatglm.cpp's v2+ layout (fixtures/chatglm/SOURCE.txt): f32 parameters in state-dict order,
    then (ids int32[3], y float32[3, 32]), (id, y[1, 32]) twice."""
    with open(path, "rb") as f:
        buf = f.read()
    off = 0

    def take(dtype, shape):
        nonlocal off
        n = int(np.prod(shape))
        a = np.frombuffer(buf, dtype=dtype, count=n, offset=off).reshape(shape)
        off += n * 4
        return torch.from_numpy(a.copy())

    L = "transformer.encoder.layers.0."
    P = {}
    for name, shape in [("transformer.embedding.word_embeddings.weight", (5, 32)),
                        (L + "input_layernorm.weight", (32,)),
                        (L + "self_attention.query_key_value.weight", (48, 32)),
                        (L + "self_attention.query_key_value.bias", (48,)),
                        (L + "self_attention.dense.weight", (32, 32)),
                        (L + "post_attention_layernorm.weight", (32,)),
                        (L + "mlp.dense_h_to_4h.weight", (96, 32)),
                        (L + "mlp.dense_4h_to_h.weight", (32, 48)),
                        ("transformer.encoder.final_layernorm.weight", (32,))]:
        P[name] = take("<f4", shape)
    ids, ys = [], []
    for T in (3, 1, 1):
        ids.append(take("<i4", (T,)))
        ys.append(take("<f4", (T, 32)))
    if off != len(buf):
        raise ValueError(f"{path}: {len(buf) - off} bytes after the layout")
    return P, ids, ys


def check_official(shared):
    worst = 0.0
    for name, eps in [("glm2_model.data", 1e-5), ("glm3_model.data", 1e-5), ("glm4_model.data", 1.5625e-07)]:
        P, ids, ys = read_official(os.path.join(shared, "fixtures", "chatglm", name))
        cfg = Config({"hidden_size": 32, "num_layers": 1, "num_attention_heads": 8, "multi_query_group_num": 2,
                      "kv_channels": 4, "ffn_hidden_size": 48, "padded_vocab_size": 5, "layernorm_epsilon": eps,
                      "rope_ratio": 500.0 if name.startswith("glm4") else 1.0})
        # Prefill of 3 ids then two cached decode steps = one causal pass over the 5 ids.
        all_ids = torch.cat(ids).long()[None]
        with torch.no_grad():
            h = hidden_states(P, cfg, all_ids)[0]
        want = torch.cat(ys)
        err = float((h - want).abs().max())
        worst = max(worst, err)
        print(f"{name}: max |reference - THUDM| = {err:.3g}")
    if worst > 1e-5:
        raise SystemExit(f"official outputs NOT reproduced (max error {worst:.3g} > 1e-5)")
    print("official outputs reproduced to 1e-5")


# ----------------------------------------------------------------------------- goldens

def chatglm_tokenize_file(sp, path):
    # llmprune's chatglm convention: the family prefix [gMASK] sop, then the whole file.
    n = sp.get_piece_size()
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return [n + SPECIALS.index("[gMASK]"), n + SPECIALS.index("sop")] + sp.encode(text, out_type=int)


def build_golden(model_dir, shared):
    import sentencepiece as spm
    cfg = Config.load(os.path.join(model_dir, "config.json"))
    P = reference.load_safetensors(os.path.join(model_dir, "model.safetensors"))
    sp = spm.SentencePieceProcessor(model_file=os.path.join(model_dir, "tokenizer.model"))
    tdir = os.path.join(shared, "fixtures", "text")
    entries = []
    fwd = lambda P_, _cfg, ids: forward(P_, cfg, ids)  # noqa: E731  reference.py's signature

    test = chatglm_tokenize_file(sp, os.path.join(tdir, "kjv.test.txt"))
    ids = torch.tensor(test[:reference.FWD_B * reference.FWD_T], dtype=torch.int64).view(reference.FWD_B, reference.FWD_T)
    with torch.no_grad():
        logits = forward(P, cfg, ids)
    fwd_loss = float(reference.next_token_nll(logits, ids).mean())
    entries += [("fwd/ids", ids.numpy().astype("<i4")), ("fwd/logits", logits.numpy().astype("<f4")),
                ("fwd/loss", np.array(fwd_loss, dtype="<f8"))]

    saved_forward = reference.forward
    reference.forward = fwd
    try:
        ppl = {}
        for key, seq, stride in [("kjv_test_128", reference.PPL_SEQ, reference.PPL_SEQ),
                                 ("kjv_test_s64", reference.PPL_SEQ, reference.PPL_STRIDE)]:
            s, c, w = reference.perplexity_windows(P, cfg, test, seq, stride)
            ppl[key] = math.exp(s / c)
            entries += [(f"ppl/{key}", np.array(ppl[key], dtype="<f8")),
                        (f"ppl/{key}_nll_sum", np.array(s, dtype="<f8")),
                        (f"ppl/{key}_count", np.array(float(c), dtype="<f8")),
                        (f"ppl/{key}_windows", np.array(float(w), dtype="<f8"))]
        # The first PPL_PREFIX_WINDOWS windows alone: what the C++ test scores (~1 s instead of ~10 s
        # for the whole file, which `llmprune eval` is compared with by hand, README).
        s, c, w = reference.perplexity_windows(P, cfg, test[:PPL_PREFIX_WINDOWS * reference.PPL_SEQ], reference.PPL_SEQ,
                                               reference.PPL_SEQ)
        key = f"kjv_test_128_first{PPL_PREFIX_WINDOWS}"
        entries += [(f"ppl/{key}_nll_sum", np.array(s, dtype="<f8")), (f"ppl/{key}_count", np.array(float(c), dtype="<f8")),
                    (f"ppl/{key}_windows", np.array(float(w), dtype="<f8"))]
    finally:
        reference.forward = saved_forward
    entries.append(("ppl/n_tokens", np.array(float(len(test)), dtype="<f8")))

    valid = chatglm_tokenize_file(sp, os.path.join(tdir, "kjv.valid.txt"))
    N, L = reference.CALIB_N, reference.CALIB_L
    cids = torch.tensor(valid[:N * L], dtype=torch.int64).view(N, L)
    names = sorted(P.keys())
    for n in names:
        P[n].requires_grad_(True)
    loss = reference.causal_lm_loss(forward(P, cfg, cids), cids)
    grads = torch.autograd.grad(loss, [P[n] for n in names])
    with torch.no_grad():
        calib_loss = float(reference.next_token_nll(forward(P, cfg, cids), cids).mean())
    A = {n: np.zeros(P[n].shape, dtype=np.float64) for n in names}
    for j in range(N):
        sj = cids[j:j + 1]
        gj = torch.autograd.grad(reference.causal_lm_loss(forward(P, cfg, sj), sj), [P[n] for n in names])
        for n, g in zip(names, gj):
            gd = g.double().numpy()
            A[n] += gd * gd
    entries += [("calib/ids", cids.numpy().astype("<i4")), ("calib/loss", np.array(calib_loss, dtype="<f8"))]
    for n, g in zip(names, grads):
        flat = g.numpy().reshape(-1)
        s = reference.stride_for(flat.size, reference.GRAD_SAMPLES)
        entries += [(f"grad/{n}", flat[::s].astype("<f4")), (f"gradstride/{n}", np.array([s], dtype="<i4"))]
    for n in names:
        flat = (A[n] / N).reshape(-1)
        s = reference.stride_for(flat.size, reference.FISHER_SAMPLES)
        entries += [(f"fisher/{n}", flat[::s].astype("<f8")), (f"fisherstride/{n}", np.array([s], dtype="<i4"))]
    return entries, ppl, fwd_loss, calib_loss


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    ap.add_argument("--check-official", action="store_true")
    ap.add_argument("--golden", action="store_true")
    ap.add_argument("--model", default=FIXTURE_MODEL)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "golden", "kjv-chatglm3.lpgd"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if args.check_official or not args.golden:
        check_official(args.shared)
    if args.golden:
        check_official(args.shared)  # the oracle must first reproduce THUDM's outputs
        entries, ppl, fl, cl = build_golden(args.model, args.shared)
        golden.write(args.out, entries)
        print(f"{os.path.basename(args.model)}: ppl128 {ppl['kjv_test_128']:.4f}  ppl_s64 {ppl['kjv_test_s64']:.4f}  "
              f"fwd loss {fl:.6f}  calib loss {cl:.6f}  -> {args.out} "
              f"({os.path.getsize(args.out) / 1e6:.2f} MB, {len(entries)} entries)")


if __name__ == "__main__":
    main()
