#pragma once
// Perplexity of a text file, the reference implementation's convention by default:
// the whole file is tokenised as one string with BOS prepended once, cut into consecutive
// windows of seq_len tokens (remainder dropped), each window scored on its own (token t predicts
// t+1 inside the window), PPL = exp(mean NLL over all scored tokens).
// With stride < seq_len, windows start every `stride` tokens; the first window scores all of its
// predictions, each later one only the predictions of tokens no earlier window scored.
#include <cstdint>
#include <string>
#include <vector>

#include "model/forward.h"
#include "tokenizer/tokenizer.h"

namespace llmprune {

struct PplOptions {
  int seq_len = 128;
  int stride = 0;      // 0 = seq_len (non-overlapping)
  int batch = 8;       // windows per forward pass
  int64_t max_windows = 0;  // 0 = all
  std::string source = "text";  // what the tokens came from (the file), named in errors
};

struct PplResult {
  double ppl = 0, nll_sum = 0;
  int64_t tokens_scored = 0, windows = 0, tokens_total = 0;
  double seconds = 0;
  std::string convention;  // human-readable statement of the windowing
};

std::vector<int32_t> tokenize_file_with_bos(const Tokenizer& tok, const std::string& path);
PplResult perplexity(Runner& r, const std::vector<int32_t>& tokens, const PplOptions& opt);

}  // namespace llmprune
