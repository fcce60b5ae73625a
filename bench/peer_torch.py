#!/usr/bin/python3
"""PyTorch peer for `llmprune prune`: the same Taylor importance computed the way the reference
implementation (LLM-Pruner) does it, next to ours on the same model, in one run.

Run with Debian's Python (torch 1.13 CPU, numpy, sentencepiece):
    /usr/bin/python3 bench/peer_torch.py [--build build] [--work /tmp/llmprune-peer] [--taylor element1]

The model is the 1B-class shape (hidden 2048, 22 layers, GQA 32/4, MLP 5632, vocab 32000),
randomly initialised and written once in bf16 safetensors (bench_make_random_checkpoint). Ours
prunes it as stored (bf16, streamed layer by layer). The peer loads it as the reference does:
every weight converted to an fp32 torch parameter with requires_grad, HF LLaMA semantics written
out in plain torch (tools/reference.py), `loss.backward()` over the calibration batch, and for
element2 first one backward per sample accumulating grad^2 / n into acc_grad (LLM-Pruner's
param_mix loop). Both use the same calibration windows (sequential, 10 x 64 tokens of the KJV
training text, llama2 tokenizer) and score the same units (KV groups and MLP channels of the
targeted layers, member scores summed), so the scores are compared too.

With --minimal the peer is the least a PyTorch user would write: plain `loss.backward()` and the
elementwise salience |w * g| of the targeted layers' weights, no group reductions in Python (no
scores to compare then); the figure of merit is our whole prune against that gradient pass alone.
--compute passes `--compute fp32|bf16` to ours.

Each side runs in its own process; time is wall clock, memory the process's peak RSS (VmHWM).
"""

import argparse
import json
import math
import os
import resource
import shutil
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared")
TOKENIZER = os.path.join(SHARED, "fixtures", "tokenizers", "llama2", "tokenizer.model")
CALIB_TEXT = os.path.join(SHARED, "fixtures", "text", "kjv.train.txt")


def vmhwm():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def parse_range(s, n):
    a, b = s.split(":")
    return range(int(a) if a else 0, int(b) if b else n)


# ----------------------------------------------------------------------------- the peer

def peer(args):
    import numpy as np
    import sentencepiece as spm
    import torch

    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from reference import Config, causal_lm_loss, forward  # HF LLaMA semantics in plain torch

    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.time()
    cfg = Config(os.path.join(args.model, "config.json"))
    # Load as the reference does: an fp32 model (bf16 on disk -> fp32 parameters).
    path = os.path.join(args.model, "model.safetensors")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    base = 8 + n
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    P = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        if info["dtype"] == "BF16":
            u16 = raw[base + b:base + e].view("<u2")
            f32 = (u16.astype(np.uint32) << 16).view(np.float32)
        elif info["dtype"] == "F32":
            f32 = np.array(raw[base + b:base + e].view("<f4"))
        else:
            raise ValueError(f"{name}: {info['dtype']}")
        P[name] = torch.from_numpy(f32.reshape(info["shape"])).requires_grad_(True)
    del raw
    sp = spm.SentencePieceProcessor(model_file=os.path.join(args.model, "tokenizer.model"))
    with open(args.calib, encoding="utf-8") as f:
        stream = [1] + sp.encode(f.read(), out_type=int)
    B, T = args.samples, args.seq_len
    ids = torch.tensor(stream[:B * T], dtype=torch.int64).view(B, T)  # sequential windows
    t_load = time.time() - t0

    t1 = time.time()
    params = list(P.values())
    if args.taylor == "element2":
        # LLM-Pruner param_mix: one backward per sample, grad^2 / n accumulated in acc_grad.
        acc = {}
        for j in range(B):
            loss = causal_lm_loss(forward(P, cfg, ids[j:j + 1]), ids[j:j + 1])
            loss.backward()
            for name, p in P.items():
                g2 = p.grad * p.grad / B
                if name in acc:
                    acc[name] += g2
                else:
                    acc[name] = g2
                p.grad = None
            del loss
    loss = causal_lm_loss(forward(P, cfg, ids), ids)
    loss.backward()
    calib_loss = float(loss)
    if args.minimal:
        # Elementwise salience of the targeted layers' weights; nothing reduced.
        with torch.no_grad():
            sal = [(w * w.grad).abs() for name, w in P.items()
                   if name.startswith("model.layers.") and int(name.split(".")[2]) in parse_range(args.layers, cfg.n_layers)
                   and w.dim() == 2]
        t_imp = time.time() - t1
        del sal
        print(json.dumps({"load_seconds": t_load, "importance_seconds": t_imp, "seconds": time.time() - t0,
                          "peak_rss_bytes": vmhwm(), "calib_loss": calib_loss, "threads": torch.get_num_threads()}))
        return

    # Member salience summed over each unit's slices, summed over the group's members.
    layers = parse_range(args.layers, cfg.n_layers)
    hd, rep = cfg.head_dim, cfg.rep
    scores = []
    with torch.no_grad():
        def sal(name):
            w, g = P[name], P[name].grad
            if args.taylor == "element1":
                return (w * g).abs()
            return (w * g - 0.5 * w * w * acc[name]).abs()

        for l in layers:
            p = f"model.layers.{l}."
            q = sal(p + "self_attn.q_proj.weight").sum(1).view(cfg.n_kv, rep * hd).sum(1)
            k = sal(p + "self_attn.k_proj.weight").sum(1).view(cfg.n_kv, hd).sum(1)
            v = sal(p + "self_attn.v_proj.weight").sum(1).view(cfg.n_kv, hd).sum(1)
            o = sal(p + "self_attn.o_proj.weight").sum(0).view(cfg.n_kv, rep * hd).sum(1)
            kind = "kv_group" if cfg.n_kv != cfg.n_heads else "head"
            for i, s in enumerate((q + k + v + o).double().tolist()):
                scores.append({"layer": l, "kind": kind, "index": i, "score": s})
            mlp = (sal(p + "mlp.gate_proj.weight").sum(1) + sal(p + "mlp.up_proj.weight").sum(1) +
                   sal(p + "mlp.down_proj.weight").sum(0))
            for i, s in enumerate(mlp.double().tolist()):
                scores.append({"layer": l, "kind": "mlp", "index": i, "score": s})
    t_imp = time.time() - t1
    with open(args.scores_out, "w") as f:
        json.dump(scores, f)
    print(json.dumps({"load_seconds": t_load, "importance_seconds": t_imp, "seconds": time.time() - t0,
                      "peak_rss_bytes": vmhwm(), "calib_loss": calib_loss, "threads": torch.get_num_threads()}))


