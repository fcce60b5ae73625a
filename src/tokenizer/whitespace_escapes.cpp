// Text escapes of ChatGLM-6B v1's tokenizer (see whitespace_escapes.h) and the Tokenizer that
// applies them around a SentencePiece model: encode() escapes before the pieces are found,
// decode() unescapes the decoded text, so StreamDecoder (which decodes the whole sequence each
// step) prints "\n", never "<n>".
#include "tokenizer/whitespace_escapes.h"

#include <memory>

#include "tokenizer/tokenizer.h"

namespace llmprune {

std::string escape_whitespace(std::string_view text, const WhitespaceEscapes& e) {
  const bool blanks = e.max_blank >= 2;
  auto blank = [&](size_t k) { return e.blank_prefix + std::to_string(k) + e.blank_suffix; };
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const char c = text[i];
    if (c == '\n' && !e.newline.empty()) {
      out += e.newline;
      i++;
    } else if (c == '\t' && !e.tab.empty()) {
      out += e.tab;
      i++;
    } else if (c == ' ' && blanks) {
      size_t run = 0;
      while (i + run < text.size() && text[i + run] == ' ') run++;
      i += run;
      const size_t max = size_t(e.max_blank);
      for (; run >= max; run -= max) out += blank(max);
      if (run >= 2) out += blank(run);
      if (run == 1) out += ' ';
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

namespace {

void replace_all(std::string& text, const std::string& from, std::string_view to) {
  if (from.empty()) return;
  std::string out;
  size_t pos = 0;
  for (size_t at; (at = text.find(from, pos)) != std::string::npos; pos = at + from.size()) {
    out.append(text, pos, at - pos);
    out += to;
  }
  if (pos == 0) return;  // no match
  out.append(text, pos, std::string::npos);
  text = std::move(out);
}

class WhitespaceEscaped : public Tokenizer {
 public:
  WhitespaceEscaped(std::unique_ptr<Tokenizer> base, WhitespaceEscapes escapes)
      : base_(std::move(base)), escapes_(std::move(escapes)) {
    bos_id_ = base_->bos_id();
    eos_id_ = base_->eos_id();
  }
  std::vector<int32_t> encode(std::string_view text) const override {
    return base_->encode(escape_whitespace(text, escapes_));
  }
  std::vector<int32_t> encode_with_specials(std::string_view text) const override {
    return base_->encode_with_specials(escape_whitespace(text, escapes_));
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    return unescape_whitespace(base_->decode(ids), escapes_);
  }
  int32_t vocab_size() const override { return base_->vocab_size(); }
  std::string id_to_piece(int32_t id) const override { return base_->id_to_piece(id); }
  std::string kind() const override { return base_->kind(); }

 private:
  std::unique_ptr<Tokenizer> base_;
  WhitespaceEscapes escapes_;
};

}  // namespace

std::string unescape_whitespace(std::string text, const WhitespaceEscapes& e) {
  replace_all(text, e.newline, "\n");
  replace_all(text, e.tab, "\t");
  // 79 passes only when the text holds an escape at all (StreamDecoder decodes every step).
  if (e.max_blank >= 2 && !e.blank_prefix.empty() && text.find(e.blank_prefix) != std::string::npos)
    for (int k = 2; k <= e.max_blank; k++)
      replace_all(text, e.blank_prefix + std::to_string(k) + e.blank_suffix, std::string(size_t(k), ' '));
  return text;
}

std::unique_ptr<Tokenizer> with_whitespace_escapes(std::unique_ptr<Tokenizer> base, const WhitespaceEscapes& escapes) {
  return std::make_unique<WhitespaceEscaped>(std::move(base), escapes);
}

}  // namespace llmprune
