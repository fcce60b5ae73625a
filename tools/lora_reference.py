#!/usr/bin/python3
"""PyTorch oracle for LoRA training: writes tests/golden/lora_<model>.lpgd for tests/lora_test.cpp.

Run with Debian's Python (torch 1.13 CPU, numpy, sentencepiece):
    /usr/bin/python3 tools/lora_reference.py [--shared DIR] [--out DIR]

The model is the plain-torch LLaMA of tools/reference.py with a LoRA branch on every
projection, written out as PEFT's LoraLayer computes it (dropout 0 here, so the run is exactly
reproducible):
    y = x W^T + (alpha / r) * (x A^T) B^T,   A [r, in], B [out, r] = 0 at the start.
Training is what `llmprune tune` does for one optimizer step:
  * a step = several micro-batches (each right-padded with id 0 to its longest example);
    position t predicts labels[t+1] (-1 = not learned); the step loss is the mean NLL over every
    learned token of the step (sum over micro-batches / total learned tokens);
  * torch.nn.utils.clip_grad_norm_(max_norm) over all A and B;
  * torch.optim.AdamW(lr, betas, eps, weight_decay) with transformers' linear warm-up/decay
    schedule (LambdaLR; step s uses lr * lambda(s), so the first step has lr 0 when warm-up > 0).

Entries (all written in float64 unless noted):
  cfg/*                       r, alpha, lr, weight_decay, beta1, beta2, eps, max_grad_norm,
                              warmup, total_steps, micro_batch, step_examples
  data/ids  i32 [E, Lmax]     examples, right-padded with 0;  data/labels i32 [E, Lmax] (-1 pad)
  data/len  i32 [E]           example lengths
  init/A/<layer>/<role> f32   initial A (B starts at 0), role in q,k,v,o,gate,up,down
  step/loss  [K]              loss of each step (before its update)
  step/grad_norm [K]          total gradient norm of each step (before clipping)
  step/lr [K]                 learning rate used by each step
  final/loss                  mean NLL over all examples after K steps (one pass, same definition)
  final/A/<layer>/<role>, final/B/<layer>/<role>  f32 adapters after K steps (layers 0 and last)
"""

import argparse
import os
import sys

import numpy as np
import sentencepiece as spm
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden  # noqa: E402
import reference as ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROLES = ["q", "k", "v", "o", "gate", "up", "down"]
MODULE = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
          "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}

R, ALPHA = 8, 16.0
LR, WD, BETAS, EPS, MAX_NORM = 2e-3, 0.01, (0.9, 0.999), 1e-8, 1.0
WARMUP, STEPS = 1, 4
MICRO, STEP_EXAMPLES = 2, 4
LENGTHS = [18, 11, 24, 7, 16, 20, 9, 13, 22, 5, 17, 12, 24, 15, 10, 19]
MASKED = [0, 3, 6]  # example i masks its first MASKED[i % 3] labels (a "prompt")


def lora_forward(P, cfg, ids, lora):
    """ids int64 [B, T] -> logits [B, T, V]; lora: {(layer, role): (A, B)}."""
    s = ALPHA / R
    B, T = ids.shape
    hd, nh, nkv = cfg.head_dim, cfg.n_heads, cfg.n_kv
    cos, sin = ref.rope_cos_sin(cfg, T)
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)

    def lin(x, l, role):
        y = x @ P[f"model.layers.{l}.{MODULE[role]}.weight"].t()
        a, b = lora[(l, role)]
        return y + s * ((x @ a.t()) @ b.t())

    x = P["model.embed_tokens.weight"][ids]
    for l in range(cfg.n_layers):
        p = f"model.layers.{l}."
        h = ref.rms_norm(x, P[p + "input_layernorm.weight"], cfg.eps)
        q = lin(h, l, "q").view(B, T, nh, hd).transpose(1, 2)
        k = lin(h, l, "k").view(B, T, nkv, hd).transpose(1, 2)
        v = lin(h, l, "v").view(B, T, nkv, hd).transpose(1, 2)
        q = q * cos + ref.rotate_half(q) * sin
        k = k * cos + ref.rotate_half(k) * sin
        k = k.repeat_interleave(cfg.rep, dim=1)
        v = v.repeat_interleave(cfg.rep, dim=1)
        att = (q @ k.transpose(-1, -2)) / (hd ** 0.5)
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        o = (att @ v).transpose(1, 2).reshape(B, T, nh * hd)
        x = x + lin(o, l, "o")
        h = ref.rms_norm(x, P[p + "post_attention_layernorm.weight"], cfg.eps)
        m = F.silu(lin(h, l, "gate")) * lin(h, l, "up")
        x = x + lin(m, l, "down")
    x = ref.rms_norm(x, P["model.norm.weight"], cfg.eps)
    head = P["model.embed_tokens.weight"] if cfg.tied else P["lm_head.weight"]
    return x @ head.t()


def batch_nll_sum(P, cfg, lora, exs):
    """Sum of NLL over learned targets of a micro-batch (right-padded)."""
    T = max(len(e[0]) for e in exs)
    ids = torch.zeros(len(exs), T, dtype=torch.int64)
    tgt = torch.full((len(exs), T), -100, dtype=torch.int64)
    for b, (i, lab) in enumerate(exs):
        ids[b, :len(i)] = torch.tensor(i)
        for t in range(len(i) - 1):
            if lab[t + 1] >= 0:
                tgt[b, t] = lab[t + 1]
    logits = lora_forward(P, cfg, ids, lora)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100, reduction="sum")