# ----------------------------------------------------------------------------- the driver

def run(cmd, **kw):
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, **kw)


def time_v(cmd):
    """Runs cmd under /usr/bin/time -v; returns (wall seconds, max RSS bytes, stdout)."""
    t0 = time.time()
    r = subprocess.run(["/usr/bin/time", "-v"] + cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.time() - t0
    rss = 0
    for line in r.stderr.splitlines():
        if "Maximum resident set size" in line:
            rss = int(line.split(":")[1]) * 1024
    return wall, rss, r.stdout


def compare(ours_path, peer_path):
    ours = {(u["layer"], u["kind"], u["index"]): u["score"] for u in json.load(open(ours_path))}
    peer_s = {(u["layer"], u["kind"], u["index"]): u["score"] for u in json.load(open(peer_path))}
    keys = sorted(set(ours) & set(peer_s))
    worst = 0.0
    for k in keys:
        a, b = ours[k], peer_s[k]
        worst = max(worst, abs(a - b) / max(abs(b), 1e-30))
    # Same units removed? The 25% lowest per (layer, kind) on each side.
    groups = {}
    for k in keys:
        groups.setdefault(k[:2], []).append(k)
    same = total = 0
    for g, ks in groups.items():
        n = len(ks) // 4
        lo_o = set(sorted(ks, key=lambda k: ours[k])[:n])
        lo_p = set(sorted(ks, key=lambda k: peer_s[k])[:n])
        same += len(lo_o & lo_p)
        total += n
    return len(keys), len(ours), worst, same, total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--work", default="/tmp/llmprune-peer")
    ap.add_argument("--taylor", default="element1", choices=["element1", "element2"])
    ap.add_argument("--layers", default="3:19", help="targeted layers A:B (block pruning of heads and MLP channels)")
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--keep", action="store_true", help="keep the model directory")
    ap.add_argument("--minimal", action="store_true", help="peer: plain loss.backward() + elementwise |w*g| only")
    ap.add_argument("--compute", default="fp32", choices=["fp32", "bf16"], help="ours: --compute")
    ap.add_argument("--peer-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--calib", default=CALIB_TEXT, help=argparse.SUPPRESS)
    ap.add_argument("--scores-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer_only:
        return peer(args)

    os.makedirs(args.work, exist_ok=True)
    model = os.path.join(args.work, "model-1b")
    if not os.path.exists(os.path.join(model, "model.safetensors")):
        run([os.path.join(args.build, "bench_make_random_checkpoint"), model, "1b", "bf16", "1"])
    shutil.copy(TOKENIZER, os.path.join(model, "tokenizer.model"))
    with open("/proc/loadavg") as f:
        load_before = f.read().split()[:3]

    # Ours.
    ours_scores = os.path.join(args.work, "ours-importance.json")
    out = os.path.join(args.work, "pruned")
    cmd = [os.path.join(args.build, "llmprune"), "prune", model, "--out", out, "--force", "--strategy", "block",
           "--importance", "taylor", "--taylor", args.taylor, "--calib", args.calib, "--calib-samples", str(args.samples),
           "--calib-seq-len", str(args.seq_len), "--calib-sampling", "sequential", "--attn-layers", args.layers,
           "--mlp-layers", args.layers, "--ratio", "0.25", "--save-importance", ours_scores, "--json",
           "--compute", args.compute]
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    o_wall, o_rss, o_out = time_v(cmd)
    pj = json.loads(o_out)

    # The peer, in its own process.
    peer_scores = os.path.join(args.work, "peer-importance.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--peer-only", "--model", model, "--calib", args.calib,
           "--scores-out", peer_scores, "--taylor", args.taylor, "--layers", args.layers, "--samples", str(args.samples),
           "--seq-len", str(args.seq_len)] + (["--minimal"] if args.minimal else [])
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    p_wall, p_rss, p_out = time_v(cmd)
    pp = json.loads(p_out.strip().splitlines()[-1])
    with open("/proc/loadavg") as f:
        load_after = f.read().split()[:3]

    gb = 1 << 30
    if args.minimal:
        print(f"\n1B-class model (hidden 2048, 22 layers, GQA 32/4, MLP 5632, vocab 32000), taylor {args.taylor}, "
              f"{args.samples} x {args.seq_len} tokens, layers {args.layers}, {os.cpu_count()} cores, "
              f"load average {' '.join(load_before)} before / {' '.join(load_after)} after")
        print(f"llmprune prune --compute {args.compute}, whole run: {o_wall:.1f}s wall "
              f"(importance {pj['importance_seconds']:.1f}s), peak RSS {o_rss / gb:.2f} GiB")
        print(f"minimal PyTorch peer (fp32): loss.backward() + |w*g| {pp['importance_seconds']:.1f}s "
              f"(whole process {p_wall:.1f}s), peak RSS {p_rss / gb:.2f} GiB")
        print(f"peer gradient pass / our whole prune = {pp['importance_seconds'] / o_wall:.2f}x (target >= 2x); "
              f"our peak RSS / peer's = {o_rss / p_rss:.2f}x (target <= 0.35x)")
        print(f"calibration loss: ours {pj['calib_loss']:.5f}, peer {pp['calib_loss']:.5f}")
        if not args.keep:
            shutil.rmtree(model, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        return
    n_cmp, n_ours, worst, same, total = compare(ours_scores, peer_scores)
    print(f"\n1B-class model (hidden 2048, 22 layers, GQA 32/4, MLP 5632, vocab 32000), taylor {args.taylor}, "
          f"{args.samples} x {args.seq_len} tokens, layers {args.layers}, {os.cpu_count()} cores, "
          f"load average {' '.join(load_before)} before / {' '.join(load_after)} after")
    print(f"{'':28s} {'llmprune (' + args.compute + ', streamed)':>26s} {'PyTorch peer (fp32)':>22s} {'ratio':>8s}")
    print(f"{'wall time, whole run':28s} {o_wall:25.1f}s {p_wall:21.1f}s {p_wall / o_wall:7.2f}x")
    print(f"{'  gradients + scores':28s} {pj['importance_seconds']:25.1f}s {pp['importance_seconds']:21.1f}s "
          f"{pp['importance_seconds'] / pj['importance_seconds']:7.2f}x")
    print(f"{'peak RSS':28s} {o_rss / gb:23.2f}GiB {p_rss / gb:19.2f}GiB {o_rss / p_rss:7.2f}x")
    print(f"{'calibration loss':28s} {pj['calib_loss']:26.5f} {pp['calib_loss']:22.5f}")
    print(f"scores: {n_cmp} units compared (of {n_ours}), max relative difference {worst:.2e}; "
          f"lowest-25% units agree on {same}/{total}")
    print(f"ours: {pj.get('gradient_gflops_per_s', 0):.1f} GFLOP/s in the gradient pass, "
          f"memory estimate {pj['memory_estimate']['total_bytes'] / gb:.2f} GiB")
    if not args.keep:
        shutil.rmtree(model, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
