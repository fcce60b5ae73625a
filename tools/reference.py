#!/usr/bin/python3
"""Dev-time PyTorch oracle: writes tests/golden/<model>.lpgd for the C++ tests.

Run with Debian's Python (it has torch 1.13 CPU, numpy, sentencepiece):
    /usr/bin/python3 tools/reference.py [--shared DIR] [--out DIR] [--check]

No `transformers` / `safetensors` here: HF LlamaForCausalLM semantics are written out in
plain torch float32 below, and safetensors is parsed by hand. Every entry and convention
is described in docs/goldens.md. The output is deterministic (single thread, no RNG).
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import sentencepiece as spm
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A random-weight LLaMA with every HF bias (attention_bias, mlp_bias) and head_dim != hidden /
# heads, committed under tests/data/models/ (see make_bias_model); the others are the shared
# trained fixtures.
BIAS_MODEL = "llama-bias-tiny"
MODELS = ["kjv-llama-mha", "kjv-llama-gqa-tied", BIAS_MODEL]
BOS = 1

# Perplexity windows (the reference implementation's 128-token setting).
PPL_SEQ = 128
PPL_STRIDE = 64
# Calibration: N sequential samples of L tokens (METHOD.md §8, --calib-sampling sequential).
CALIB_N = 10
CALIB_L = 64
# Forward check: 64 tokens as [2, 32].
FWD_B, FWD_T = 2, 32
# Gradients are stored subsampled to about this many elements per tensor (repo size).
GRAD_SAMPLES = 16384
FISHER_SAMPLES = 4096

CRITERIA = ["l1", "l2", "vector", "element1", "element2", "fisher"]
REDUCTIONS = ["sum", "mean", "max", "prod", "first", "last"]


# ----------------------------------------------------------------------------- loading

def load_safetensors(path):
    """name -> float32 torch tensor. Header: u64 length, json {name: {dtype, shape,
    data_offsets}} (offsets relative to the end of the header)."""
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack_from("<Q", buf, 0)
    header = json.loads(buf[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        if info["dtype"] == "F32":
            arr = np.frombuffer(buf, dtype="<f4", count=(e - b) // 4, offset=base + b)
        elif info["dtype"] == "BF16":
            # bf16 is the top half of an f32: widening is exact.
            half = np.frombuffer(buf, dtype="<u2", count=(e - b) // 2, offset=base + b)
            arr = (half.astype("<u4") << 16).view("<f4")
        else:
            raise ValueError(f"{path}: {name} is {info['dtype']}, only F32 and BF16 are supported")
        out[name] = torch.from_numpy(arr.reshape(info["shape"]).copy())
    return out


class Config:
    def __init__(self, path):
        with open(path) as f:
            c = json.load(f)
        self.hidden = c["hidden_size"]
        self.inter = c["intermediate_size"]
        self.n_layers = c["num_hidden_layers"]
        self.n_heads = c["num_attention_heads"]
        self.n_kv = c.get("num_key_value_heads", self.n_heads)
        self.vocab = c["vocab_size"]
        self.eps = c.get("rms_norm_eps", 1e-6)
        self.theta = c.get("rope_theta", 10000.0)
        self.tied = c.get("tie_word_embeddings", False)
        self.head_dim = c.get("head_dim", self.hidden // self.n_heads)
        self.rep = self.n_heads // self.n_kv


# ----------------------------------------------------------------------------- model

def rms_norm(x, w, eps):
    # HF LlamaRMSNorm: x * rsqrt(mean(x^2) + eps), then * weight (float32 throughout).
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope_cos_sin(cfg, T):
    hd = cfg.head_dim
    inv_freq = 1.0 / (cfg.theta ** (torch.arange(0, hd, 2).float() / hd))  # [hd/2]
    t = torch.arange(T, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)  # [T, hd/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [T, hd]
    return emb.cos(), emb.sin()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def linear(x, P, name):
    # y = x W^T (+ b); W is [out, in] as in the checkpoint.
    y = x @ P[name + ".weight"].t()
    b = P.get(name + ".bias")
    return y + b if b is not None else y


def forward(P, cfg, ids):
    """ids: int64 [B, T] -> logits float32 [B, T, V]. Positions 0..T-1 per sequence."""
    B, T = ids.shape
    hd, nh, nkv = cfg.head_dim, cfg.n_heads, cfg.n_kv
    cos, sin = rope_cos_sin(cfg, T)
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)  # True above the diagonal = masked
    x = P["model.embed_tokens.weight"][ids]  # [B, T, H]
    for l in range(cfg.n_layers):
        p = f"model.layers.{l}."
        h = rms_norm(x, P[p + "input_layernorm.weight"], cfg.eps)
        q = linear(h, P, p + "self_attn.q_proj").view(B, T, nh, hd).transpose(1, 2)
        k = linear(h, P, p + "self_attn.k_proj").view(B, T, nkv, hd).transpose(1, 2)
        v = linear(h, P, p + "self_attn.v_proj").view(B, T, nkv, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        # repeat_kv: query head j reads kv head j // rep.
        k = k.repeat_interleave(cfg.rep, dim=1)
        v = v.repeat_interleave(cfg.rep, dim=1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(hd)  # [B, nh, T, T]
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        o = (att @ v).transpose(1, 2).reshape(B, T, nh * hd)
        x = x + linear(o, P, p + "self_attn.o_proj")
        h = rms_norm(x, P[p + "post_attention_layernorm.weight"], cfg.eps)
        m = F.silu(linear(h, P, p + "mlp.gate_proj")) * linear(h, P, p + "mlp.up_proj")
        x = x + linear(m, P, p + "mlp.down_proj")
    x = rms_norm(x, P["model.norm.weight"], cfg.eps)
    head = P["model.embed_tokens.weight"] if cfg.tied else P["lm_head.weight"]
    return x @ head.t()


def next_token_nll(logits, ids):
    """Per-prediction NLL in float64 from the float32 logits: position t predicts t+1.
    logits [B, T, V], ids [B, T] -> [B, T-1] float64."""
    lp = logits[:, :-1].double().log_softmax(-1)
    return -lp.gather(-1, ids[:, 1:, None]).squeeze(-1)


def causal_lm_loss(logits, ids):
    # float32 mean CE (what autograd differentiates, as HF's loss does).
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))


# ----------------------------------------------------------------------------- data

def tokenize_file(sp, path):
    # Whole file as one string, BOS prepended once, no EOS (METHOD.md §8).
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return [BOS] + sp.encode(text, out_type=int)


@torch.no_grad()
def perplexity_windows(P, cfg, toks, seq, stride, batch=32):
    """Windows start at 0, stride, 2*stride, ... while start + seq <= n (partial tail
    dropped). Window 0 scores all its seq-1 predictions; a later window scores only its
    last `stride` predictions (targets not scored by an earlier window). With
    stride == seq that is plain non-overlapping windows. Returns (nll_sum, count, windows)."""
    n = len(toks)
    starts = list(range(0, n - seq + 1, stride))
    t = torch.tensor(toks, dtype=torch.int64)
    nll_sum, count = 0.0, 0
    last = 0  # index of the last target scored so far (token 0, BOS, is never a target)
    for i in range(0, len(starts), batch):
        chunk = starts[i:i + batch]
        ids = torch.stack([t[s:s + seq] for s in chunk])
        nll = next_token_nll(forward(P, cfg, ids), ids)  # [b, seq-1]
        for r, s in enumerate(chunk):
            # prediction k of this window targets token s+k+1; keep targets > last
            keep = nll[r, max(0, last - s):]
            last = s + seq - 1
            nll_sum += float(keep.sum())
            count += keep.numel()
    return nll_sum, count, len(starts)


# ----------------------------------------------------------------------------- importance

def elem_scores(crit, w, g, a):
    """Per-element non-negative score used by the element-wise criteria (float64)."""
    if crit == "l1":
        return np.abs(w)
    if crit == "l2":
        return w * w
    if crit == "element1":
        return np.abs(w * g)
    if crit == "element2":
        return np.abs(w * g - 0.5 * w * w * a)
    if crit == "fisher":
        return w * w * a
    raise ValueError(crit)


def row_col_scores(crit, w, g, a):
    """(per-row, per-column) member scores of a 2-D weight, or (per-element, same) for a
    1-D norm weight. vector: |sum of s = w*g along the row/column|."""
    if w.ndim == 1:
        e = np.abs(w * g) if crit == "vector" else elem_scores(crit, w, g, a)
        return e, e
    if crit == "vector":
        s = w * g
        return np.abs(s.sum(1)), np.abs(s.sum(0))
    e = elem_scores(crit, w, g, a)
    return e.sum(1), e.sum(0)


def unit_members(cfg):
    """kind -> list of (role, tensor suffix, 'row'|'col'|'elem', units) in execution order,
    per layer. units: how many consecutive rows/columns form one unit."""
    hd, rep = cfg.head_dim, cfg.rep
    kinds = {}
    if cfg.n_kv == cfg.n_heads:
        kinds["head"] = [("q", "self_attn.q_proj", "row", hd), ("k", "self_attn.k_proj", "row", hd),
                         ("v", "self_attn.v_proj", "row", hd), ("o", "self_attn.o_proj", "col", hd)]
    else:
        kinds["kv_group"] = [("q", "self_attn.q_proj", "row", rep * hd),
                             ("k", "self_attn.k_proj", "row", hd),
                             ("v", "self_attn.v_proj", "row", hd),
                             ("o", "self_attn.o_proj", "col", rep * hd)]
        # --gqa-unit query: one query head, members q rows and o columns only.
        kinds["head"] = [("q", "self_attn.q_proj", "row", hd), ("o", "self_attn.o_proj", "col", hd)]
    kinds["mlp"] = [("gate", "mlp.gate_proj", "row", 1), ("up", "mlp.up_proj", "row", 1),
                    ("down", "mlp.down_proj", "col", 1)]
    return kinds


def hidden_members(cfg):
    """(role, tensor name or per-layer suffix, 'row'|'col'|'elem', per_layer) in execution
    order for the whole-model hidden-channel group."""
    m = [("embed", "model.embed_tokens.weight", "col", False)]
    for role, suf, ax in [("input_norm", "input_layernorm.weight", "elem"),
                          ("q", "self_attn.q_proj.weight", "col"),
                          ("k", "self_attn.k_proj.weight", "col"),
                          ("v", "self_attn.v_proj.weight", "col"),
                          ("o", "self_attn.o_proj.weight", "row"),
                          ("post_norm", "post_attention_layernorm.weight", "elem"),
                          ("gate", "mlp.gate_proj.weight", "col"),
                          ("up", "mlp.up_proj.weight", "col"),
                          ("down", "mlp.down_proj.weight", "row")]:
        m.append((role, suf, ax, True))
    m.append(("norm", "model.norm.weight", "elem", False))
    if not cfg.tied:
        m.append(("lm_head", "lm_head.weight", "col", False))
    return m


def reduce(stack, how):
    # stack: [n_members, ...] float64
    if how == "sum":
        return stack.sum(0)
    if how == "mean":
        return stack.mean(0)
    if how == "max":
        return stack.max(0)
    if how == "prod":
        return stack.prod(0)
    if how == "first":
        return stack[0]
    if how == "last":
        return stack[-1]
    raise ValueError(how)


def importance(cfg, W, G, A):
    """W, G, A: name -> float64 numpy (weight, full-batch grad, Fisher diagonal).
    Returns list of (entry name, float64 array)."""
    out = []
    cache = {}

    def rc(crit, name):
        key = (crit, name)
        if key not in cache:
            cache[key] = row_col_scores(crit, W[name], G[name], A[name])
        return cache[key]

    def pick(crit, name, ax):
        r, c = rc(crit, name)
        return r if ax in ("row", "elem") else c

    for crit in CRITERIA:
        reds = REDUCTIONS if crit == "element1" else ["sum"]
        for kind, members in unit_members(cfg).items():
            per_role = []
            for role, suf, ax, width in members:
                rows = []
                for l in range(cfg.n_layers):
                    v = pick(crit, f"model.layers.{l}.{suf}.weight", ax)
                    rows.append(v.reshape(-1, width).sum(1))  # sum the unit's rows/cols
                per_role.append((role, np.stack(rows)))  # [n_layers, n_units]
            stack = np.stack([s for _, s in per_role])
            for red in reds:
                out.append((f"imp/{crit}/{red}/{kind}", reduce(stack, red)))
            if crit == "element1":
                for role, s in per_role:
                    out.append((f"member/element1/{kind}/{role}", s))
        # hidden channel: one group spanning the model
        flat, per_role = [], []
        for role, name, ax, per_layer in hidden_members(cfg):
            if per_layer:
                s = np.stack([pick(crit, f"model.layers.{l}.{name}", ax) for l in range(cfg.n_layers)])
                flat.extend(list(s))
            else:
                s = pick(crit, name, ax)
                flat.append(s)
            per_role.append((role, s))
        stack = np.stack(flat)  # [n_members, hidden], execution order
        for red in reds:
            out.append((f"imp/{crit}/{red}/hidden", reduce(stack, red)))
        if crit == "element1":
            for role, s in per_role:
                out.append((f"member/element1/hidden/{role}", s))
    return out


# ----------------------------------------------------------------------------- main

def stride_for(numel, target):
    return max(1, -(-numel // target))


def param_names(P, cfg):
    # Checkpoint order (sorted, as in the safetensors header of these fixtures).
    return sorted(P.keys())


def model_dir(model, shared):
    if model == BIAS_MODEL:
        return os.path.join(ROOT, "tests", "data", "models", model)
    return os.path.join(shared, "fixtures", "models", model)


def write_safetensors(path, tensors, dtype="BF16"):
    """tensors: list of (name, float32 numpy), stored as dtype: BF16 (round to nearest even) or
    F32; names sorted as HF writes them."""
    header, blobs, off = {}, [], 0
    for name, arr in sorted(tensors, key=lambda t: t[0]):
        f32 = np.ascontiguousarray(arr, dtype="<f4")
        if dtype == "BF16":
            u = f32.view("<u4").astype(np.uint64)
            raw = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2").tobytes()
        elif dtype == "F32":
            raw = f32.tobytes()
        else:
            raise ValueError("dtype must be BF16 or F32, not " + dtype)
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for raw in blobs:
            f.write(raw)


def write_safetensors_bf16(path, tensors):
    write_safetensors(path, tensors, "BF16")


def make_bias_model(shared):
    """tests/data/models/llama-bias-tiny: HF LlamaForCausalLM with attention_bias and mlp_bias
    (biases on q, k, v, o, gate, up, down), head_dim 24 while hidden / heads = 16, GQA 4/2, tied
    embeddings, the KJV tokenizer; random weights (numpy seed 15), bf16 so it stays small."""
    out = model_dir(BIAS_MODEL, shared)
    os.makedirs(out, exist_ok=True)
    H, F_, L, NH, NKV, HD, V = 64, 96, 2, 4, 2, 24, 4096
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H,
           "intermediate_size": F_, "num_hidden_layers": L, "num_attention_heads": NH,
           "num_key_value_heads": NKV, "head_dim": HD, "vocab_size": V, "max_position_embeddings": 512,
           "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": True,
           "attention_bias": True, "mlp_bias": True, "bos_token_id": 1, "eos_token_id": 2,
           "torch_dtype": "bfloat16"}
    rng = np.random.default_rng(15)
    t = [("model.embed_tokens.weight", 0.5 * rng.standard_normal((V, H))),
         ("model.norm.weight", 1 + 0.1 * rng.standard_normal(H))]
    for l in range(L):
        p = f"model.layers.{l}."
        for name, rows, cols in [("self_attn.q_proj", NH * HD, H), ("self_attn.k_proj", NKV * HD, H),
                                 ("self_attn.v_proj", NKV * HD, H), ("self_attn.o_proj", H, NH * HD),
                                 ("mlp.gate_proj", F_, H), ("mlp.up_proj", F_, H), ("mlp.down_proj", H, F_)]:
            t.append((p + name + ".weight", rng.standard_normal((rows, cols)) / math.sqrt(cols)))
            t.append((p + name + ".bias", 0.1 * rng.standard_normal(rows)))
        t.append((p + "input_layernorm.weight", 1 + 0.1 * rng.standard_normal(H)))
        t.append((p + "post_attention_layernorm.weight", 1 + 0.1 * rng.standard_normal(H)))
    write_safetensors_bf16(os.path.join(out, "model.safetensors"), [(n, a.astype(np.float32)) for n, a in t])
    with open(os.path.join(out, "config.json"), "w") as f:
        f.write(json.dumps(cfg, indent=2) + "\n")
    src = os.path.join(shared, "fixtures", "models", "kjv-llama-mha")
    for name in ["tokenizer.model", "tokenizer_config.json", "generation_config.json"]:
        with open(os.path.join(src, name), "rb") as fi, open(os.path.join(out, name), "wb") as fo:
            fo.write(fi.read())
    print(f"{BIAS_MODEL}: written to {out}")


def build(model, shared):
    mdir = model_dir(model, shared)
    tdir = os.path.join(shared, "fixtures", "text")
    cfg = Config(os.path.join(mdir, "config.json"))
    P = load_safetensors(os.path.join(mdir, "model.safetensors"))
    sp = spm.SentencePieceProcessor(model_file=os.path.join(mdir, "tokenizer.model"))
    entries = []

    # --- forward: first 64 tokens of the test file as [2, 32] ([1, 8] for the small bias
    # model: its logits are most of its golden file)
    test = tokenize_file(sp, os.path.join(tdir, "kjv.test.txt"))
    fb, ft = (1, 8) if model == BIAS_MODEL else (FWD_B, FWD_T)
    ids = torch.tensor(test[:fb * ft], dtype=torch.int64).view(fb, ft)
    with torch.no_grad():
        logits = forward(P, cfg, ids)
    fwd_loss = float(next_token_nll(logits, ids).mean())
    entries += [("fwd/ids", ids.numpy().astype("<i4")),
                ("fwd/logits", logits.numpy().astype("<f4")),
                ("fwd/loss", np.array(fwd_loss, dtype="<f8"))]

    # --- perplexity
    ppl = {}
    for key, seq, stride in [("kjv_test_128", PPL_SEQ, PPL_SEQ), ("kjv_test_s64", PPL_SEQ, PPL_STRIDE)]:
        s, c, w = perplexity_windows(P, cfg, test, seq, stride)
        ppl[key] = math.exp(s / c)
        entries += [(f"ppl/{key}", np.array(ppl[key], dtype="<f8")),
                    (f"ppl/{key}_nll_sum", np.array(s, dtype="<f8")),
                    (f"ppl/{key}_count", np.array(float(c), dtype="<f8")),
                    (f"ppl/{key}_windows", np.array(float(w), dtype="<f8"))]
    entries.append(("ppl/n_tokens", np.array(float(len(test)), dtype="<f8")))

    # --- calibration gradients
    valid = tokenize_file(sp, os.path.join(tdir, "kjv.valid.txt"))
    if len(valid) < CALIB_N * CALIB_L:
        raise ValueError("calibration text too short")
    cids = torch.tensor(valid[:CALIB_N * CALIB_L], dtype=torch.int64).view(CALIB_N, CALIB_L)
    names = param_names(P, cfg)
    for n in names:
        P[n].requires_grad_(True)
    # full batch: mean over all N*(L-1) predictions
    loss = causal_lm_loss(forward(P, cfg, cids), cids)
    grads = torch.autograd.grad(loss, [P[n] for n in names])
    G = {n: g.detach() for n, g in zip(names, grads)}
    with torch.no_grad():
        calib_loss = float(next_token_nll(forward(P, cfg, cids), cids).mean())
    # per sample: Fisher diagonal a = (1/N) sum_j g_j^2 (float64 accumulation)
    A = {n: np.zeros(P[n].shape, dtype=np.float64) for n in names}
    for j in range(CALIB_N):
        sj = cids[j:j + 1]
        gj = torch.autograd.grad(causal_lm_loss(forward(P, cfg, sj), sj), [P[n] for n in names])
        for n, g in zip(names, gj):
            gd = g.double().numpy()
            A[n] += gd * gd
    for n in names:
        A[n] /= CALIB_N
        P[n].requires_grad_(False)
    entries += [("calib/ids", cids.numpy().astype("<i4")),
                ("calib/loss", np.array(calib_loss, dtype="<f8"))]
    for n in names:
        flat = G[n].numpy().reshape(-1)
        p = stride_for(flat.size, GRAD_SAMPLES)
        entries += [(f"grad/{n}", flat[::p].astype("<f4")), (f"gradstride/{n}", np.array([p], dtype="<i4"))]
    for n in names:
        flat = A[n].reshape(-1)
        p = stride_for(flat.size, FISHER_SAMPLES)
        entries += [(f"fisher/{n}", flat[::p].astype("<f8")), (f"fisherstride/{n}", np.array([p], dtype="<i4"))]

    # --- importance (float64 from the float32 weights and gradients)
    W = {n: P[n].detach().double().numpy() for n in names}
    Gd = {n: G[n].double().numpy() for n in names}
    entries += importance(cfg, W, Gd, A)
    return entries, ppl, fwd_loss, calib_loss


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "golden"))
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--make-bias-model", action="store_true",
                    help=f"(re)write tests/data/models/{BIAS_MODEL} before the goldens")
    args = ap.parse_args()
    if args.make_bias_model:
        make_bias_model(args.shared)
    # One thread: reductions inside BLAS/OpenMP can depend on the thread count.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    for model in args.models:
        entries, ppl, fl, cl = build(model, args.shared)
        path = os.path.join(args.out, model + ".lpgd")
        golden.write(path, entries)
        print(f"{model}: ppl128 {ppl['kjv_test_128']:.4f}  ppl_s64 {ppl['kjv_test_s64']:.4f}  "
              f"fwd loss {fl:.6f}  calib loss {cl:.6f}  -> {path} "
              f"({os.path.getsize(path) / 1e6:.2f} MB, {len(entries)} entries)")


if __name__ == "__main__":
    main()
