// HF tokenizer.json for BPE models: byte-level BPE (GPT-2, LLaMA-3, Qwen2, SmolLM) and
// SentencePiece-style BPE (LLaMA-2 / Mistral HF repos). The pipeline follows HF tokenizers:
//   added tokens are split out of the raw text -> each remaining segment is normalised -> added
//   tokens marked "normalized" are split out of that -> pre-tokeniser -> BPE per pre-token.
// Decoding runs the decoder chain over the pieces. Unlike HF, decode() keeps the exact bytes
// (it does not replace an incomplete UTF-8 sequence by U+FFFD) so that StreamDecoder can hold a
// partial character back until its remaining bytes arrive.
#include "tokenizer/hf_tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "core/error.h"
#include "tokenizer/bpe_model.h"
#include "tokenizer/bpe_nfc.h"
#include "tokenizer/bpe_text.h"

namespace llmprune {
namespace {

using nlohmann::json;
using bpe::Regex;

// Token ids must be below this (16.7M; the largest vocabularies in use have ~260K entries).
constexpr int64_t kMaxTokenId = int64_t(1) << 24;

// Thrown while reading the file; load_hf_tokenizer_json prefixes the file name.
struct FormatError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

constexpr std::string_view kMetaspace = "\xE2\x96\x81";  // "▁", SentencePiece's visible space

// GPT-2's split, built into HF's ByteLevel pre-tokeniser (used when use_regex is true).
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Patterns llama.cpp knows by name (tokenizer.ggml.pre), for export.
constexpr const char* kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Unicode White_Space (what Rust's char::is_whitespace tests), for lstrip/rstrip and Strip.
bool is_whitespace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

// Word characters for added tokens' single_word: HF tests Rust's char::is_alphanumeric (Unicode
// Alphabetic or Numeric) or '_'. Letters, marks and numbers approximate Alphabetic closely.
bool is_word_char(uint32_t cp) {
  if (cp < 0x80) return std::isalnum(static_cast<int>(cp)) || cp == '_';
  static const Regex word_char(R"(^[\p{L}\p{M}\p{N}])");
  std::string utf8;
  bpe::append_utf8(utf8, cp);
  return !word_char.find_all(utf8).empty();
}

// Code point ending just before byte offset `end` (text well-formed).
uint32_t code_point_before(std::string_view text, size_t end, size_t* start_out = nullptr) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) start--;
  if (start_out) *start_out = start;
  size_t pos = start;
  return bpe::next_code_point(text, pos);
}

std::string replace_all(std::string_view text, std::string_view from, std::string_view to) {
  std::string out;
  if (from.empty()) return std::string(text);
  size_t pos = 0;
  while (true) {
    size_t hit = text.find(from, pos);
    if (hit == std::string_view::npos) break;
    out.append(text.substr(pos, hit - pos)).append(to);
    pos = hit + from.size();
  }
  out.append(text.substr(pos));
  return out;
}

// ---- JSON helpers -----------------------------------------------------------------------------

const json* member(const json& object, const char* key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

std::string string_member(const json& object, const char* key, const std::string& where) {
  const json* value = member(object, key);
  if (!value || !value->is_string()) throw FormatError(where + "." + key + " must be a string");
  return value->get<std::string>();
}

bool bool_member(const json& object, const char* key, bool fallback) {
  const json* value = member(object, key);
  return value && value->is_boolean() ? value->get<bool>() : fallback;
}

std::string type_of(const json& component, const std::string& where) {
  return string_member(component, "type", where);
}

// {"String": "..."} or {"Regex": "..."}, as Split and Replace spell their pattern.
struct Pattern {
  std::string literal;
  std::shared_ptr<const Regex> regex;

  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const {
    if (regex) return regex->find_all(text);
    std::vector<std::pair<size_t, size_t>> spans;
    if (literal.empty()) return spans;
    for (size_t pos = text.find(literal); pos != std::string_view::npos; pos = text.find(literal, pos)) {
      spans.emplace_back(pos, pos + literal.size());
      pos += literal.size();
    }
    return spans;
  }
  std::string replace(std::string_view text, std::string_view content) const {
    if (!regex) return replace_all(text, literal, content);
    std::string out;
    size_t pos = 0;
    for (auto [begin, end] : regex->find_all(text)) {
      out.append(text.substr(pos, begin - pos)).append(content);
      pos = end;
    }
    return out.append(text.substr(pos));
  }
};

std::shared_ptr<const Regex> compile(const std::string& oniguruma_pattern, const std::string& where) {
  try {
    return std::make_shared<const Regex>(bpe::oniguruma_to_pcre2(oniguruma_pattern));
  } catch (const std::invalid_argument& e) {
    throw FormatError(where + ": regex does not compile (" + e.what() + "): " + oniguruma_pattern);
  }
}

Pattern parse_pattern(const json& object, const std::string& where) {
  const json* pattern = member(object, "pattern");
  if (!pattern || !pattern->is_object()) throw FormatError(where + ".pattern must be {\"String\"|\"Regex\": ...}");
  Pattern p;
  if (const json* s = member(*pattern, "String"); s && s->is_string()) {
    p.literal = s->get<std::string>();
  } else if (const json* r = member(*pattern, "Regex"); r && r->is_string()) {
    p.regex = compile(r->get<std::string>(), where + ".pattern.Regex");
  } else {
    throw FormatError(where + ".pattern must be {\"String\"|\"Regex\": ...}");
  }
  return p;
}

// ---- normalizers --------------------------------------------------------------------------------

using Normalizer = std::function<void(std::string&)>;

void parse_normalizer(const json& config, const std::string& where, std::vector<Normalizer>& steps) {
  const std::string type = type_of(config, where);
  if (type == "Sequence") {
    const json* list = member(config, "normalizers");
    if (!list || !list->is_array()) throw FormatError(where + ".normalizers must be a list");
    for (size_t i = 0; i < list->size(); i++)
      parse_normalizer((*list)[i], where + ".normalizers[" + std::to_string(i) + "]", steps);
  } else if (type == "Prepend") {
    std::string prefix = string_member(config, "prepend", where);
    steps.push_back([prefix](std::string& s) {
      if (!s.empty()) s.insert(0, prefix);
    });
  } else if (type == "Replace") {
    Pattern pattern = parse_pattern(config, where);
    std::string content = string_member(config, "content", where);
    steps.push_back([pattern, content](std::string& s) { s = pattern.replace(s, content); });
  } else if (type == "Strip") {
    bool left = bool_member(config, "strip_left", true), right = bool_member(config, "strip_right", true);
    steps.push_back([left, right](std::string& s) {
      size_t begin = 0, end = s.size();
      if (left)
        while (begin < end) {
          size_t pos = begin;
          uint32_t cp = bpe::next_code_point(s, pos);
          if (!is_whitespace(cp)) break;
          begin = pos;
        }
      if (right)
        while (end > begin) {
          size_t start;
          if (!is_whitespace(code_point_before(s, end, &start))) break;
          end = start;
        }
      s = s.substr(begin, end - begin);
    });
  } else if (type == "NFC") {
    steps.push_back([](std::string& s) { s = bpe::to_nfc(s); });
  } else {
    throw FormatError(where + ".type \"" + type + "\" is not supported (supported: Sequence, Prepend, Replace, Strip, NFC)");
  }
}

// ---- pre-tokenizers -----------------------------------------------------------------------------

struct Piece {
  std::string text;
  bool at_text_start;  // begins at offset 0 of the text given to encode() (Metaspace "first")
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Splits one piece at `matches` the way HF's SplitDelimiterBehavior describes.
void split_piece(const Piece& piece, const std::vector<std::pair<size_t, size_t>>& matches,
                 SplitBehavior behavior, bool invert, std::vector<Piece>& out) {
  struct Span {
    size_t begin, end;
    bool is_match;
  };
  std::vector<Span> spans;
  size_t pos = 0;
  for (auto [begin, end] : matches) {
    if (begin > pos) spans.push_back({pos, begin, false});
    spans.push_back({begin, end, true});
    pos = end;
  }
  if (pos < piece.text.size()) spans.push_back({pos, piece.text.size(), false});
  if (invert)
    for (auto& s : spans) s.is_match = !s.is_match;

  std::vector<std::pair<size_t, size_t>> parts;
  switch (behavior) {
    case SplitBehavior::kRemoved:
      for (const auto& s : spans)
        if (!s.is_match) parts.emplace_back(s.begin, s.end);
      break;
    case SplitBehavior::kIsolated:
      for (const auto& s : spans) parts.emplace_back(s.begin, s.end);
      break;
    case SplitBehavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const auto& s : spans) {
        if (s.is_match && !previous_match && !parts.empty())
          parts.back().second = s.end;
        else
          parts.emplace_back(s.begin, s.end);
        previous_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous_match = false;  // walking right to left: "previous" is the span to the right
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !parts.empty())
          parts.back().first = it->begin;
        else
          parts.emplace_back(it->begin, it->end);
        previous_match = it->is_match;
      }
      std::reverse(parts.begin(), parts.end());
      break;
    }
    case SplitBehavior::kContiguous: {
      std::optional<bool> previous_match;
      for (const auto& s : spans) {
        if (previous_match && *previous_match == s.is_match && !parts.empty())
          parts.back().second = s.end;
        else
          parts.emplace_back(s.begin, s.end);
        previous_match = s.is_match;
      }
      break;
    }
  }
  for (auto [begin, end] : parts)
    if (end > begin) out.push_back({piece.text.substr(begin, end - begin), piece.at_text_start && begin == 0});
}

