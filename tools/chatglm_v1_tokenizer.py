#!/usr/bin/python3
"""Dev-time: the SentencePiece tokenizer of tests/data/models/chatglm-v1-tiny and its escape golden.

Run with Debian's Python (python3-sentencepiece):
    /usr/bin/python3 tools/chatglm_v1_tokenizer.py [--shared DIR]

ChatGLM-6B v1 ships its SentencePiece model as ice_text.model, which holds its special tokens as
pieces of its own (CHATGLM.md §1.6): [MASK] [gMASK] [sMASK] <unused_0> <sop> <eop> at ids
130000..130005, after the text pieces, and the whitespace escapes THUDM's SPTokenizer writes
before encoding: <n> for "\n", <|tab|> for "\t", <|blank_k|> for a run of k spaces (2 <= k <= 80).
chatglm-v1-tiny's config.json puts the specials at 56..61 (mask_token_id 56, gmask_token_id 57,
bos_token_id 60 = <sop>, eos_token_id 61 = <eop>); the 81 escapes follow at 62..142 (143
pieces; the model's vocab_size is 144). SentencePiece's trainer gives user-defined symbols the
first free ids, so the model is trained with them (55 text pieces + <unk> + the 87 user-defined
pieces, BPE on the first 20,000 lines of kjv.train.txt, rare characters to <unk>) and its pieces
are then reordered in the ModelProto (field 1, repeated SentencePiece) so that the text pieces
take ids 0..55, the specials 56..61 and the escapes 62..142. Ids are positions in that list; BPE
merges go by score and user-defined pieces by string, so encoding is unchanged apart from the ids.

Writes tests/data/models/chatglm-v1-tiny/ice_text.model and tests/golden/chatglm_v1_escapes.json:
texts with newlines, tabs and runs of spaces, and the ids of THUDM's encode (the _preprocess
below, as CHATGLM.md §1.6 states it, then the SentencePiece model), for tests/chatglm_v1_test.cpp.
"""

import argparse
import io
import json
import os

import sentencepiece as spm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECIALS = ["[MASK]", "[gMASK]", "[sMASK]", "<unused_0>", "<sop>", "<eop>"]
FIRST_SPECIAL = 56
MAX_BLANK = 80
ESCAPES = ["<n>", "<|tab|>"] + ["<|blank_%d|>" % k for k in range(2, MAX_BLANK + 1)]


def thudm_preprocess(text):
    """SPTokenizer._preprocess: newlines, tabs, then every run of k spaces, k = 80 .. 2."""
    text = text.replace("\n", "<n>").replace("\t", "<|tab|>")
    for k in range(MAX_BLANK, 1, -1):
        text = text.replace(" " * k, "<|blank_%d|>" % k)
    return text


def thudm_postprocess(text):
    """SPTokenizer.postprocess: the escapes back, blanks from 2 up."""
    text = text.replace("<n>", "\n").replace("<|tab|>", "\t")
    for k in range(2, MAX_BLANK + 1):
        text = text.replace("<|blank_%d|>" % k, " " * k)
    return text


# Runs of 1, 2, 3, 80, 81, 83 and 165 spaces (81 = 80 + a lone space, 165 = 2 x 80 + 5), with
# newlines and tabs around words, at the start and at the end.
GOLDEN_TEXTS = [
    "And God said,\nLet there be light:\tand there was light.",
    "a b  c   d" + " " * 80 + "e" + " " * 81 + "f" + " " * 83 + "g" + " " * 165 + "h",
    "\n\tIn the beginning  \n\n   God created\t\tthe heaven.\n",
    "  two leading spaces, one trailing ",
    " \t \n" + " " * 79 + "\n" + " " * 160,
]


def varint(buf, pos):
    out, shift = 0, 0
    while True:
        b = buf[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return out, pos


def top_level_fields(buf):
    """(field number, raw bytes of the whole field incl. its tag) of a protobuf message."""
    pos, out = 0, []
    while pos < len(buf):
        start = pos
        tag, pos = varint(buf, pos)
        wire = tag & 7
        if wire == 0:
            _, pos = varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            n, pos = varint(buf, pos)
            pos += n
        elif wire == 5:
            pos += 4
        else:
            raise ValueError("unexpected wire type %d" % wire)
        out.append((tag >> 3, buf[start:pos]))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    args = ap.parse_args()
    with open(os.path.join(args.shared, "fixtures/text/kjv.train.txt"), encoding="utf-8") as f:
        lines = [next(f) for _ in range(20000)]
    model = io.BytesIO()
    user_defined = SPECIALS + ESCAPES
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe",
        vocab_size=FIRST_SPECIAL + len(user_defined), user_defined_symbols=user_defined,
        character_coverage=0.995, unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
        normalization_rule_name="identity", remove_extra_whitespaces=False, minloglevel=2)
    fields = top_level_fields(model.getvalue())
    pieces = [raw for num, raw in fields if num == 1]
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    user_ids = [sp.piece_to_id(s) for s in user_defined]
    text_ids = [i for i in range(len(pieces)) if i not in user_ids]
    assert len(text_ids) == FIRST_SPECIAL, len(text_ids)
    order = text_ids + user_ids
    out = b"".join(pieces[i] for i in order) + b"".join(raw for num, raw in fields if num != 1)
    check = spm.SentencePieceProcessor(model_proto=out)
    for k, s in enumerate(user_defined):
        assert check.piece_to_id(s) == FIRST_SPECIAL + k, s
    text = "And God said, Let there be light: and there was light."
    assert [sp.id_to_piece(i) for i in sp.encode(text)] == [check.id_to_piece(i) for i in check.encode(text)]
    path = os.path.join(ROOT, "tests/data/models/chatglm-v1-tiny/ice_text.model")
    with open(path, "wb") as f:
        f.write(out)
    print("wrote %s (%d bytes, %d pieces): %s" % (path, len(out), check.get_piece_size(),
                                                  " ".join(check.id_to_piece(i) for i in check.encode(text))))

    cases = []
    for t in GOLDEN_TEXTS:
        ids = check.encode(thudm_preprocess(t))
        decoded = thudm_postprocess(check.decode(ids))
        assert decoded == t, (t, decoded)
        cases.append({"text": t, "ids": ids, "pieces": [check.id_to_piece(i) for i in ids]})
    source = ("/usr/bin/python3 tools/chatglm_v1_tokenizer.py: THUDM's SPTokenizer._preprocess "
              "(CHATGLM.md 1.6) + SentencePiece encode of tests/data/models/chatglm-v1-tiny/ice_text.model")
    gpath = os.path.join(ROOT, "tests/golden/chatglm_v1_escapes.json")
    with open(gpath, "w", encoding="utf-8") as f:  # one case a line
        f.write('{"source": %s,\n "cases": [\n  ' % json.dumps(source)
                + ",\n  ".join(json.dumps(c, ensure_ascii=False) for c in cases) + "\n]}\n")
    print("wrote %s (%d texts)" % (gpath, len(cases)))


if __name__ == "__main__":
    main()
