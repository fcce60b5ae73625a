// SentencePiece .model bytes -> our wrapper load_sentencepiece (through a file, as the CLI
// loads it), then encode/decode a fixed text and list the pieces. libsentencepiece itself is not
// instrumented for coverage (Debian's build); ASan still checks our side and the calls into it.
#include <string>

#include "fuzz_util.h"
#include "tokenizer/tokenizer.h"

using namespace llmprune;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto path = fuzz::scratch_dir() / "tokenizer.model";
  fuzz::write_file(path, data, size);
  try {
    auto tok = load_sentencepiece(path);
    auto ids = tok->encode("In the beginning God created the heaven and the earth. 1234 \xc3\xa9t\xc3\xa9 \xe2\x96\x81<s>");
    tok->decode(ids);
    int n = tok->vocab_size();
    for (int i = 0; i < n && i < 512; i++) tok->id_to_piece(i);
    StreamDecoder sd(*tok);
    for (int32_t id : ids) sd.push(id);
  } catch (const UserError& e) {
    fuzz::rejected(e);
  }
  return 0;
}