using PreTokenizer = std::function<void(std::vector<Piece>&)>;

struct PreTokenizerInfo {
  bool byte_level = false;          // a ByteLevel step maps pieces to GPT-2's alphabet
  bool metaspace = false;           // a Metaspace step spells spaces as "▁"
  std::vector<std::string> regexes;  // split patterns in order (GPT-2's when ByteLevel uses its own)
  bool individual_digits = false;
};

SplitBehavior parse_behavior(const json& config, const std::string& where) {
  std::string name = string_member(config, "behavior", where);
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  throw FormatError(where + ".behavior \"" + name + "\" is not a split behaviour");
}

PreTokenizer split_step(Pattern pattern, SplitBehavior behavior, bool invert) {
  return [pattern = std::move(pattern), behavior, invert](std::vector<Piece>& pieces) {
    std::vector<Piece> out;
    out.reserve(pieces.size() * 2);
    for (const Piece& piece : pieces) split_piece(piece, pattern.find_all(piece.text), behavior, invert, out);
    pieces = std::move(out);
  };
}

// Metaspace's prepend rule: "always", "first" (only the piece at the start of the text), "never".
enum class PrependScheme { kAlways, kFirst, kNever };

PrependScheme parse_prepend_scheme(const json& config) {
  if (const json* scheme = member(config, "prepend_scheme"); scheme && scheme->is_string()) {
    std::string s = scheme->get<std::string>();
    if (s == "first") return PrependScheme::kFirst;
    if (s == "never") return PrependScheme::kNever;
    return PrependScheme::kAlways;
  }
  // Files older than prepend_scheme say add_prefix_space instead.
  return bool_member(config, "add_prefix_space", true) ? PrependScheme::kAlways : PrependScheme::kNever;
}

