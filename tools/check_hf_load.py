#!/usr/bin/python3
"""Dev-time check that a model directory written by llmprune loads in HF transformers and
computes what llmprune computes (docs/export.md, "Loading in transformers").

    python3 tools/check_hf_load.py DIR [--llmprune build/llmprune] [--text FILE] [--seq-len 64]
                                       [--windows 4] [--no-peft]

Needs torch and transformers (and peft unless --no-peft); llmprune's C++ tests never run it.
What it does, printing each result and the versions used:
 1. AutoConfig + AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True), float32, eval.
 2. Logits of the first window against an independent float32 forward written out below from the
    tensors in model.safetensors (each layer's sizes from its own tensor shapes; a layer without
    attention/MLP tensors skips that sub-block): max |difference|.
 3. Perplexity NLL sum over the first --windows windows of --text (BOS once + whole text,
    non-overlapping windows of --seq-len, llmprune's convention) against the nll_sum that
    `llmprune eval DIR --ppl FILE --seq-len N --max-windows W --json` prints: llmprune's own forward.
 4. Greedy generate() with the KV cache against recomputing the prefix without a cache.
 5. PEFT: get_peft_model with LoRA on q,k,v,o,gate,up,down_proj (ChatGLM: query_key_value, dense,
    dense_h_to_4h, dense_4h_to_h; the targets llmprune's tune uses), one AdamW step on a window;
    the loss must be finite and the LoRA weights must move.
ChatGLM (model_type "chatglm"): the reference is THUDM's block (fused [Q | K groups | V groups]
query_key_value, consecutive-pair rotary on the first kv_channels/2 dims with base
10000 * rope_ratio, [gate | up] dense_h_to_4h) and the text starts with [gMASK] sop instead of BOS.
Exit status 0 only when every check that ran passed; a check that could not run says SKIPPED.
"""

import argparse
import json
import math
import os
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # noqa: E402  (safetensors reader, RMSNorm/RoPE/linear as HF defines them)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CHATGLM_LORA_TARGETS = ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]


def load_weights(model_dir):
    path = os.path.join(model_dir, "model.safetensors")
    try:
        return reference.load_safetensors(path)
    except ValueError:  # F16/BF16: read through transformers' own loader instead
        from safetensors.torch import load_file

        return {k: v.float() for k, v in load_file(path).items()}


