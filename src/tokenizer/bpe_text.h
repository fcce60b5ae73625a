#pragma once
// Text helpers for the tokenizer.json BPE path: UTF-8 walking, GPT-2's byte<->unicode alphabet,
// and a PCRE2 regex wrapper that yields match spans.
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace llmprune::bpe {

// Length in bytes of the UTF-8 sequence starting at text[pos], or 0 if the bytes there are not a
// well-formed sequence (bad lead byte, bad continuation, overlong form, surrogate, > U+10FFFF).
size_t utf8_sequence_length(std::string_view text, size_t pos);

// Copy of `text` with every ill-formed byte replaced by U+FFFD. The regex engine and the
// vocabulary both work on well-formed text; this keeps encode() total on arbitrary bytes.
std::string sanitize_utf8(std::string_view text);

// Appends the UTF-8 encoding of code point `cp`.
void append_utf8(std::string& out, uint32_t cp);

// Decodes the code point at text[pos] (text must be well-formed there); advances pos.
uint32_t next_code_point(std::string_view text, size_t& pos);

// Splits well-formed UTF-8 into its characters (as views into `text`).
std::vector<std::string_view> split_chars(std::string_view text);

// GPT-2's reversible byte -> printable code point map: byte-level vocabularies spell every byte
// as one visible character ("Ġ" for space) so that merges never see raw control bytes.
class ByteAlphabet {
 public:
  ByteAlphabet();
  // UTF-8 spelling of the stand-in character for byte b.
  const std::string& char_of_byte(uint8_t b) const { return byte_to_utf8_[b]; }
  // Maps raw bytes to the alphabet (each byte becomes one character).
  std::string encode(std::string_view raw) const;
  // Inverse of encode(); characters outside the alphabet are kept as their own UTF-8 bytes.
  std::string decode(std::string_view spelled) const;
  // The byte a code point stands for, or -1.
  int byte_of_code_point(uint32_t cp) const { return cp < code_point_to_byte_.size() ? code_point_to_byte_[cp] : -1; }

 private:
  std::array<std::string, 256> byte_to_utf8_;
  std::vector<int16_t> code_point_to_byte_;  // indexed by code point (< 324)
};

const ByteAlphabet& byte_alphabet();

// A compiled PCRE2 pattern in UTF + UCP mode (so \p{L}, \s, \w are Unicode-aware, as in the
// Oniguruma engine HF tokenizers compiles these patterns with). Safe to share across threads:
// match state is allocated per call.
class Regex {
 public:
  // Throws std::invalid_argument with PCRE2's message when the pattern does not compile.
  explicit Regex(const std::string& pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Non-empty, non-overlapping matches left to right as [begin, end) byte offsets.
  // `text` must be well-formed UTF-8 (not re-checked, for speed).
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*, kept opaque so this header needs no pcre2.h
};

// HF tokenizers' patterns are written for Oniguruma, whose Unicode \s is
// [\t\n\v\f\r\x{85}\p{Z}] — PCRE2's \s leaves out NEL (U+0085). Rewrites \s and \S (inside and
// outside character classes) to that explicit set so both engines split whitespace alike.
std::string oniguruma_to_pcre2(std::string_view pattern);

}  // namespace llmprune::bpe