std::string metaspace_replacement(const json& config, const std::string& where) {
  if (const json* r = member(config, "replacement"); r && r->is_string()) return r->get<std::string>();
  if (const json* r = member(config, "str_rep"); r && r->is_string()) return r->get<std::string>();
  throw FormatError(where + ".replacement must be a string");
}

void parse_pre_tokenizer(const json& config, const std::string& where, std::vector<PreTokenizer>& steps,
                         PreTokenizerInfo& info) {
  const std::string type = type_of(config, where);
  if (type == "Sequence") {
    const json* list = member(config, "pretokenizers");
    if (!list || !list->is_array()) throw FormatError(where + ".pretokenizers must be a list");
    for (size_t i = 0; i < list->size(); i++)
      parse_pre_tokenizer((*list)[i], where + ".pretokenizers[" + std::to_string(i) + "]", steps, info);
  } else if (type == "Split") {
    Pattern pattern = parse_pattern(config, where);
    if (pattern.regex) {
      const json& regex_json = config["pattern"]["Regex"];
      info.regexes.push_back(regex_json.get<std::string>());
    }
    steps.push_back(split_step(std::move(pattern), parse_behavior(config, where), bool_member(config, "invert", false)));
  } else if (type == "Digits") {
    info.individual_digits = bool_member(config, "individual_digits", false);
    Pattern digits;
    digits.regex = compile(R"(\p{N})", where);
    steps.push_back(split_step(std::move(digits), info.individual_digits ? SplitBehavior::kIsolated
                                                                         : SplitBehavior::kContiguous, false));
  } else if (type == "ByteLevel") {
    if (info.byte_level) throw FormatError(where + ": a second ByteLevel step is not supported");
    info.byte_level = true;
    const bool add_prefix_space = bool_member(config, "add_prefix_space", false);
    const bool use_regex = bool_member(config, "use_regex", true);
    std::shared_ptr<const Regex> regex;
    if (use_regex) {
      regex = compile(kGpt2Pattern, where);
      info.regexes.push_back(kGpt2Pattern);
    }
    steps.push_back([add_prefix_space, regex](std::vector<Piece>& pieces) {
      std::vector<Piece> out;
      out.reserve(pieces.size() * 2);
      for (Piece& piece : pieces) {
        if (add_prefix_space && (piece.text.empty() || piece.text[0] != ' ')) piece.text = " " + piece.text;  // (not insert(): GCC 12 warns falsely)
        if (regex)
          split_piece(piece, regex->find_all(piece.text), SplitBehavior::kIsolated, false, out);
        else
          out.push_back(std::move(piece));
      }
      const auto& alphabet = bpe::byte_alphabet();
      for (Piece& piece : out) piece.text = alphabet.encode(piece.text);
      pieces = std::move(out);
    });
  } else if (type == "Metaspace") {
    info.metaspace = true;
    std::string replacement = metaspace_replacement(config, where);
    PrependScheme scheme = parse_prepend_scheme(config);
    const bool split = bool_member(config, "split", true);
    steps.push_back([replacement, scheme, split](std::vector<Piece>& pieces) {
      std::vector<Piece> out;
      for (Piece& piece : pieces) {
        piece.text = replace_all(piece.text, " ", replacement);
        const bool starts_with_replacement = piece.text.compare(0, replacement.size(), replacement) == 0;
        if (!starts_with_replacement &&
            (scheme == PrependScheme::kAlways || (scheme == PrependScheme::kFirst && piece.at_text_start)))
          piece.text.insert(0, replacement);
        if (split) {
          Pattern at_replacement;
          at_replacement.literal = replacement;
          split_piece(piece, at_replacement.find_all(piece.text), SplitBehavior::kMergedWithNext, false, out);
        } else {
          out.push_back(std::move(piece));
        }
      }
      pieces = std::move(out);
    });
  } else {
    throw FormatError(where + ".type \"" + type +
                      "\" is not supported (supported: Sequence, Split, Digits, ByteLevel, Metaspace)");
  }
}

// ---- decoders -----------------------------------------------------------------------------------

using Decoder = std::function<void(std::vector<std::string>&)>;

struct DecoderInfo {
  bool byte_level = false;
  bool byte_fallback = false;
  bool metaspace = false;
};

std::optional<uint8_t> byte_fallback_value(std::string_view piece) {
  // "<0xNN>" with two upper- or lower-case hex digits.
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return std::nullopt;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  int hi = hex(piece[3]), lo = hex(piece[4]);
  if (hi < 0 || lo < 0) return std::nullopt;
  return static_cast<uint8_t>(hi * 16 + lo);
}

