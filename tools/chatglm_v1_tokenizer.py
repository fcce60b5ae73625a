#!/usr/bin/python3
"""Dev-time: the SentencePiece tokenizer of tests/data/models/chatglm-v1-tiny (its vocab of 64).

Run with Debian's Python (python3-sentencepiece):
    /usr/bin/python3 tools/chatglm_v1_tokenizer.py [--shared DIR]

ChatGLM-6B v1's ice_text.model holds its special tokens as pieces of its own (CHATGLM.md §1.6):
[MASK] [gMASK] [sMASK] <unused_0> <sop> <eop> at ids 130000..130005, after the text pieces.
chatglm-v1-tiny's config.json puts them at 56..61 (mask_token_id 56, gmask_token_id 57,
bos_token_id 60 = <sop>, eos_token_id 61 = <eop>). SentencePiece's trainer gives user-defined
symbols the first free ids, so the model is trained with them (55 text pieces + <unk> + the six
specials, BPE on the first 20,000 lines of kjv.train.txt, rare characters to <unk>) and its
pieces are then reordered in the ModelProto (field 1, repeated SentencePiece) so that the text
pieces take ids 0..55 and the specials 56..61. Ids are positions in that list; BPE merges go by
score and the specials by string, so encoding is unchanged apart from the ids.
Writes tests/data/models/chatglm-v1-tiny/tokenizer.model.
"""

import argparse
import io
import os

import sentencepiece as spm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECIALS = ["[MASK]", "[gMASK]", "[sMASK]", "<unused_0>", "<sop>", "<eop>"]
FIRST_SPECIAL = 56


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
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe",
        vocab_size=FIRST_SPECIAL + len(SPECIALS), user_defined_symbols=SPECIALS,
        character_coverage=0.995, unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
        normalization_rule_name="identity", minloglevel=2)
    fields = top_level_fields(model.getvalue())
    pieces = [raw for num, raw in fields if num == 1]
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    special_ids = [sp.piece_to_id(s) for s in SPECIALS]
    text_ids = [i for i in range(len(pieces)) if i not in special_ids]
    assert len(text_ids) == FIRST_SPECIAL, len(text_ids)
    order = text_ids + special_ids
    out = b"".join(pieces[i] for i in order) + b"".join(raw for num, raw in fields if num != 1)
    check = spm.SentencePieceProcessor(model_proto=out)
    for k, s in enumerate(SPECIALS):
        assert check.piece_to_id(s) == FIRST_SPECIAL + k, s
    text = "And God said, Let there be light: and there was light."
    assert [sp.id_to_piece(i) for i in sp.encode(text)] == [check.id_to_piece(i) for i in check.encode(text)]
    path = os.path.join(ROOT, "tests/data/models/chatglm-v1-tiny/tokenizer.model")
    with open(path, "wb") as f:
        f.write(out)
    print("wrote %s (%d bytes, %d pieces): %s" % (path, len(out), check.get_piece_size(),
                                                  " ".join(check.id_to_piece(i) for i in check.encode(text))))


if __name__ == "__main__":
    main()
