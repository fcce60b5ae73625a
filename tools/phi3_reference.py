#!/usr/bin/python3
"""Dev-time oracle for the Phi-3 family (HF Phi3ForCausalLM): writes the tiny random model
tests/data/models/phi3-tiny and its golden logits tests/golden/phi3-tiny.lpgd (docs/goldens.md).

    /usr/bin/python3 tools/phi3_reference.py [--shared ../shared]

The model: hidden 32, 2 layers, 4 query heads of 8, 2 KV heads (GQA, as Phi-3-medium), MLP 64,
fused qkv_proj = [Q | K | V] and gate_up_proj = [gate | up], untied lm_head, no biases,
sliding_window 48 < max_position_embeddings 64, the KJV tokenizer; random weights (numpy seed
33), bf16 so it stays small. The logits are computed in float32 by the plain-torch Phi-3 block
below (written from transformers' modeling_phi3.py: RMSNorm, rotate-half RoPE on the whole head,
SiLU(gate) * up with the gate the FIRST half of gate_up_proj) and, when transformers can be
imported, also by transformers' own Phi3ForCausalLM (eager attention); the two must agree.
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
NAME = "phi3-tiny"
H, FF, L, NH, NKV, V = 32, 64, 2, 4, 2, 4096
HD = H // NH
# Two sequences of 8 tokens (8 < sliding_window, so the window does not act); logits [2, 8, 4096].
IDS = [[1] + [(37 * i + 11) % (V - 3) + 3 for i in range(7)], [1] + [(101 * i + 5) % (V - 3) + 3 for i in range(7)]]


def config():
    return {"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_size": H, "intermediate_size": FF,
            "num_hidden_layers": L, "num_attention_heads": NH, "num_key_value_heads": NKV, "vocab_size": V,
            "max_position_embeddings": 64, "original_max_position_embeddings": 64, "rms_norm_eps": 1e-05,
            "rope_theta": 10000.0, "rope_scaling": None, "hidden_act": "silu", "sliding_window": 48,
            "tie_word_embeddings": False, "attention_bias": False, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
            "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
            "torch_dtype": "bfloat16"}


def weights():
    rng = np.random.default_rng(33)
    t = [("model.embed_tokens.weight", 0.5 * rng.standard_normal((V, H))),
         ("model.norm.weight", 1 + 0.1 * rng.standard_normal(H)),
         ("lm_head.weight", rng.standard_normal((V, H)) / math.sqrt(H))]
    for l in range(L):
        p = f"model.layers.{l}."
        t.append((p + "self_attn.qkv_proj.weight", rng.standard_normal(((NH + 2 * NKV) * HD, H)) / math.sqrt(H)))
        t.append((p + "self_attn.o_proj.weight", rng.standard_normal((H, NH * HD)) / math.sqrt(NH * HD)))
        t.append((p + "mlp.gate_up_proj.weight", rng.standard_normal((2 * FF, H)) / math.sqrt(H)))
        t.append((p + "mlp.down_proj.weight", rng.standard_normal((H, FF)) / math.sqrt(FF)))
        t.append((p + "input_layernorm.weight", 1 + 0.1 * rng.standard_normal(H)))
        t.append((p + "post_attention_layernorm.weight", 1 + 0.1 * rng.standard_normal(H)))
    return [(n, a.astype(np.float32)) for n, a in t]


@torch.no_grad()
def phi3_forward(P, ids):
    """ids [B, T] -> logits [B, T, V] in float32 (Phi3DecoderLayer / Phi3Attention / Phi3MLP)."""
    B, T = ids.shape
    inv = 1.0 / (10000.0 ** (torch.arange(0, HD, 2).float() / HD))
    emb = torch.outer(torch.arange(T, dtype=torch.float32), inv)
    cos, sin = torch.cat((emb, emb), -1).cos(), torch.cat((emb, emb), -1).sin()
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    x = P["model.embed_tokens.weight"][ids]
    for l in range(L):
        p = f"model.layers.{l}."
        h = reference.rms_norm(x, P[p + "input_layernorm.weight"], 1e-5)
        qkv = h @ P[p + "self_attn.qkv_proj.weight"].t()
        q = qkv[..., :NH * HD].view(B, T, NH, HD).transpose(1, 2)
        k = qkv[..., NH * HD:(NH + NKV) * HD].view(B, T, NKV, HD).transpose(1, 2)
        v = qkv[..., (NH + NKV) * HD:].view(B, T, NKV, HD).transpose(1, 2)
        q = q * cos + reference.rotate_half(q) * sin
        k = k * cos + reference.rotate_half(k) * sin
        k, v = k.repeat_interleave(NH // NKV, 1), v.repeat_interleave(NH // NKV, 1)
        att = ((q @ k.transpose(-1, -2)) / math.sqrt(HD)).masked_fill(mask, float("-inf")).softmax(-1)
        x = x + (att @ v).transpose(1, 2).reshape(B, T, NH * HD) @ P[p + "self_attn.o_proj.weight"].t()
        h = reference.rms_norm(x, P[p + "post_attention_layernorm.weight"], 1e-5)
        gate, up = (h @ P[p + "mlp.gate_up_proj.weight"].t()).chunk(2, dim=-1)
        x = x + (up * F.silu(gate)) @ P[p + "mlp.down_proj.weight"].t()
    x = reference.rms_norm(x, P["model.norm.weight"], 1e-5)
    return x @ P["lm_head.weight"].t()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    args = ap.parse_args()
    out = os.path.join(ROOT, "tests", "data", "models", NAME)
    os.makedirs(out, exist_ok=True)
    t = weights()
    reference.write_safetensors_bf16(os.path.join(out, "model.safetensors"), t)
    with open(os.path.join(out, "config.json"), "w") as f:
        f.write(json.dumps(config(), indent=2) + "\n")
    src = os.path.join(args.shared, "fixtures", "models", "kjv-llama-mha")
    for name in ["tokenizer.model", "tokenizer_config.json", "generation_config.json"]:
        with open(os.path.join(src, name), "rb") as fi, open(os.path.join(out, name), "wb") as fo:
            fo.write(fi.read())
    P = reference.load_safetensors(os.path.join(out, "model.safetensors"))  # the bf16 values, widened
    ids = torch.tensor(IDS)
    logits = phi3_forward(P, ids)
    try:
        import transformers
        from transformers import Phi3Config, Phi3ForCausalLM
    except ImportError:
        print("transformers not importable: golden from the plain-torch block only")
    else:
        cfg = Phi3Config(**{k: v for k, v in config().items() if k not in ("architectures", "model_type", "torch_dtype")})
        cfg._attn_implementation = "eager"
        hf = Phi3ForCausalLM(cfg).eval()
        missing, unexpected = hf.load_state_dict(P, strict=False)
        assert not unexpected and all("rotary_emb" in m for m in missing), (missing, unexpected)
        with torch.no_grad():
            hf_logits = hf(ids).logits.float()
        diff = float((hf_logits - logits).abs().max())
        print(f"transformers {transformers.__version__} Phi3ForCausalLM vs the plain-torch block: max |diff| {diff:.3g}")
        assert diff < 1e-5, diff
    golden.write(os.path.join(ROOT, "tests", "golden", NAME + ".lpgd"),
                 [("ids", np.array(IDS, dtype=np.int32)), ("logits", logits.numpy().astype(np.float32))])
    print(f"{NAME}: model in {out}, logits {tuple(logits.shape)} max |logit| {float(logits.abs().max()):.3g}")


if __name__ == "__main__":
    main()