void parse_decoder(const json& config, const std::string& where, std::vector<Decoder>& steps, DecoderInfo& info) {
  const std::string type = type_of(config, where);
  if (type == "Sequence") {
    const json* list = member(config, "decoders");
    if (!list || !list->is_array()) throw FormatError(where + ".decoders must be a list");
    for (size_t i = 0; i < list->size(); i++)
      parse_decoder((*list)[i], where + ".decoders[" + std::to_string(i) + "]", steps, info);
  } else if (type == "ByteLevel") {
    info.byte_level = true;
    steps.push_back([](std::vector<std::string>& tokens) {
      const auto& alphabet = bpe::byte_alphabet();
      for (auto& t : tokens) t = alphabet.decode(t);
    });
  } else if (type == "Replace") {
    Pattern pattern = parse_pattern(config, where);
    std::string content = string_member(config, "content", where);
    steps.push_back([pattern, content](std::vector<std::string>& tokens) {
      for (auto& t : tokens) t = pattern.replace(t, content);
    });
  } else if (type == "ByteFallback") {
    info.byte_fallback = true;
    // Runs of <0xNN> pieces become one token holding those bytes.
    steps.push_back([](std::vector<std::string>& tokens) {
      std::vector<std::string> out;
      out.reserve(tokens.size());
      bool in_run = false;
      for (auto& t : tokens) {
        if (auto byte = byte_fallback_value(t)) {
          if (!in_run) out.emplace_back();
          out.back() += static_cast<char>(*byte);
          in_run = true;
        } else {
          out.push_back(std::move(t));
          in_run = false;
        }
      }
      tokens = std::move(out);
    });
  } else if (type == "Fuse") {
    steps.push_back([](std::vector<std::string>& tokens) {
      std::string all;
      for (const auto& t : tokens) all += t;
      tokens.assign(1, std::move(all));
    });
  } else if (type == "Strip") {
    std::string content = string_member(config, "content", where);
    const json* start_json = member(config, "start");
    const json* stop_json = member(config, "stop");
    size_t start = start_json && start_json->is_number_unsigned() ? start_json->get<size_t>() : 0;
    size_t stop = stop_json && stop_json->is_number_unsigned() ? stop_json->get<size_t>() : 0;
    steps.push_back([content, start, stop](std::vector<std::string>& tokens) {
      if (content.empty()) return;
      for (auto& t : tokens) {
        size_t begin = 0, end = t.size();
        for (size_t i = 0; i < start && t.compare(begin, content.size(), content) == 0; i++) begin += content.size();
        for (size_t i = 0; i < stop && end >= begin + content.size() &&
                           t.compare(end - content.size(), content.size(), content) == 0;
             i++)
          end -= content.size();
        t = t.substr(begin, end - begin);
      }
    });
  } else if (type == "Metaspace") {
    info.metaspace = true;
    std::string replacement = metaspace_replacement(config, where);
    const bool strip_first = parse_prepend_scheme(config) != PrependScheme::kNever;
    steps.push_back([replacement, strip_first](std::vector<std::string>& tokens) {
      for (size_t i = 0; i < tokens.size(); i++) {
        std::string& t = tokens[i];
        // The space the pre-tokeniser prepended to the text is not part of it.
        if (i == 0 && strip_first && t.compare(0, replacement.size(), replacement) == 0) t.erase(0, replacement.size());
        t = replace_all(t, replacement, " ");
      }
    });
  } else {
    throw FormatError(where + ".type \"" + type +
                      "\" is not supported (supported: Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace)");
  }
}

// ---- added tokens -------------------------------------------------------------------------------

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, normalized = false, special = false;
};

// Finds added tokens in text: leftmost match first, longest among those starting there (as HF's
// Aho-Corasick with LeftmostLongest does).
class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  // HF partitions added tokens by their "normalized" flag alone: those without it are found in
  // the raw text, those with it in the normalised text.
  AddedTokenMatcher(const std::vector<AddedToken>& all, bool normalized_ones) : tokens_(&all) {
    for (size_t i = 0; i < all.size(); i++) {
      const std::string& content = all[i].content;
      if (content.empty() || all[i].normalized != normalized_ones) continue;
      if (!index_by_content_.emplace(content, static_cast<int32_t>(i)).second) continue;  // first wins
      lengths_by_first_byte_[static_cast<unsigned char>(content[0])].push_back(content.size());
      count_++;
    }
    // Longest first; a length is tried once however many tokens share it.
    for (auto& lengths : lengths_by_first_byte_) {
      std::sort(lengths.begin(), lengths.end(), std::greater<>());
      lengths.erase(std::unique(lengths.begin(), lengths.end()), lengths.end());
    }
  }
  bool empty() const { return count_ == 0; }

  struct Segment {
    std::string_view text;  // when token < 0
    size_t offset = 0;      // of text within the input
    int32_t token = -1;     // index into the added-token list
  };

  std::vector<Segment> split(std::string_view text) const {
    std::vector<Segment> out;
    if (count_ == 0) {
      if (!text.empty()) out.push_back({text, 0, -1});
      return out;
    }
    size_t emitted = 0;  // end of what has been handed out
    size_t pos = 0;
    while (pos < text.size()) {
      // Some vocabularies add thousands of tokens ("<unused123>"): look candidates up by length
      // in a hash map rather than comparing against each token.
      int32_t found = -1;
      for (size_t length : lengths_by_first_byte_[static_cast<unsigned char>(text[pos])]) {
        if (length > text.size() - pos) continue;
        auto it = index_by_content_.find(text.substr(pos, length));
        if (it == index_by_content_.end()) continue;
        const AddedToken& t = (*tokens_)[it->second];
        if (t.single_word && !is_single_word(text, pos, pos + length)) continue;
        found = it->second;
        break;
      }
      if (found < 0) {
        pos++;
        continue;
      }
      const AddedToken& t = (*tokens_)[found];
      size_t begin = pos, end = pos + t.content.size();
      if (t.lstrip)
        while (begin > emitted) {
          size_t start;
          if (!is_whitespace(code_point_before(text, begin, &start))) break;
          begin = start;
        }
      if (t.rstrip)
        while (end < text.size()) {
          size_t next = end;
          if (!is_whitespace(bpe::next_code_point(text, next))) break;
          end = next;
        }
      if (begin > emitted) out.push_back({text.substr(emitted, begin - emitted), emitted, -1});
      out.push_back({{}, begin, found});
      emitted = pos = end;
    }
    if (emitted < text.size()) out.push_back({text.substr(emitted), emitted, -1});
    return out;
  }

 private:
  static bool is_single_word(std::string_view text, size_t begin, size_t end) {
    bool left_ok = begin == 0 || !is_word_char(code_point_before(text, begin));
    size_t next = end;
    bool right_ok = end >= text.size() || !is_word_char(bpe::next_code_point(text, next));
    return left_ok && right_ok;
  }

  const std::vector<AddedToken>* tokens_ = nullptr;
  bpe::PieceMap index_by_content_;  // content -> index into *tokens_
  std::vector<std::vector<size_t>> lengths_by_first_byte_ = std::vector<std::vector<size_t>>(256);
  size_t count_ = 0;
};

