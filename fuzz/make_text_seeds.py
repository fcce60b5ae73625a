#!/usr/bin/env python3
"""Writes the hand-made part of the seed corpora under fuzz/corpus/ (small files only).

  config/         config.json variants (every rope_scaling kind, GQA, qwen2, eos lists, ragged)
  index/          model.safetensors.index.json for the two-shard scratch model of index_fuzz
  sentencepiece/  the KJV fixture's tokenizer.model (65 KB) and two hand-encoded tiny protos
  tokenizer_json/ tokenizer.json files shrunk to ~300 pieces from tests/data/tokenizers
  tasks/          one layout byte + the first items of each fixture task file (see tasks_fuzz.cpp)
  alpaca/         one options byte + Alpaca JSON / JSON lines / text (see alpaca_fuzz.cpp)

Usage: python3 fuzz/make_text_seeds.py   (from the repository root; re-run after changing it)
The generated binary seeds (safetensors, GGUF) come from make_fuzz_seeds (make_seeds.cpp).
"""
import json
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus")
SHARED = os.path.join(ROOT, "..", "shared", "fixtures")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- config.json
base = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256,
    "intermediate_size": 704, "num_hidden_layers": 6, "num_attention_heads": 8,
    "num_key_value_heads": 2, "vocab_size": 4096, "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "hidden_act": "silu",
    "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
}
variants = {
    "llama-gqa-tied": {},
    "llama-mha": {"num_key_value_heads": 8, "tie_word_embeddings": False},
    "llama3-rope": {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                    "eos_token_id": [128001, 128008, 128009], "rope_theta": 500000.0},
    "linear-rope": {"rope_scaling": {"type": "linear", "factor": 2.0}, "head_dim": 64},
    "mistral": {"model_type": "mistral", "sliding_window": 4096, "use_sliding_window": True,
                "rope_scaling": None, "bos_token_id": None},
    "qwen2": {"model_type": "qwen2", "use_sliding_window": False, "sliding_window": 32768,
              "rope_theta": 1000000.0, "rope_scaling": {"type": "default"}},
    "ragged": {"llmprune_layers": [{"num_attention_heads": 8, "num_key_value_heads": 2, "intermediate_size": 704},
                                   {"num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 300}],
               "llmprune_ragged_note": "layers differ in size"},
}
for name, edit in variants.items():
    c = dict(base)
    c.update(edit)
    put("config", name + ".json", json.dumps(c, indent=2))

# ---------------------------------------------------------------- index.json
names_1 = ["model.embed_tokens.weight"]
p = "model.layers.0."
names_2 = [p + n for n in ["input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
                           "self_attn.v_proj.weight", "self_attn.o_proj.weight", "post_attention_layernorm.weight",
                           "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"]] + ["model.norm.weight"]
wm = {n: "model-00001-of-00002.safetensors" for n in names_1}
wm.update({n: "model-00002-of-00002.safetensors" for n in names_2})
put("index", "two-shards.json", json.dumps({"metadata": {"total_size": 12992}, "weight_map": wm}, indent=2))
put("index", "rotary-buffer.json", json.dumps({"weight_map": dict(wm, **{
    "model.layers.0.self_attn.rotary_emb.inv_freq": "model-00002-of-00002.safetensors"})}))

# ---------------------------------------------------------------- SentencePiece
def varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(num, wire, payload):
    key = varint((num << 3) | wire)
    if wire == 0:
        return key + varint(payload)
    if wire == 2:
        return key + varint(len(payload)) + payload
    if wire == 5:
        return key + struct.pack("<f", payload)
    raise ValueError(wire)


def piece(text, score, typ):
    return field(1, 2, field(1, 2, text.encode()) + field(2, 5, score) + field(3, 0, typ))


def sp_model(model_type, pieces, byte_fallback):
    m = b"".join(piece(*x) for x in pieces)
    trainer = field(3, 0, model_type) + field(4, 0, len(pieces)) + (field(35, 0, 1) if byte_fallback else b"")
    m += field(2, 2, trainer)
    m += field(3, 2, field(1, 2, b"identity") + field(3, 0, 1) + field(4, 0, 1) + field(5, 0, 1))
    return m


words = ["\u2581the", "\u2581and", "\u2581God", "th", "he", "an", "nd", "\u2581", "e", "t", "h", "a", "n", "d", "G", "o",
         "r", "i", "s", "."]
unigram = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3)] + [(w, -1.0 - i * 0.5, 1) for i, w in enumerate(words)]
put("sentencepiece", "tiny-unigram.model", sp_model(1, unigram, False))
bpe = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3)] + [("<0x%02X>" % b, 0.0, 6) for b in range(256)] + \
      [(w, -float(i), 1) for i, w in enumerate(words)]
put("sentencepiece", "tiny-bpe-bytefallback.model", sp_model(2, bpe, True))
kjv = os.path.join(SHARED, "models", "kjv-llama-gqa-tied", "tokenizer.model")
if os.path.exists(kjv):
    put("sentencepiece", "kjv.model", open(kjv, "rb").read())

# ---------------------------------------------------------------- tokenizer.json
TOK = os.path.join(ROOT, "tests", "data", "tokenizers")


