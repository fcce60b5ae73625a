"""Writes the PyTorch .bin test checkpoints under tests/data/torch_bin (dev-time only; the C++
tests read the committed files and never need PyTorch).

    /usr/bin/python3 tools/torch_bin_fixtures.py      # Debian's python3-torch (1.13)

A tiny LLaMA (2 layers, hidden 8, 2 heads / 1 KV head, vocab 4096 so the KJV fixture tokenizer
fits) whose state dict exercises what real checkpoints do:
  - F16 matrices, F32 and BF16 norms and buffers;
  - lm_head.weight IS model.embed_tokens.weight (tied: one storage, two names);
  - q/k/v are offset views into one fused [16, 8] storage (storage_offset > 0);
  - layer 0's down_proj is a transposed view (non-contiguous strides);
  - an old-style rotary_emb.inv_freq buffer, and the OrderedDict's _metadata attribute (BUILD).
Each checkpoint is written as the zip format (torch >= 1.6 default), the legacy non-zip format
(_use_new_zipfile_serialization=False) and a 2-shard zip checkpoint with its index; reference.safetensors
holds the same tensors contiguous, written by hand here (no safetensors package needed).
bad/ holds crafted pickles that name forbidden globals (they must be refused without running
anything) and damaged checkpoints for the error tests.
"""

import collections
import io
import json
import os
import shutil
import struct
import zipfile

import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "torch_bin")

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 8,
    "intermediate_size": 12,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "vocab_size": 4096,
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "torch_dtype": "float16",
}


def state_dict():
    g = torch.Generator().manual_seed(1234)

    def rnd(*shape, scale=0.3):
        return torch.randn(*shape, generator=g) * scale

    # llmprune keeps every matrix of a model in one dtype (F16 here); norms and buffers may differ
    # (F32 and BF16 here), so the three dtypes all go through the reader and the model.
    h, bf = torch.float16, torch.bfloat16
    sd = collections.OrderedDict()
    embed = rnd(4096, 8, scale=1.0).to(h)
    sd["model.embed_tokens.weight"] = embed
    # Layer 0: fused qkv storage viewed three times at element offsets 0, 64, 96.
    qkv = rnd(16, 8).to(h)
    sd["model.layers.0.self_attn.q_proj.weight"] = qkv[0:8]
    sd["model.layers.0.self_attn.k_proj.weight"] = qkv[8:12]
    sd["model.layers.0.self_attn.v_proj.weight"] = qkv[12:16]
    sd["model.layers.0.self_attn.o_proj.weight"] = rnd(8, 8).to(h)
    sd["model.layers.0.self_attn.rotary_emb.inv_freq"] = 1.0 / (10000 ** (torch.arange(0, 4, 2).float() / 4))
    sd["model.layers.0.mlp.gate_proj.weight"] = rnd(12, 8).to(h)
    sd["model.layers.0.mlp.up_proj.weight"] = rnd(12, 8).to(h)
    sd["model.layers.0.mlp.down_proj.weight"] = rnd(12, 8).to(h).t()  # [8, 12], strides (1, 8)
    sd["model.layers.0.input_layernorm.weight"] = 1 + rnd(8, scale=0.1)
    sd["model.layers.0.post_attention_layernorm.weight"] = 1 + rnd(8, scale=0.1)
    # Layer 1: contiguous throughout, BF16 norms.
    sd["model.layers.1.self_attn.q_proj.weight"] = rnd(8, 8).to(h)
    sd["model.layers.1.self_attn.k_proj.weight"] = rnd(4, 8).to(h)
    sd["model.layers.1.self_attn.v_proj.weight"] = rnd(4, 8).to(h)
    sd["model.layers.1.self_attn.o_proj.weight"] = rnd(8, 8).to(h)
    sd["model.layers.1.mlp.gate_proj.weight"] = rnd(12, 8).to(h)
    sd["model.layers.1.mlp.up_proj.weight"] = rnd(12, 8).to(h)
    sd["model.layers.1.mlp.down_proj.weight"] = rnd(8, 12).to(h)
    sd["model.layers.1.input_layernorm.weight"] = (1 + rnd(8, scale=0.1)).to(bf)
    sd["model.layers.1.post_attention_layernorm.weight"] = (1 + rnd(8, scale=0.1)).to(bf)
    sd["model.norm.weight"] = 1 + rnd(8, scale=0.1)
    sd["lm_head.weight"] = embed  # tied: the same tensor, so the same storage
    # What nn.Module.state_dict() attaches (pickled through BUILD).
    sd._metadata = collections.OrderedDict([("", {"version": 1}), ("model", {"version": 1})])
    return sd