// ---- the tokenizer ------------------------------------------------------------------------------

class HfBpeTokenizer : public Tokenizer {
 public:
  HfBpeTokenizer(const json& root, const std::filesystem::path& file);
  // The added-token matchers point into added_: the object stays where it was built.
  HfBpeTokenizer(const HfBpeTokenizer&) = delete;
  HfBpeTokenizer& operator=(const HfBpeTokenizer&) = delete;

  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(pieces_.size()); }
  std::string id_to_piece(int32_t id) const override {
    return id >= 0 && id < vocab_size() ? pieces_[static_cast<size_t>(id)] : std::string();
  }
  std::string kind() const override { return byte_level_ ? "bpe-bytelevel" : "bpe-spm"; }

  VocabExport export_vocab() const;

 private:
  void encode_segment(std::string_view text, bool at_text_start, std::vector<int32_t>& out) const;
  void read_special_ids(const json& root, const std::filesystem::path& file);
  int32_t find_token(const std::string& content) const;

  std::unique_ptr<bpe::BpeModel> model_;
  std::vector<AddedToken> added_;
  AddedTokenMatcher raw_matcher_, normalized_matcher_;
  std::vector<Normalizer> normalizers_;
  std::vector<PreTokenizer> pre_tokenizers_;
  PreTokenizerInfo pre_info_;
  std::vector<Decoder> decoders_;
  bool byte_level_ = false;
  std::vector<std::string> pieces_;        // by id: vocabulary piece or added-token content
  std::vector<int32_t> added_index_;       // by id: index into added_, or -1
  std::vector<bool> present_;              // by id: false for holes in the id range
};

