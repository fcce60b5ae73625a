#pragma once
// A family's spelling of whitespace inside its SentencePiece text. ChatGLM-6B v1 (THUDM's
// SPTokenizer, CHATGLM.md §1.6) encodes "\n" as <n>, "\t" as <|tab|> and each run of k spaces
// (2 <= k <= 80, longest first) as <|blank_k|>, pieces of ice_text.model itself; decoding
// reverses it. Families without such spellings leave the struct empty.
#include <string>
#include <string_view>

namespace llmprune {

struct WhitespaceEscapes {
  std::string newline;       // "\n" is written as this ("<n>"); empty: kept
  std::string tab;           // "\t" likewise ("<|tab|>")
  std::string blank_prefix;  // a run of k spaces is written blank_prefix + k + blank_suffix
  std::string blank_suffix;  // ("<|blank_" k "|>")
  int max_blank = 0;         // the longest run one escape spells (80); below 2: spaces kept
  bool any() const { return !newline.empty() || !tab.empty() || max_blank >= 2; }
};

// THUDM's _preprocess: newlines, then tabs, then for k = max_blank .. 2 every run of k spaces
// replaced left to right. A run of L spaces becomes floor(L / max_blank) escapes of max_blank,
// then one of the remainder r when r >= 2 (r = 1 stays a space). The spellings hold no spaces
// or tabs, so one left-to-right pass gives the same text.
std::string escape_whitespace(std::string_view text, const WhitespaceEscapes& e);

// THUDM's postprocess, in its order: newline, tab, then blank_2 .. blank_max to spaces.
std::string unescape_whitespace(std::string text, const WhitespaceEscapes& e);

}  // namespace llmprune