@torch.no_grad()
def shape_driven_forward(P, cfg_json, ids):
    """ids [B, T] -> logits [B, T, V], float32; per-layer sizes from the tensors."""
    B, T = ids.shape
    hidden = cfg_json["hidden_size"]
    hd = cfg_json.get("head_dim") or hidden // cfg_json["num_attention_heads"]
    eps = cfg_json.get("rms_norm_eps", 1e-6)
    theta = cfg_json.get("rope_theta", 10000.0)
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2).float() / hd))
    freqs = torch.outer(torch.arange(T, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()  # [T, hd]
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    x = P["model.embed_tokens.weight"][ids]
    for l in range(cfg_json["num_hidden_layers"]):
        p = f"model.layers.{l}."
        if p + "self_attn.q_proj.weight" in P:
            nh = P[p + "self_attn.q_proj.weight"].shape[0] // hd
            nkv = P[p + "self_attn.k_proj.weight"].shape[0] // hd
            h = reference.rms_norm(x, P[p + "input_layernorm.weight"], eps)
            q = reference.linear(h, P, p + "self_attn.q_proj").view(B, T, nh, hd).transpose(1, 2)
            k = reference.linear(h, P, p + "self_attn.k_proj").view(B, T, nkv, hd).transpose(1, 2)
            v = reference.linear(h, P, p + "self_attn.v_proj").view(B, T, nkv, hd).transpose(1, 2)
            q = q * cos + reference.rotate_half(q) * sin
            k = k * cos + reference.rotate_half(k) * sin
            k = k.repeat_interleave(nh // nkv, dim=1)
            v = v.repeat_interleave(nh // nkv, dim=1)
            att = ((q @ k.transpose(-1, -2)) / math.sqrt(hd)).masked_fill(mask, float("-inf")).softmax(-1)
            x = x + reference.linear((att @ v).transpose(1, 2).reshape(B, T, nh * hd), P, p + "self_attn.o_proj")
        if p + "mlp.gate_proj.weight" in P:
            h = reference.rms_norm(x, P[p + "post_attention_layernorm.weight"], eps)
            m = F.silu(reference.linear(h, P, p + "mlp.gate_proj")) * reference.linear(h, P, p + "mlp.up_proj")
            x = x + reference.linear(m, P, p + "mlp.down_proj")
    x = reference.rms_norm(x, P["model.norm.weight"], eps)
    head = P["lm_head.weight"] if "lm_head.weight" in P else P["model.embed_tokens.weight"]
    return x @ head.t()


@torch.no_grad()
def chatglm_forward(P, cfg_json, ids):
    """ids [B, T] -> logits [B, T, V], float32; THUDM's ChatGLM2/3 block written out from
    /work/shared/guide/CHATGLM.md section 2.3, per-layer sizes from the fused tensors' shapes."""
    B, T = ids.shape
    hd = cfg_json["kv_channels"]
    eps = cfg_json.get("layernorm_epsilon", 1e-5)
    rot = hd // 2
    base = 10000.0 * cfg_json.get("rope_ratio", 1)
    theta = 1.0 / base ** (torch.arange(0, rot, 2).float() / rot)
    ang = torch.outer(torch.arange(T, dtype=torch.float32), theta)  # [T, rot/2]
    cos, sin = ang.cos(), ang.sin()

    def rope(x):  # [B, heads, T, hd]: pairs (2i, 2i+1) of the first rot dims
        x0, x1, rest = x[..., 0:rot:2], x[..., 1:rot:2], x[..., rot:]
        return torch.cat([torch.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], -1).flatten(-2), rest], -1)

    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    x = P["transformer.embedding.word_embeddings.weight"][ids]
    for l in range(cfg_json["num_layers"]):
        p = f"transformer.encoder.layers.{l}."
        if p + "self_attention.query_key_value.weight" in P:
            nh = P[p + "self_attention.dense.weight"].shape[1] // hd
            ng = (P[p + "self_attention.query_key_value.weight"].shape[0] - nh * hd) // (2 * hd)
            h = reference.rms_norm(x, P[p + "input_layernorm.weight"], eps)
            y = reference.linear(h, P, p + "self_attention.query_key_value")
            q = y[..., :nh * hd].view(B, T, nh, hd).transpose(1, 2)
            k = y[..., nh * hd:(nh + ng) * hd].view(B, T, ng, hd).transpose(1, 2)
            v = y[..., (nh + ng) * hd:].view(B, T, ng, hd).transpose(1, 2)
            q, k = rope(q), rope(k)
            k = k.repeat_interleave(nh // ng, dim=1)  # query head h reads group h // (nh / ng)
            v = v.repeat_interleave(nh // ng, dim=1)
            att = ((q @ k.transpose(-1, -2)) / math.sqrt(hd)).masked_fill(mask, float("-inf")).softmax(-1)
            x = x + reference.linear((att @ v).transpose(1, 2).reshape(B, T, nh * hd), P, p + "self_attention.dense")
        if p + "mlp.dense_h_to_4h.weight" in P:
            h = reference.rms_norm(x, P[p + "post_attention_layernorm.weight"], eps)
            u = reference.linear(h, P, p + "mlp.dense_h_to_4h")
            f = u.shape[-1] // 2
            x = x + reference.linear(F.silu(u[..., :f]) * u[..., f:], P, p + "mlp.dense_4h_to_h")
    x = reference.rms_norm(x, P["transformer.encoder.final_layernorm.weight"], eps)
    return x @ P["transformer.output_layer.weight"].t()


def windows(toks, seq, n_windows):
    starts = list(range(0, len(toks) - seq + 1, seq))[:n_windows]
    if not starts:
        raise SystemExit(f"the text has fewer than --seq-len={seq} tokens")
    t = torch.tensor(toks, dtype=torch.int64)
    return torch.stack([t[s:s + seq] for s in starts])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--llmprune", default=os.path.join(ROOT, "build", "llmprune"))
    ap.add_argument("--text", default=os.path.join(ROOT, "..", "shared", "fixtures", "text", "kjv.test.txt"))
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--logit-tol", type=float, default=2e-4)
    ap.add_argument("--nll-rel-tol", type=float, default=1e-5)
    ap.add_argument("--no-peft", action="store_true", help="skip the PEFT step (peft not installed)")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)

    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}"
          f" ({os.path.dirname(transformers.__file__)})")
    failures = []

    def check(name, ok, detail):
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}")
        if not ok:
            failures.append(name)

    with open(os.path.join(args.model_dir, "config.json")) as f:
        cfg_json = json.load(f)
    config = AutoConfig.from_pretrained(args.model_dir, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, trust_remote_code=True, torch_dtype=torch.float32)
    model.eval()
    print(f"loaded {type(model).__module__}.{type(model).__name__} with {type(config).__name__}, "
          f"{sum(p.numel() for p in model.parameters())} parameters, attention {config._attn_implementation}")

    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=os.path.join(args.model_dir, "tokenizer.model"))
    chatglm = cfg_json["model_type"] == "chatglm"
    # ChatGLM's specials follow the SentencePiece pieces: [MASK] [gMASK] [sMASK] sop eop ...
    prefix = [sp.get_piece_size() + 1, sp.get_piece_size() + 3] if chatglm else [cfg_json.get("bos_token_id", 1)]
    with open(args.text, encoding="utf-8") as f:
        toks = prefix + sp.encode(f.read(), out_type=int)
    ids = windows(toks, args.seq_len, args.windows)

    with torch.no_grad():
        logits = model(ids).logits.float()
    ref = (chatglm_forward if chatglm else shape_driven_forward)(load_weights(args.model_dir), cfg_json, ids)
    diff = float((logits - ref).abs().max())
    check("logits vs shape-driven reference", diff <= args.logit_tol, f"max |diff| {diff:.3g} over {tuple(logits.shape)}")

    # The KV cache path (per-layer KV head counts, removed attention): greedy generate() with the
    # cache must pick the tokens that recomputing the whole prefix without a cache picks.
    with torch.no_grad():
        prompt = ids[:1, :16]
        cached = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8, do_sample=False,
                                use_cache=True, pad_token_id=cfg_json.get("eos_token_id", 2))
        seq = prompt
        for _ in range(8):
            seq = torch.cat([seq, model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    check("generate with KV cache vs recomputation", torch.equal(cached, seq), f"8 greedy tokens {cached[0, 16:].tolist()}")

    if os.path.exists(args.llmprune):
        out = subprocess.run([args.llmprune, "eval", args.model_dir, "--ppl", args.text, "--seq-len", str(args.seq_len),
                              "--max-windows", str(args.windows), "--json"], check=True, capture_output=True, text=True)
        ppl = next(iter(json.loads(out.stdout)["ppl"].values()))
        hf_nll = float(reference.next_token_nll(logits, ids).sum())
        rel = abs(hf_nll - ppl["nll_sum"]) / ppl["nll_sum"]
        check("perplexity NLL vs llmprune eval", rel <= args.nll_rel_tol and ppl["tokens_scored"] == ids.shape[0] * (ids.shape[1] - 1),
              f"transformers {hf_nll:.6f}, llmprune {ppl['nll_sum']:.6f} over {ppl['tokens_scored']} tokens (relative {rel:.2g})")
    else:
        print(f"SKIPPED perplexity NLL vs llmprune eval: no llmprune binary at {args.llmprune}")

    if args.no_peft:
        print("SKIPPED PEFT: --no-peft")
    else:
        import peft

        targets = CHATGLM_LORA_TARGETS if chatglm else LORA_TARGETS
        lora = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, target_modules=targets,
                                                          lora_dropout=0.0, task_type="CAUSAL_LM"))
        trainable = {n: p.detach().clone() for n, p in lora.named_parameters() if p.requires_grad}
        opt = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-3)
        lora.train()
        loss = lora(input_ids=ids[:1], labels=ids[:1]).loss
        loss.backward()
        opt.step()
        moved = sum(int(not torch.equal(p, trainable[n])) for n, p in lora.named_parameters() if n in trainable)
        check(f"PEFT {peft.__version__} LoRA step", math.isfinite(float(loss)) and moved > 0,
              f"loss {float(loss):.4f}, {len(trainable)} LoRA tensors on {', '.join(targets)}, {moved} moved")

    print("OK" if not failures else f"FAILED: {', '.join(failures)}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
