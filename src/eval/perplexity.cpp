#include "eval/perplexity.h"

#include <chrono>
#include <cmath>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/fs.h"
#include "core/progress.h"

namespace llmprune {

std::vector<int32_t> tokenize_file_with_bos(const Tokenizer& tok, const std::string& path) {
  std::string text = read_text_file(path);
  if (text.empty()) throw input_error(path, "file is empty");
  std::vector<int32_t> ids;
  ids = tok.prefix_ids();  // BOS, or the family's prefix (ChatGLM: [gMASK] sop)
  auto body = tok.encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

PplResult perplexity(Runner& r, const std::vector<int32_t>& tokens, const PplOptions& opt) {
  const int L = opt.seq_len;
  const int stride = opt.stride > 0 ? opt.stride : L;
  if (L < 2) throw UserError("--seq-len must be at least 2");
  if (stride > L) throw UserError("--stride must not exceed --seq-len");
  PplResult res;
  res.tokens_total = int64_t(tokens.size());
  std::vector<int64_t> starts;
  for (int64_t s = 0; s + L <= int64_t(tokens.size()); s += stride) starts.push_back(s);
  if (opt.max_windows > 0 && int64_t(starts.size()) > opt.max_windows) starts.resize(size_t(opt.max_windows));
  if (starts.empty())
    throw input_error(opt.source, "has " + std::to_string(tokens.size()) + " tokens (BOS included), fewer than one window of --seq-len " +
                                      std::to_string(L));
  auto t0 = std::chrono::steady_clock::now();
  Progress prog("perplexity", int64_t(starts.size()), "win");
  std::vector<int32_t> batch;
  std::vector<int> score_from;
  for (size_t i = 0; i < starts.size(); i += size_t(opt.batch)) {
    int B = int(std::min(starts.size() - i, size_t(opt.batch)));
    batch.resize(size_t(B) * L);
    score_from.resize(size_t(B));
    for (int b = 0; b < B; b++) {
      int64_t s = starts[i + size_t(b)];
      std::copy(tokens.begin() + s, tokens.begin() + s + L, batch.begin() + size_t(b) * L);
      // Target index t (1..L-1) is absolute token s+t; it was already scored when s+t < prev_end.
      score_from[size_t(b)] = (i + size_t(b) == 0) ? 1 : L - stride;
    }
    NllResult n = sequence_nll(r, batch.data(), B, L, score_from.data());
    res.nll_sum += n.nll_sum;
    res.tokens_scored += n.count;
    prog.add(B);
  }
  prog.finish();
  res.windows = int64_t(starts.size());
  res.ppl = std::exp(res.nll_sum / double(res.tokens_scored));
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::ostringstream c;
  c << "BOS once + whole text, windows of " << L << " tokens";
  if (stride == L) c << ", non-overlapping, remainder dropped";
  else c << ", stride " << stride << " (later windows score only their last " << stride << " tokens)";
  res.convention = c.str();
  return res;
}

}  // namespace llmprune