HfBpeTokenizer::HfBpeTokenizer(const json& root, const std::filesystem::path& file) {
  if (!root.is_object()) throw FormatError("not a tokenizer.json (top level is not an object)");
  const json* model = member(root, "model");
  if (!model || !model->is_object()) throw FormatError("model is missing");
  std::string model_type = member(*model, "type") ? type_of(*model, "model") : std::string("BPE");
  if (model_type != "BPE")
    throw FormatError("model.type \"" + model_type + "\" is not supported (only BPE; Unigram/WordPiece/WordLevel are not)");
  if (const json* dropout = member(*model, "dropout"); dropout && dropout->is_number() && dropout->get<double>() > 0)
    throw FormatError("model.dropout > 0 is not supported (it makes encoding random)");

  // Vocabulary and merges.
  const json* vocab_json = member(*model, "vocab");
  if (!vocab_json || !vocab_json->is_object()) throw FormatError("model.vocab must be an object of piece: id");
  bpe::PieceMap vocab;
  vocab.reserve(vocab_json->size());
  for (auto it = vocab_json->begin(); it != vocab_json->end(); ++it) {
    // Bounded: ids index dense tables, and get<int32_t>() of a larger value would wrap negative.
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 || it.value().get<int64_t>() >= kMaxTokenId)
      throw FormatError("model.vocab[\"" + it.key() + "\"] is not an id in [0, " + std::to_string(kMaxTokenId) + ")");
    vocab.emplace(it.key(), it.value().get<int32_t>());
  }
  std::vector<std::pair<std::string, std::string>> merges;
  if (const json* merges_json = member(*model, "merges")) {
    if (!merges_json->is_array()) throw FormatError("model.merges must be a list");
    merges.reserve(merges_json->size());
    for (size_t i = 0; i < merges_json->size(); i++) {
      const json& m = (*merges_json)[i];
      if (m.is_string()) {
        const std::string& s = m.get_ref<const std::string&>();
        size_t space = s.find(' ');
        if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
          throw FormatError("model.merges[" + std::to_string(i) + "] \"" + s + "\" is not \"left right\"");
        merges.emplace_back(s.substr(0, space), s.substr(space + 1));
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
      } else {
        throw FormatError("model.merges[" + std::to_string(i) + "] is neither \"a b\" nor [\"a\", \"b\"]");
      }
    }
  }
  bpe::BpeOptions options;
  if (const json* unk = member(*model, "unk_token"); unk && unk->is_string())
    if (auto it = vocab.find(unk->get<std::string>()); it != vocab.end()) options.unk_id = it->second;
  options.fuse_unk = bool_member(*model, "fuse_unk", false);
  options.byte_fallback = bool_member(*model, "byte_fallback", false);
  options.ignore_merges = bool_member(*model, "ignore_merges", false);
  if (const json* p = member(*model, "continuing_subword_prefix"); p && p->is_string())
    options.continuing_subword_prefix = p->get<std::string>();
  if (const json* s = member(*model, "end_of_word_suffix"); s && s->is_string())
    options.end_of_word_suffix = s->get<std::string>();
  try {
    model_ = std::make_unique<bpe::BpeModel>(std::move(vocab), merges, std::move(options));
  } catch (const std::invalid_argument& e) {
    throw FormatError(std::string("model.merges: ") + e.what());
  }

  // Added tokens.
  if (const json* added = member(root, "added_tokens")) {
    if (!added->is_array()) throw FormatError("added_tokens must be a list");
    for (size_t i = 0; i < added->size(); i++) {
      const json& a = (*added)[i];
      const std::string where = "added_tokens[" + std::to_string(i) + "]";
      const json* id = member(a, "id");
      if (!id || !id->is_number_integer() || id->get<int64_t>() < 0 || id->get<int64_t>() >= kMaxTokenId)
        throw FormatError(where + ".id must be an integer in [0, " + std::to_string(kMaxTokenId) + ")");
      AddedToken t;
      t.id = id->get<int32_t>();
      t.content = string_member(a, "content", where);
      t.single_word = bool_member(a, "single_word", false);
      t.lstrip = bool_member(a, "lstrip", false);
      t.rstrip = bool_member(a, "rstrip", false);
      t.special = bool_member(a, "special", false);
      t.normalized = bool_member(a, "normalized", !t.special);
      added_.push_back(std::move(t));
    }
  }
  raw_matcher_ = AddedTokenMatcher(added_, /*normalized_ones=*/false);
  normalized_matcher_ = AddedTokenMatcher(added_, /*normalized_ones=*/true);

  // Id table: vocabulary pieces, overridden by added tokens.
  int32_t max_id = -1;
  for (const auto& [piece, id] : model_->vocab()) max_id = std::max(max_id, id);
  for (const auto& t : added_) max_id = std::max(max_id, t.id);
  pieces_.assign(static_cast<size_t>(max_id + 1), std::string());
  present_.assign(pieces_.size(), false);
  added_index_.assign(pieces_.size(), -1);
  for (const auto& [piece, id] : model_->vocab()) pieces_[id] = piece, present_[id] = true;
  for (size_t i = 0; i < added_.size(); i++) {
    pieces_[added_[i].id] = added_[i].content;
    present_[added_[i].id] = true;
    added_index_[added_[i].id] = static_cast<int32_t>(i);
  }

  // Pipeline components.
  if (const json* n = member(root, "normalizer")) parse_normalizer(*n, "normalizer", normalizers_);
  if (const json* p = member(root, "pre_tokenizer")) parse_pre_tokenizer(*p, "pre_tokenizer", pre_tokenizers_, pre_info_);
  DecoderInfo decoder_info;
  if (const json* d = member(root, "decoder")) parse_decoder(*d, "decoder", decoders_, decoder_info);

  byte_level_ = pre_info_.byte_level;
  if (byte_level_ && !decoder_info.byte_level)
    throw FormatError("decoder: a ByteLevel pre_tokenizer needs a ByteLevel decoder (found none)");
  if (!byte_level_) {
    // SentencePiece-style: spaces must become "▁" somewhere, else this is a BPE flavour (e.g.
    // whitespace-split BPE with end-of-word suffixes) that nothing here was checked against.
    bool spm_spaces = pre_info_.metaspace;
    if (const json* n = member(root, "normalizer")) spm_spaces |= n->dump().find(kMetaspace) != std::string::npos;
    if (!spm_spaces)
      throw FormatError("pre_tokenizer/normalizer: neither ByteLevel nor SentencePiece-style (\"\u2581\" for spaces); "
                        "this BPE layout is not supported");
  }
  read_special_ids(root, file);
}

int32_t HfBpeTokenizer::find_token(const std::string& content) const {
  for (const auto& t : added_)
    if (t.content == content) return t.id;
  auto it = model_->vocab().find(content);
  return it == model_->vocab().end() ? -1 : it->second;
}