def n_scored(exs):
    return sum(sum(1 for x in lab[1:] if x >= 0) for _, lab in exs)


def linear_lambda(step):
    if step < WARMUP:
        return float(step) / float(max(1, WARMUP))
    return max(0.0, float(STEPS - step) / float(max(1, STEPS - WARMUP)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(ROOT), "shared"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "golden"))
    ap.add_argument("--model", default="kjv-llama-mha")
    args = ap.parse_args()
    torch.manual_seed(1234)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    mdir = os.path.join(args.shared, "fixtures", "models", args.model)
    cfg = ref.Config(os.path.join(mdir, "config.json"))
    P = ref.load_safetensors(os.path.join(mdir, "model.safetensors"))
    sp = spm.SentencePieceProcessor(model_file=os.path.join(mdir, "tokenizer.model"))
    with open(os.path.join(args.shared, "fixtures", "text", "kjv.train.txt"), encoding="utf-8") as f:
        text = f.read(20000)
    stream = sp.encode(text)
    examples, off = [], 0
    for i, n in enumerate(LENGTHS):
        ids = [1] + stream[off:off + n - 1]
        off += n - 1
        lab = list(ids)
        for t in range(min(MASKED[i % 3], n)):
            lab[t] = -1
        examples.append((ids, lab))

    # Adapters: A like PEFT's kaiming_uniform_(a=sqrt(5)) (any init works: the test loads it).
    lora, params = {}, []
    for l in range(cfg.n_layers):
        for role in ROLES:
            W = P[f"model.layers.{l}.{MODULE[role]}.weight"]
            out_f, in_f = W.shape
            bound = 1.0 / (in_f ** 0.5)
            a = ((torch.rand(R, in_f) * 2 - 1) * bound).requires_grad_(True)
            b = torch.zeros(out_f, R, requires_grad=True)
            lora[(l, role)] = (a, b)
            params += [a, b]
    init = {k: v[0].detach().clone() for k, v in lora.items()}

    opt = torch.optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_lambda)
    losses, norms, lrs = [], [], []
    for s in range(STEPS):
        step_ex = examples[s * STEP_EXAMPLES:(s + 1) * STEP_EXAMPLES]
        total = n_scored(step_ex)
        opt.zero_grad()
        loss_sum = 0.0
        for j in range(0, len(step_ex), MICRO):
            mb = step_ex[j:j + MICRO]
            nll = batch_nll_sum(P, cfg, lora, mb)
            (nll / total).backward()
            loss_sum += nll.item()
        lrs.append(opt.param_groups[0]["lr"])
        norm = torch.nn.utils.clip_grad_norm_(params, MAX_NORM)
        norms.append(float(norm))
        losses.append(loss_sum / total)
        opt.step()
        sched.step()
        print(f"step {s}: loss {losses[-1]:.6f} grad_norm {norms[-1]:.6f} lr {lrs[-1]:.3g}")
    with torch.no_grad():
        tot = sum(batch_nll_sum(P, cfg, lora, examples[i:i + MICRO]).item() for i in range(0, len(examples), MICRO))
        final_loss = tot / n_scored(examples)
    print(f"final loss {final_loss:.6f}")

    Lmax = max(LENGTHS)
    ids_arr = np.zeros((len(examples), Lmax), dtype=np.int32)
    lab_arr = np.full((len(examples), Lmax), -1, dtype=np.int32)
    for i, (ids, lab) in enumerate(examples):
        ids_arr[i, :len(ids)] = ids
        lab_arr[i, :len(lab)] = lab
    entries = [
        ("cfg/r", np.float64(R)), ("cfg/alpha", np.float64(ALPHA)), ("cfg/lr", np.float64(LR)),
        ("cfg/weight_decay", np.float64(WD)), ("cfg/beta1", np.float64(BETAS[0])), ("cfg/beta2", np.float64(BETAS[1])),
        ("cfg/eps", np.float64(EPS)), ("cfg/max_grad_norm", np.float64(MAX_NORM)), ("cfg/warmup", np.float64(WARMUP)),
        ("cfg/total_steps", np.float64(STEPS)), ("cfg/micro_batch", np.float64(MICRO)),
        ("cfg/step_examples", np.float64(STEP_EXAMPLES)),
        ("data/ids", ids_arr), ("data/labels", lab_arr), ("data/len", np.array(LENGTHS, dtype=np.int32)),
    ]
    for (l, role), a in init.items():
        entries.append((f"init/A/{l}/{role}", a.numpy().astype(np.float32)))
    entries += [("step/loss", np.array(losses)), ("step/grad_norm", np.array(norms)), ("step/lr", np.array(lrs)),
                ("final/loss", np.float64(final_loss))]
    for l in (0, cfg.n_layers - 1):
        for role in ROLES:
            a, b = lora[(l, role)]
            entries.append((f"final/A/{l}/{role}", a.detach().numpy().astype(np.float32)))
            entries.append((f"final/B/{l}/{role}", b.detach().numpy().astype(np.float32)))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"lora_{args.model}.lpgd")
    golden.write(path, entries)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
