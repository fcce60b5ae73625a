#pragma once
// Unicode NFC (canonical composition), for tokenizer.json's "NFC" normalizer (Qwen2 and others).
// The data tables are generated from Python's unicodedata by tools/tokref/gen_nfc_tables.py.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace llmprune::bpe {

// NFC of well-formed UTF-8 text.
std::string to_nfc(std::string_view text);

// Canonical combining class of a code point (0 for starters).
uint8_t canonical_combining_class(uint32_t cp);

namespace nfc_data {
struct CombiningClassRange {
  uint32_t first, last;
  uint8_t combining_class;
};
struct Decomposition {
  uint32_t code_point, first, second;  // second == 0 for singletons
};
struct Composition {
  uint32_t first, second, composite;
};
extern const char* const kUnicodeVersion;
extern const CombiningClassRange kCombiningClasses[];
extern const size_t kCombiningClassCount;
extern const Decomposition kDecompositions[];  // sorted by code_point
extern const size_t kDecompositionCount;
extern const Composition kCompositions[];  // sorted by (first, second)
extern const size_t kCompositionCount;
}  // namespace nfc_data

}  // namespace llmprune::bpe
