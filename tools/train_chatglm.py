#!/usr/bin/python3
"""Dev-time: train the kjv-chatglm3 fixture (a small ChatGLM3-format model) on kjv.train.txt.

Run with Debian's Python (torch 1.13 CPU, numpy, sentencepiece), one thread:
    /usr/bin/python3 tools/train_chatglm.py [--steps 1500] [--out tests/data/models/kjv-chatglm3]

The model is tools/chatglm_reference.py's forward (CHATGLM.md §2) with trainable parameters
under THUDM's key names. Data: the fixtures' SentencePiece tokenizer (4096 pieces; the 9
ChatGLM specials llmprune appends follow at 4096..4104), kjv.train.txt tokenised once as one
stream after the family prefix [gMASK] sop, random 128-token windows (seeded). The result is
written as THUDM's chatglm layout in bf16 safetensors with config.json and tokenizer.model.
"""

import argparse
import json
import math
import os
import shutil
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chatglm_reference as glm  # noqa: E402
import reference  # noqa: E402  (bf16 safetensors writer)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIG = {
    "architectures": ["ChatGLMModel"], "model_type": "chatglm",
    "add_bias_linear": False, "add_qkv_bias": True, "apply_query_key_layer_scaling": True,
    "apply_residual_connection_post_layernorm": False, "attention_dropout": 0.0, "attention_softmax_in_fp32": True,
    "bias_dropout_fusion": True, "ffn_hidden_size": 704, "fp32_residual_connection": False, "hidden_dropout": 0.0,
    "hidden_size": 256, "kv_channels": 32, "layernorm_epsilon": 1e-05, "multi_query_attention": True,
    "multi_query_group_num": 2, "num_attention_heads": 8, "num_layers": 6, "original_rope": True,
    "padded_vocab_size": 4160, "post_layer_norm": True, "rmsnorm": True, "seq_length": 2048,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "eos_token_id": 2, "pad_token_id": 0,
}


def init_params(c, seed):
    """N(0, 0.02) matrices, the residual outputs (dense, dense_4h_to_h) scaled by 1/sqrt(2L), zero
    qkv bias, unit norms."""
    g = torch.Generator().manual_seed(seed)
    H, L, N, G, d, Fw, V = (c["hidden_size"], c["num_layers"], c["num_attention_heads"], c["multi_query_group_num"],
                            c["kv_channels"], c["ffn_hidden_size"], c["padded_vocab_size"])
    std, out_std = 0.02, 0.02 / math.sqrt(2 * L)

    def normal(shape, s):
        return torch.randn(*shape, generator=g) * s

    P = {"transformer.embedding.word_embeddings.weight": normal((V, H), std),
         "transformer.encoder.final_layernorm.weight": torch.ones(H),
         "transformer.output_layer.weight": normal((V, H), std)}
    for l in range(L):
        p = f"transformer.encoder.layers.{l}."
        P[p + "input_layernorm.weight"] = torch.ones(H)
        P[p + "self_attention.query_key_value.weight"] = normal(((N + 2 * G) * d, H), std)
        P[p + "self_attention.query_key_value.bias"] = torch.zeros((N + 2 * G) * d)
        P[p + "self_attention.dense.weight"] = normal((H, N * d), out_std)
        P[p + "post_attention_layernorm.weight"] = torch.ones(H)
        P[p + "mlp.dense_h_to_4h.weight"] = normal((2 * Fw, H), std)
        P[p + "mlp.dense_4h_to_h.weight"] = normal((H, Fw), out_std)
    return {k: v.requires_grad_(True) for k, v in P.items()}


@torch.no_grad()
def eval_ppl(P, cfg, toks, seq=128, max_windows=None):
    nll, cnt = 0.0, 0
    n = (len(toks) // seq) if max_windows is None else min(len(toks) // seq, max_windows)
    t = torch.tensor(toks[:n * seq], dtype=torch.int64).view(n, seq)
    for i in range(0, n, 32):
        ids = t[i:i + 32]
        v = reference.next_token_nll(glm.forward(P, cfg, ids), ids)
        nll += float(v.sum())
        cnt += v.numel()
    return math.exp(nll / cnt)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "models", "kjv-chatglm3"))
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2.5e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--seed", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    import sentencepiece as spm

    tok_model = os.path.join(args.shared, "fixtures", "models", "kjv-llama-mha", "tokenizer.model")
    sp = spm.SentencePieceProcessor(model_file=tok_model)
    tdir = os.path.join(args.shared, "fixtures", "text")
    train = glm.chatglm_tokenize_file(sp, os.path.join(tdir, "kjv.train.txt"))
    test = glm.chatglm_tokenize_file(sp, os.path.join(tdir, "kjv.test.txt"))
    train_t = torch.tensor(train, dtype=torch.int64)
    cfg = glm.Config(CONFIG)
    P = init_params(CONFIG, args.seed)
    n_params = sum(v.numel() for v in P.values())
    print(f"train tokens {len(train)}, test tokens {len(test)}, params {n_params}", flush=True)
    decay = [v for k, v in P.items() if v.dim() == 2]
    no_decay = [v for k, v in P.items() if v.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    for step in range(args.steps):
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for grp in opt.param_groups:
            grp["lr"] = lr
        starts = rng.integers(0, len(train) - args.seq, size=args.batch)
        ids = torch.stack([train_t[s:s + args.seq] for s in starts])
        loss = reference.causal_lm_loss(glm.forward(P, cfg, ids), ids)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(P.values()), 1.0)
        opt.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.4f} lr {lr:.2e} {time.time() - t0:.0f}s", flush=True)
    train_s = time.time() - t0

    os.makedirs(args.out, exist_ok=True)
    tensors = [(k, v.detach().numpy().astype(np.float32)) for k, v in P.items()]
    reference.write_safetensors_bf16(os.path.join(args.out, "model.safetensors"), tensors)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        f.write(json.dumps(CONFIG, indent=2) + "\n")
    shutil.copyfile(tok_model, os.path.join(args.out, "tokenizer.model"))
    # PPL of what was written (bf16 weights widened to f32), the convention of llmprune eval.
    Pw = reference.load_safetensors(os.path.join(args.out, "model.safetensors"))
    ppl = eval_ppl(Pw, cfg, test)
    print(f"done: {args.steps} steps x {args.batch} x {args.seq} tokens in {train_s:.0f}s; "
          f"params {n_params}; kjv.test PPL (128-token windows, bf16 weights) {ppl:.4f}", flush=True)


if __name__ == "__main__":
    main()
