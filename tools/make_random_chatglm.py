#!/usr/bin/python3
"""Dev-time: writes a small random ChatGLM3-format model directory (config.json, model.safetensors
in float32, the fixtures' tokenizer.model) for tools/check_hf_load.py and llmprune's CLI.

    /usr/bin/python3 tools/make_random_chatglm.py OUT_DIR [--layers 4] [--linear-bias] [--seed 0]

Sizes: hidden 64, 4 query heads x kv_channels 12 (48 != hidden), 2 groups, ffn 96, rope_ratio 1.5,
add_qkv_bias; padded vocabulary 4160 > the tokenizer's 4096 pieces + ChatGLM's 9 specials.
"""
import argparse
import json
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_bin_fixtures import write_safetensors  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--linear-bias", action="store_true", help="add_bias_linear: dense, dense_h_to_4h, dense_4h_to_h")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    C, N, G, D, F, V = 64, 4, 2, 12, 96, 4160
    cfg = {"model_type": "chatglm", "architectures": ["ChatGLMModel"], "num_layers": args.layers, "hidden_size": C,
           "num_attention_heads": N, "multi_query_attention": True, "multi_query_group_num": G, "kv_channels": D,
           "ffn_hidden_size": F, "padded_vocab_size": V, "seq_length": 256, "layernorm_epsilon": 1e-5,
           "rmsnorm": True, "post_layer_norm": True, "apply_residual_connection_post_layernorm": False,
           "add_qkv_bias": True, "add_bias_linear": args.linear_bias, "rope_ratio": 1.5,
           "tie_word_embeddings": False, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32"}
    g = torch.Generator().manual_seed(args.seed)

    def rnd(*shape, scale=0.2, offset=0.0):
        return offset + scale * torch.randn(*shape, generator=g)

    sd = {"transformer.embedding.word_embeddings.weight": rnd(V, C, scale=0.8)}
    for i in range(args.layers):
        p = f"transformer.encoder.layers.{i}."
        sd[p + "input_layernorm.weight"] = rnd(C, offset=1.0)
        sd[p + "self_attention.query_key_value.weight"] = rnd((N + 2 * G) * D, C)
        sd[p + "self_attention.query_key_value.bias"] = rnd((N + 2 * G) * D)
        sd[p + "self_attention.dense.weight"] = rnd(C, N * D)
        sd[p + "post_attention_layernorm.weight"] = rnd(C, offset=1.0)
        sd[p + "mlp.dense_h_to_4h.weight"] = rnd(2 * F, C)
        sd[p + "mlp.dense_4h_to_h.weight"] = rnd(C, F)
        if args.linear_bias:
            sd[p + "self_attention.dense.bias"] = rnd(C)
            sd[p + "mlp.dense_h_to_4h.bias"] = rnd(2 * F)
            sd[p + "mlp.dense_4h_to_h.bias"] = rnd(C)
    sd["transformer.encoder.final_layernorm.weight"] = rnd(C, offset=1.0)
    sd["transformer.output_layer.weight"] = rnd(V, C)
    os.makedirs(args.out, exist_ok=True)
    write_safetensors(os.path.join(args.out, "model.safetensors"), {k: v.contiguous() for k, v in sd.items()})
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    shutil.copy(os.path.join(ROOT, "..", "shared", "fixtures", "models", "kjv-llama-mha", "tokenizer.model"), args.out)
    print(f"wrote {args.out}: {sum(v.numel() for v in sd.values())} parameters")


if __name__ == "__main__":
    main()
