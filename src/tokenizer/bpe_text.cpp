#include "tokenizer/bpe_text.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdexcept>

namespace llmprune::bpe {

size_t utf8_sequence_length(std::string_view text, size_t pos) {
  auto byte = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(pos);
  if (lead < 0x80) return 1;
  size_t len;
  uint32_t min_cp;
  uint32_t cp;
  if ((lead & 0xE0) == 0xC0) {
    len = 2, min_cp = 0x80, cp = lead & 0x1F;
  } else if ((lead & 0xF0) == 0xE0) {
    len = 3, min_cp = 0x800, cp = lead & 0x0F;
  } else if ((lead & 0xF8) == 0xF0) {
    len = 4, min_cp = 0x10000, cp = lead & 0x07;
  } else {
    return 0;
  }
  if (pos + len > text.size()) return 0;
  for (size_t i = 1; i < len; i++) {
    if ((byte(pos + i) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (byte(pos + i) & 0x3F);
  }
  if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

std::string sanitize_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    size_t len = utf8_sequence_length(text, pos);
    if (len == 0) {
      out += "\xEF\xBF\xBD";
      pos++;
    } else {
      out.append(text.substr(pos, len));
      pos += len;
    }
  }
  return out;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

uint32_t next_code_point(std::string_view text, size_t& pos) {
  const unsigned char lead = static_cast<unsigned char>(text[pos]);
  size_t len = lead < 0x80 ? 1 : (lead & 0xE0) == 0xC0 ? 2 : (lead & 0xF0) == 0xE0 ? 3 : 4;
  uint32_t cp = len == 1 ? lead : len == 2 ? (lead & 0x1F) : len == 3 ? (lead & 0x0F) : (lead & 0x07);
  for (size_t i = 1; i < len && pos + i < text.size(); i++)
    cp = (cp << 6) | (static_cast<unsigned char>(text[pos + i]) & 0x3F);
  pos += len;
  return cp;
}

std::vector<std::string_view> split_chars(std::string_view text) {
  std::vector<std::string_view> chars;
  chars.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    size_t len = utf8_sequence_length(text, pos);
    if (len == 0) len = 1;  // callers pass sanitised text; be safe anyway
    chars.push_back(text.substr(pos, len));
    pos += len;
  }
  return chars;
}

ByteAlphabet::ByteAlphabet() : code_point_to_byte_(324, -1) {
  // Printable Latin-1 bytes stand for themselves; the other 68 bytes (controls, space, DEL,
  // NBSP, soft hyphen) are moved to U+0100.. in byte order. This is GPT-2's published scheme.
  auto printable = [](int b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); };
  uint32_t next_extra = 0x100;
  for (int b = 0; b < 256; b++) {
    uint32_t cp = printable(b) ? static_cast<uint32_t>(b) : next_extra++;
    append_utf8(byte_to_utf8_[b], cp);
    code_point_to_byte_[cp] = static_cast<int16_t>(b);
  }
}

std::string ByteAlphabet::encode(std::string_view raw) const {
  std::string out;
  out.reserve(raw.size() * 2);
  for (char c : raw) out += byte_to_utf8_[static_cast<unsigned char>(c)];
  return out;
}

std::string ByteAlphabet::decode(std::string_view spelled) const {
  std::string out;
  out.reserve(spelled.size());
  size_t pos = 0;
  while (pos < spelled.size()) {
    size_t len = utf8_sequence_length(spelled, pos);
    if (len == 0) {  // not ours to judge: pass the byte through
      out += spelled[pos++];
      continue;
    }
    size_t at = pos;
    int b = byte_of_code_point(next_code_point(spelled, at));
    if (b >= 0)
      out += static_cast<char>(b);
    else
      out.append(spelled.substr(pos, len));
    pos += len;
  }
  return out;
}

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet alphabet;
  return alphabet;
}

Regex::Regex(const std::string& pattern) : pattern_(pattern) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
  if (!code) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof(message));
    throw std::invalid_argument(std::string(reinterpret_cast<char*>(message)) + " at offset " +
                                std::to_string(error_offset));
  }
  // JIT makes the split about 3-5x faster; when unavailable pcre2_match interprets instead.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  code_ = code;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> spans;
  auto* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* match = pcre2_match_data_create_from_pattern(code, nullptr);
  if (!match) throw std::bad_alloc();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  while (start <= text.size()) {
    int rc = pcre2_match(code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, match, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      pcre2_match_data_free(match);
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof(message));
      throw std::runtime_error("regex match failed: " + std::string(reinterpret_cast<char*>(message)));
    }
    PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match);
    size_t begin = ovector[0], end = ovector[1];
    if (end > begin) {
      spans.emplace_back(begin, end);
      start = end;
    } else {
      // An empty match contributes nothing; step over one character to make progress.
      if (begin >= text.size()) break;
      size_t len = utf8_sequence_length(text, begin);
      start = begin + (len ? len : 1);
    }
  }
  pcre2_match_data_free(match);
  return spans;
}

std::string oniguruma_to_pcre2(std::string_view pattern) {
  static constexpr std::string_view kSpaceSet = "\\t\\n\\x{0B}\\f\\r\\x{85}\\p{Z}";
  std::string out;
  out.reserve(pattern.size() + 32);
  int class_depth = 0;  // inside [...] (Oniguruma allows nesting)
  for (size_t i = 0; i < pattern.size(); i++) {
    char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      char e = pattern[i + 1];
      i++;
      if (e == 's') {
        if (class_depth > 0)
          out.append(kSpaceSet);
        else
          out.append("[").append(kSpaceSet).append("]");
      } else if (e == 'S' && class_depth == 0) {
        out.append("[^").append(kSpaceSet).append("]");
      } else if (e == 'S') {
        // A negated set inside a class is only expressible as a nested negated class in PCRE2
        // via POSIX-free syntax; fall back to PCRE2's own \S (differs only on U+0085).
        out.append("\\S");
      } else {
        out += '\\';
        out += e;
      }
      continue;
    }
    if (c == '[') {
      class_depth++;
      out += c;
      // A ']' right after '[' or '[^' is a literal member, not the end of the class.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (c == ']' && class_depth > 0) class_depth--;
    out += c;
  }
  return out;
}

}  // namespace llmprune::bpe