void HfBpeTokenizer::read_special_ids(const json& root, const std::filesystem::path& file) {
  // 1) tokenizer_config.json beside the file names them; 2) a TemplateProcessing post-processor
  // shows which special token goes before/after the text; 3) well-known spellings.
  std::optional<int32_t> bos, eos;
  std::ifstream config_in(file.parent_path() / "tokenizer_config.json");
  if (config_in) {
    json config = json::parse(config_in, nullptr, false);
    auto token_of = [&](const char* key) -> std::optional<int32_t> {
      const json* v = member(config, key);
      std::string content;
      if (v && v->is_string()) content = v->get<std::string>();
      else if (v && v->is_object() && member(*v, "content") && (*v)["content"].is_string()) content = (*v)["content"].get<std::string>();
      if (content.empty()) return std::nullopt;
      int32_t id = find_token(content);
      return id >= 0 ? std::optional<int32_t>(id) : std::nullopt;
    };
    if (!config.is_discarded()) bos = token_of("bos_token"), eos = token_of("eos_token");
  }
  std::function<void(const json&)> scan_post = [&](const json& pp) {
    const json* type = member(pp, "type");
    if (!type || !type->is_string()) return;
    if (*type == "Sequence") {
      if (const json* list = member(pp, "processors"); list && list->is_array())
        for (const auto& p : *list) scan_post(p);
    } else if (*type == "TemplateProcessing") {
      const json* single = member(pp, "single");
      if (!single || !single->is_array()) return;
      bool seen_sequence = false;
      for (const auto& item : *single) {
        if (member(item, "Sequence")) {
          seen_sequence = true;
        } else if (const json* special = member(item, "SpecialToken")) {
          if (const json* id = member(*special, "id"); id && id->is_string()) {
            int32_t token = find_token(id->get<std::string>());
            if (token < 0) continue;
            if (!seen_sequence && !bos) bos = token;
            if (seen_sequence && !eos) eos = token;
          }
        }
      }
    }
  };
  if (const json* pp = member(root, "post_processor")) scan_post(*pp);
  auto first_known = [&](std::initializer_list<const char*> names) -> std::optional<int32_t> {
    for (const char* name : names)
      if (int32_t id = find_token(name); id >= 0) return id;
    return std::nullopt;
  };
  if (!bos) bos = first_known({"<|begin_of_text|>", "<s>", "<bos>", "<|startoftext|>", "<|endoftext|>"});
  if (!eos) eos = first_known({"<|end_of_text|>", "</s>", "<eos>", "<|endoftext|>"});
  bos_id_ = bos.value_or(-1);
  eos_id_ = eos.value_or(-1);
}

void HfBpeTokenizer::encode_segment(std::string_view text, bool at_text_start, std::vector<int32_t>& out) const {
  std::vector<Piece> pieces{{std::string(text), at_text_start}};
  for (const auto& step : pre_tokenizers_) step(pieces);
  for (const auto& piece : pieces) model_->encode_word(piece.text, out);
}

std::vector<int32_t> HfBpeTokenizer::encode(std::string_view text) const {
  std::string owned;
  bool well_formed = true;
  for (size_t pos = 0; pos < text.size();) {
    size_t len = bpe::utf8_sequence_length(text, pos);
    if (len == 0) {
      well_formed = false;
      break;
    }
    pos += len;
  }
  if (!well_formed) {
    owned = bpe::sanitize_utf8(text);
    text = owned;
  }

  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  for (const auto& segment : raw_matcher_.split(text)) {
    if (segment.token >= 0) {
      ids.push_back(added_[segment.token].id);
      continue;
    }
    std::string normalized(segment.text);
    for (const auto& step : normalizers_) step(normalized);
    for (const auto& sub : normalized_matcher_.split(normalized)) {
      if (sub.token >= 0)
        ids.push_back(added_[sub.token].id);
      else
        encode_segment(sub.text, segment.offset == 0 && sub.offset == 0, ids);
    }
  }
  return ids;
}

std::string HfBpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size() || !present_[id]) continue;
    if (int32_t a = added_index_[id]; a >= 0 && added_[a].special) continue;
    tokens.push_back(pieces_[id]);
  }
  for (const auto& step : decoders_) step(tokens);
  std::string text;
  for (const auto& t : tokens) text += t;
  return text;
}

VocabExport HfBpeTokenizer::export_vocab() const {
  VocabExport v;
  v.model = byte_level_ ? "gpt2" : "llama";
  const size_t n = pieces_.size();
  v.tokens.resize(n);
  v.scores.assign(n, 0.0f);
  v.types.assign(n, static_cast<int32_t>(TokenType::kNormal));
  const int32_t n_merges = static_cast<int32_t>(model_->merges().size());
  for (size_t id = 0; id < n; id++) {
    if (!present_[id]) {
      // Holes in the id range: llama.cpp's converter names them like this too.
      v.tokens[id] = "[PAD" + std::to_string(id) + "]";
      v.types[id] = static_cast<int32_t>(TokenType::kUnused);
      continue;
    }
    v.tokens[id] = pieces_[id];
    const int32_t i = static_cast<int32_t>(id);
    if (model_->options().unk_id && *model_->options().unk_id == i) {
      v.types[id] = static_cast<int32_t>(TokenType::kUnknown);  // usually also a special added token
    } else if (int32_t a = added_index_[id]; a >= 0) {
      v.types[id] = static_cast<int32_t>(added_[a].special ? TokenType::kControl : TokenType::kUserDefined);
    } else if (!byte_level_ && model_->options().byte_fallback && byte_fallback_value(pieces_[id])) {
      v.types[id] = static_cast<int32_t>(TokenType::kByte);
    }
    if (!byte_level_ && v.types[id] == static_cast<int32_t>(TokenType::kNormal)) {
      // llama.cpp's SPM tokenizer merges the adjacent pair whose joined piece scores highest;
      // scoring a piece by minus the rank of the merge that makes it reproduces BPE's order.
      // Pieces no merge makes (single characters) rank below all of them, in id order, as
      // SentencePiece's own BPE models score them.
      int32_t rank = model_->producing_merge_rank(i);
      v.scores[id] = rank >= 0 ? -static_cast<float>(rank) : -static_cast<float>(n_merges + i);
    }
  }
  if (byte_level_) {
    v.merges.reserve(model_->merges().size());
    for (const auto& [left, right] : model_->merges()) v.merges.push_back(left + " " + right);
    const auto& r = pre_info_.regexes;
    if (r.size() == 1 && r[0] == kLlama3Pattern) v.pre = "llama-bpe";
    else if (r.size() == 1 && r[0] == kQwen2Pattern) v.pre = "qwen2";
    else if (r.size() == 1 && r[0] == kGpt2Pattern && pre_info_.individual_digits) v.pre = "smollm";
    else if (r.size() == 1 && r[0] == kGpt2Pattern) v.pre = "gpt-2";
  } else {
    v.merges.reserve(model_->merges().size());
    for (const auto& [left, right] : model_->merges()) v.merges.push_back(left + " " + right);
    v.pre = "default";
  }
  return v;
}

