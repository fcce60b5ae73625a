// Special tokens a model family appends after its SentencePiece vocabulary (ChatGLM2/3:
// [MASK] [gMASK] [sMASK] sop eop, ChatGLM3 also <|system|> <|user|> <|assistant|> <|observation|>,
// ids 64789.. after 64789 pieces). Plain text goes through the base tokenizer alone, as THUDM's
// SPTokenizer.encode does (its tokenize splits nothing out by default): "eop" in "people" and a
// literal "sop" stay SentencePiece pieces. The specials enter as ids (the prefix, chat roles);
// encode_with_specials is the opt-in that reads their literal spellings in text.
#include <memory>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace llmprune {
namespace {

class AppendedSpecials : public Tokenizer {
 public:
  AppendedSpecials(std::unique_ptr<Tokenizer> base, std::vector<std::string> specials)
      : base_(std::move(base)), specials_(std::move(specials)), first_(base_->vocab_size()) {
    bos_id_ = base_->bos_id();
    eos_id_ = base_->eos_id();
  }
  std::vector<int32_t> encode(std::string_view text) const override { return base_->encode(text); }
  std::vector<int32_t> encode_with_specials(std::string_view text) const override {
    std::vector<int32_t> out;
    size_t pos = 0;
    while (pos <= text.size()) {
      // The earliest special at or after pos (the longest one when two start there).
      size_t best = std::string_view::npos, best_len = 0;
      int32_t best_id = -1;
      for (size_t i = 0; i < specials_.size(); i++) {
        size_t at = text.find(specials_[i], pos);
        if (at == std::string_view::npos) continue;
        if (at < best || (at == best && specials_[i].size() > best_len)) {
          best = at;
          best_len = specials_[i].size();
          best_id = first_ + int32_t(i);
        }
      }
      const size_t end = best == std::string_view::npos ? text.size() : best;
      if (end > pos) {
        auto ids = base_->encode(text.substr(pos, end - pos));
        out.insert(out.end(), ids.begin(), ids.end());
      }
      if (best == std::string_view::npos) break;
      out.push_back(best_id);
      pos = best + best_len;
    }
    return out;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    // Specials are dropped like BOS/EOS; the runs between them decode through the base.
    std::vector<int32_t> plain;
    plain.reserve(ids.size());
    for (int32_t id : ids)
      if (id < first_) plain.push_back(id);
    return base_->decode(plain);
  }
  int32_t vocab_size() const override { return first_ + int32_t(specials_.size()); }
  std::string id_to_piece(int32_t id) const override {
    if (id >= first_ && id < vocab_size()) return specials_[size_t(id - first_)];
    return base_->id_to_piece(id);
  }
  std::string kind() const override { return base_->kind(); }

 private:
  std::unique_ptr<Tokenizer> base_;
  std::vector<std::string> specials_;
  int32_t first_;
};

}  // namespace

std::unique_ptr<Tokenizer> with_appended_specials(std::unique_ptr<Tokenizer> base, const std::vector<std::string>& specials) {
  return std::make_unique<AppendedSpecials>(std::move(base), specials);
}

int32_t find_piece(const Tokenizer& tok, const std::vector<std::string>& spellings) {
  // Specials sit at the end of the vocabulary: search from there.
  for (int32_t id = tok.vocab_size() - 1; id >= 0; id--) {
    const std::string p = tok.id_to_piece(id);
    for (const std::string& s : spellings)
      if (p == s) return id;
  }
  return -1;
}

}  // namespace llmprune