ST_DTYPE = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def tensor_bytes(t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def write_safetensors(path, sd):
    header, blobs, off = {}, [], 0
    for name, t in sd.items():
        b = tensor_bytes(t)
        header[name] = {"dtype": ST_DTYPE[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def write_model_dir(d, sd, legacy=False):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
    kw = {"_use_new_zipfile_serialization": False} if legacy else {}
    torch.save(sd, os.path.join(d, "pytorch_model.bin"), **kw)


def write_sharded_dir(d, sd):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
    names = list(sd.keys())
    first = [n for n in names if n.startswith("model.embed") or n.startswith("model.layers.0.") or n == "lm_head.weight"]
    shards = [first, [n for n in names if n not in first]]
    weight_map = {}
    for i, part in enumerate(shards):
        fname = f"pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin"
        piece = collections.OrderedDict((n, sd[n]) for n in part)
        torch.save(piece, os.path.join(d, fname))
        for n in part:
            weight_map[n] = fname
    total = sum(t.numel() * t.element_size() for n, t in sd.items() if n != "lm_head.weight")
    with open(os.path.join(d, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


# ---- crafted pickles (protocol 2 opcodes, by hand) ----------------------------------------------

def pk_str(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b  # BINUNICODE


def zip_with_pickle(path, pkl, extra=()):
    """A torch-style zip checkpoint whose data.pkl is `pkl` (STORED members under archive/)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/version", "3\n")
        for name, data in extra:
            z.writestr("archive/" + name, data)


MARKER = "/tmp/llmprune-torch-bin-pwned"


def crafted():
    bad = os.path.join(OUT, "bad")
    os.makedirs(bad, exist_ok=True)
    call = pk_str("touch " + MARKER) + b"\x85R"  # TUPLE1, REDUCE
    # GLOBAL os.system called with a shell command: must be refused at the GLOBAL opcode.
    zip_with_pickle(os.path.join(bad, "os_system.bin"), b"\x80\x02cos\nsystem\n" + call + b".")
    zip_with_pickle(os.path.join(bad, "builtins_eval.bin"),
                    b"\x80\x02cbuiltins\neval\n" + pk_str("__import__('os').system('touch " + MARKER + "')") + b"\x85R.")
    zip_with_pickle(os.path.join(bad, "builtin_exec.bin"),
                    b"\x80\x02c__builtin__\nexec\n" + pk_str("open('" + MARKER + "', 'w')") + b"\x85R.")
    # Protocol 4 STACK_GLOBAL spelling of posix.system, inside an otherwise normal dict.
    short = lambda s: b"\x8c" + bytes([len(s)]) + s.encode()  # SHORT_BINUNICODE
    zip_with_pickle(os.path.join(bad, "stack_global_posix_system.bin"),
                    b"\x80\x04}" + short("model.norm.weight") + short("posix") + short("system") + b"\x93" +
                    short("touch " + MARKER) + b"\x85Rs.")
    # An allowed global used the wrong way: REDUCE calling a storage type (only persistent ids name those).
    zip_with_pickle(os.path.join(bad, "reduce_storage_type.bin"), b"\x80\x02ctorch\nFloatStorage\n)R.")
    # The legacy (non-zip) format with os.system in the main pickle, after valid magic/version/sys_info.
    buf = io.BytesIO()
    import pickle
    for obj in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True,
                                                  "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(obj, buf, protocol=2)
    buf.write(b"\x80\x02cos\nsystem\n" + call + b".")
    with open(os.path.join(bad, "legacy_os_system.bin"), "wb") as f:
        f.write(buf.getvalue())
    # An int64 tensor: a known storage type llmprune does not compute with.
    torch.save(collections.OrderedDict([("model.norm.weight", torch.arange(8))]), os.path.join(bad, "long_tensor.bin"))
    # A float32 [4, 4] tensor whose storage record holds 60 of the 64 bytes it needs (python's zipfile,
    # so the members are also not 64-byte aligned).
    good = io.BytesIO()
    torch.save(collections.OrderedDict([("model.norm.weight", torch.ones(4, 4))]), good)
    with zipfile.ZipFile(io.BytesIO(good.getvalue())) as zin, \
         zipfile.ZipFile(os.path.join(bad, "short_storage.bin"), "w", compression=zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("/data/0"):
                data = data[:-4]
            zout.writestr(info.filename, data)
    # A deflate-compressed member (torch never writes one).
    with zipfile.ZipFile(io.BytesIO(good.getvalue())) as zin, \
         zipfile.ZipFile(os.path.join(bad, "deflated.bin"), "w", compression=zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))


def fuzz_seeds():
    """Small valid checkpoints for fuzz/pytorch_bin_fuzz.cpp (every feature the reader handles, in a
    few hundred bytes so the fuzzer's inputs stay short)."""
    d = os.path.join(os.path.dirname(OUT), "..", "..", "fuzz", "corpus", "pytorch_bin")
    os.makedirs(d, exist_ok=True)
    g = torch.Generator().manual_seed(7)
    base = torch.randn(4, 3, generator=g)
    sd = collections.OrderedDict()
    sd["a"] = base[1:3]                      # offset view
    sd["b"] = base.t()                       # transposed view of the same storage
    sd["c"] = torch.randn(2, 2, generator=g).half()
    sd["d"] = torch.randn(3, generator=g).bfloat16()
    sd["e"] = sd["c"]                        # tied
    torch.save(sd, os.path.join(d, "small-zip.bin"))
    torch.save(sd, os.path.join(d, "small-legacy.bin"), _use_new_zipfile_serialization=False)
    buf = io.BytesIO()
    torch.save(sd, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        pkl = [n for n in z.namelist() if n.endswith("/data.pkl")][0]
        with open(os.path.join(d, "small-data.pkl"), "wb") as f:
            f.write(z.read(pkl))


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    sd = state_dict()
    write_safetensors(os.path.join(OUT, "reference.safetensors"), sd)
    write_model_dir(os.path.join(OUT, "zip"), sd)
    write_model_dir(os.path.join(OUT, "legacy"), sd, legacy=True)
    write_sharded_dir(os.path.join(OUT, "sharded"), sd)
    crafted()
    fuzz_seeds()
    # Self-check: torch reads back what the C++ tests compare against.
    for sub in ("zip", "legacy"):
        back = torch.load(os.path.join(OUT, sub, "pytorch_model.bin"))
        assert all(torch.equal(back[n], sd[n]) for n in sd), sub
        assert back["lm_head.weight"].data_ptr() == back["model.embed_tokens.weight"].data_ptr(), sub
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {OUT} ({total} bytes)")


if __name__ == "__main__":
    main()