// Minimal protobuf walk over SentencePiece's ModelProto: field 1 is the repeated
// SentencePiece {1: piece, 2: score (float), 3: type (enum)}. libsentencepiece does not install
// the generated proto header, so the piece types (user-defined in particular) are read here.
struct ProtoReader {
  std::string_view data;
  size_t pos = 0;
  bool done() const { return pos >= data.size(); }
  uint64_t varint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos >= data.size()) throw FormatError("truncated protobuf varint");
      uint8_t b = static_cast<uint8_t>(data[pos++]);
      value |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return value;
    }
    throw FormatError("malformed protobuf varint");
  }
  std::string_view bytes(size_t n) {
    if (pos + n > data.size()) throw FormatError("truncated protobuf field");
    std::string_view out = data.substr(pos, n);
    pos += n;
    return out;
  }
  void skip(uint32_t wire_type) {
    switch (wire_type) {
      case 0: varint(); break;
      case 1: bytes(8); break;
      case 2: bytes(varint()); break;
      case 5: bytes(4); break;
      default: throw FormatError("unsupported protobuf wire type " + std::to_string(wire_type));
    }
  }
};

}  // namespace

std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw input_error(file.string(), "cannot open");
  json root;
  try {
    root = json::parse(in);
  } catch (const json::exception& e) {
    throw input_error(file.string(), std::string("not valid JSON: ") + e.what());
  }
  try {
    return std::make_unique<HfBpeTokenizer>(root, file);
  } catch (const FormatError& e) {
    throw input_error(file.string(), e.what());
  } catch (const json::exception& e) {
    throw input_error(file.string(), std::string("unexpected layout: ") + e.what());
  }
}

VocabExport export_vocab(const Tokenizer& tokenizer) {
  if (const auto* hf = dynamic_cast<const HfBpeTokenizer*>(&tokenizer)) return hf->export_vocab();
  throw UserError("vocabulary export of a \"" + tokenizer.kind() +
                  "\" tokenizer needs its model file: use export_sentencepiece_vocab(tokenizer.model)");
}

VocabExport export_sentencepiece_vocab(const std::filesystem::path& model_file) {
  sentencepiece::SentencePieceProcessor sp;
  sentencepiece::util::Status status;
  try {
    status = sp.Load(model_file.string());
  } catch (const std::exception& e) {  // libsentencepiece's trie builder throws on some malformed models
    throw input_error(model_file.string(), std::string("not a SentencePiece model: ") + e.what());
  }
  if (!status.ok()) throw input_error(model_file.string(), "not a SentencePiece model: " + status.ToString());
  const std::string proto = sp.serialized_model_proto();
  VocabExport v;
  v.model = "llama";
  v.pre = "default";
  try {
    ProtoReader reader{proto};
    while (!reader.done()) {
      uint64_t key = reader.varint();
      if ((key >> 3) != 1 || (key & 7) != 2) {
        reader.skip(static_cast<uint32_t>(key & 7));
        continue;
      }
      ProtoReader piece{reader.bytes(reader.varint())};
      std::string text;
      float score = 0.0f;
      int32_t type = static_cast<int32_t>(TokenType::kNormal);
      while (!piece.done()) {
        uint64_t k = piece.varint();
        if (k == ((1 << 3) | 2)) {
          text = std::string(piece.bytes(piece.varint()));
        } else if (k == ((2 << 3) | 5)) {
          std::string_view raw = piece.bytes(4);
          std::memcpy(&score, raw.data(), 4);  // protobuf floats are little-endian, as is x86
        } else if (k == ((3 << 3) | 0)) {
          type = static_cast<int32_t>(piece.varint());
        } else {
          piece.skip(static_cast<uint32_t>(k & 7));
        }
      }
      v.tokens.push_back(std::move(text));
      v.scores.push_back(score);
      v.types.push_back(type);
    }
  } catch (const FormatError& e) {
    throw input_error(model_file.string(), e.what());
  }
  if (static_cast<int>(v.tokens.size()) != sp.GetPieceSize())
    throw input_error(model_file.string(), "piece count in the proto disagrees with libsentencepiece");
  return v;
}

}  // namespace llmprune