def shrink(j, keep):
    m = j["model"]
    vocab = {k: v for k, v in m["vocab"].items() if v < keep}
    merges = []
    for mg in m["merges"]:
        a, b = mg if isinstance(mg, list) else mg.split(" ", 1)
        if a in vocab and b in vocab and (a + b) in vocab:
            merges.append(mg)
    m["vocab"] = vocab
    m["merges"] = merges
    j["added_tokens"] = [t for t in j.get("added_tokens", []) if t["id"] < keep or len(j["added_tokens"]) < 8][:8]
    return j


for name, keep in [("gpt2", 320), ("mistral", 330), ("llama3", 320)]:
    f = os.path.join(TOK, name, "tokenizer.json")
    if not os.path.exists(f):
        continue
    j = shrink(json.load(open(f, encoding="utf-8")), keep)
    if name == "llama3":  # its added tokens live at ids >= 128000: renumber two of them into range
        j["added_tokens"] = [dict(t, id=keep + i) for i, t in enumerate(json.load(open(f))["added_tokens"][:2])]
    put("tokenizer_json", name + "-small.json", json.dumps(j, ensure_ascii=False))
    vdir = os.path.join(TOK, "variants")
    for v in sorted(os.listdir(vdir)) if os.path.isdir(vdir) else []:
        spec = json.load(open(os.path.join(vdir, v, "variant.json")))
        if spec.get("base") != name or "set" not in spec:
            continue
        jv = json.loads(json.dumps(j))
        jv.update(spec["set"])
        put("tokenizer_json", v + "-small.json", json.dumps(jv, ensure_ascii=False))

# ---------------------------------------------------------------- tasks
T = os.path.join(SHARED, "tasks")


def head(path, n):
    with open(path, "rb") as f:
        return b"".join(f.readline() for _ in range(n))


def task(layout, name, main, labels=None):
    data = bytes([layout]) + main + ((b"\0" + labels) if labels is not None else b"")
    put("tasks", name, data)


if os.path.isdir(T):
    task(0, "boolq-val", head(os.path.join(T, "boolq", "val.jsonl"), 2))
    task(1, "boolq-dev", b'{"question": "is the sky blue", "title": "Sky", "answer": true, "passage": "The sky is blue."}\n')
    task(2, "piqa", head(os.path.join(T, "piqa", "valid.jsonl"), 3), head(os.path.join(T, "piqa", "valid-labels.lst"), 3))
    task(3, "hellaswag", json.dumps({"ind": 24, "activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.",
                                     "ctx_b": "he", "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                                                                "is holding a rubik's cube.", "starts pulling up roofing on a roof."],
                                     "label": 3, "split": "val"}).encode() + b"\n")
    task(4, "winogrande-orig", b'{"qID": "1", "sentence": "John moved the couch from the garage to the backyard to create space. The _ is small.", '
                               b'"option1": "garage", "option2": "backyard", "answer": "1"}\n', b"1\n")
    task(5, "winogrande-conv", head(os.path.join(T, "winogrande", "winogrande.jsonl"), 2),
         head(os.path.join(T, "winogrande", "dev-labels.lst"), 2))
    task(6, "arc-easy", head(os.path.join(T, "arc", "ARC-Easy-Test.jsonl"), 2))
    task(7, "arc-challenge", head(os.path.join(T, "arc", "ARC-Easy-Test.jsonl"), 1))
    task(8, "obqa-jsonl", b'{"id": "7-980", "question": {"stem": "The sun is responsible for", "choices": [{"text": "puppies learning new tricks", '
                          b'"label": "A"}, {"text": "plants sprouting, blooming and wilting", "label": "B"}]}, "answerKey": "B"}\n')
    task(9, "obqa-tsv", head(os.path.join(T, "openbookqa", "test.tsv"), 3))
    task(10, "kjv-cloze", head(os.path.join(T, "kjv-cloze", "test.jsonl"), 2))

# ---------------------------------------------------------------- alpaca
recs = [{"instruction": "Give three tips for staying healthy.", "input": "", "output": "1. Eat well. 2. Exercise. 3. Sleep."},
        {"instruction": "Translate to French.", "input": "In the beginning", "output": "Au commencement"}]
put("alpaca", "array.json", bytes([0xE0]) + json.dumps(recs, indent=1).encode())
put("alpaca", "lines.jsonl", bytes([0xE1]) + ("\n".join(json.dumps(r) for r in recs) + "\n\n{bad json\n").encode())
put("alpaca", "lines-strict-train-inputs.jsonl", bytes([0xED]) + "\n".join(json.dumps(r) for r in recs).encode())
put("alpaca", "text.txt", bytes([0x22]) + b"In the beginning God created the heaven and the earth.\nAnd the earth was without form.\n")
put("alpaca", "wrong-types.json", bytes([0xE0]) + b'[{"instruction": 3, "output": "x"}, {"instruction": "a", "input": null, "output": "b"}, []]')

total = 0
for d, _, fs in os.walk(OUT):
    for f in fs:
        total += os.path.getsize(os.path.join(d, f))
print("corpus under %s: %d bytes" % (OUT, total))
