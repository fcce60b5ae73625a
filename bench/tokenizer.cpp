// Tokenizer throughput: encode and decode of 1 MiB of mixed text (every script, whitespace runs,
// numbers, code) with each HF tokenizer.json given, best of 3. This was a timed unit test until
// session 5 (a 3 s bound that failed only when the machine was loaded); the figure lives here now.
// Usage: bench_tokenizer TEXT_FILE TOKENIZER_JSON...  (the repo's tokenizer fixtures, e.g.)
//   T=tests/data/tokenizers; bench_tokenizer $T/llama3/cases.inp $T/{llama3,gpt2,mistral}/tokenizer.json
// A TEXT_FILE in the fixtures' cases format (cases split by "__ggml_vocab_test__" lines) is used
// case by case, without those containing special-token text ("<|"), as the round-trip test does.
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "bench_util.h"
#include "tokenizer/hf_tokenizer.h"

using namespace llmprune;

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s TEXT_FILE TOKENIZER_JSON...\n", argv[0]);
    return 2;
  }
  std::ifstream in(argv[1], std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "error: cannot read %s\n", argv[1]);
    return 2;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string raw = ss.str(), sep = "\n__ggml_vocab_test__\n";
  std::string varied;
  for (size_t at = 0; at <= raw.size();) {
    size_t end = raw.find(sep, at);
    if (end == std::string::npos) end = raw.size();
    const std::string piece = raw.substr(at, end - at);
    if (piece.find("<|") == std::string::npos && piece != "__ggml_vocab_test__") varied += piece + " ";
    at = end + sep.size();
  }
  if (varied.empty()) {
    std::fprintf(stderr, "error: %s is empty\n", argv[1]);
    return 2;
  }
  std::string text;
  while (text.size() < (1u << 20)) text += varied;
  std::printf("%-40s %10s %10s %12s %12s\n", "tokenizer", "MiB", "tokens", "encode MB/s", "decode MB/s");
  for (int a = 2; a < argc; a++) {
    auto tok = load_hf_tokenizer_json(argv[a]);
    double best_enc = 1e30, best_dec = 1e30;
    size_t n_tokens = 0;
    for (int rep = 0; rep < 3; rep++) {
      double t0 = bench::now_s();
      auto ids = tok->encode(text);
      double t1 = bench::now_s();
      std::string back = tok->decode(ids);
      double t2 = bench::now_s();
      if (back != text) {
        std::fprintf(stderr, "error: %s: decode(encode(text)) != text\n", argv[a]);
        return 1;
      }
      n_tokens = ids.size();
      best_enc = std::min(best_enc, t1 - t0);
      best_dec = std::min(best_dec, t2 - t1);
    }
    std::printf("%-40s %10.2f %10zu %12.2f %12.2f\n", argv[a], text.size() / 1048576.0, n_tokens,
                text.size() / best_enc / 1e6, text.size() / best_dec / 1e6);
  }
  return 0;
}
