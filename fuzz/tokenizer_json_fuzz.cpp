// HF tokenizer.json text -> load_hf_tokenizer_json (through a file, as the CLI loads it), then
// encode/decode a fixed text and export the vocabulary.
#include <string>

#include "fuzz_util.h"
#include "tokenizer/hf_tokenizer.h"

using namespace llmprune;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto path = fuzz::scratch_dir() / "tokenizer.json";
  fuzz::write_file(path, data, size);
  try {
    auto tok = load_hf_tokenizer_json(path);
    auto ids = tok->encode("In the beginning God created  the heaven\n\nand the earth. 1234 \xc3\xa9t\xc3\xa9 <s></s>\xf0\x9f\x98\x80");
    tok->decode(ids);
    int n = tok->vocab_size();
    for (int i = 0; i < n && i < 512; i++) tok->id_to_piece(i);
    StreamDecoder sd(*tok);
    for (int32_t id : ids) sd.push(id);
    export_vocab(*tok);
  } catch (const UserError& e) {
    fuzz::rejected(e);
  }
  return 0;
}
