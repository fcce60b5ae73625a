// NFC per UAX #15: full canonical decomposition, canonical ordering of combining marks, then
// canonical composition of starter + mark pairs that are not blocked. Hangul syllables are
// decomposed and composed arithmetically (Unicode ch. 3.12) rather than from the tables.
#include "tokenizer/bpe_nfc.h"

#include <algorithm>
#include <vector>

#include "tokenizer/bpe_text.h"

namespace llmprune::bpe {
namespace {

constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

const nfc_data::Decomposition* find_decomposition(uint32_t cp) {
  const auto* begin = nfc_data::kDecompositions;
  const auto* end = begin + nfc_data::kDecompositionCount;
  const auto* it = std::lower_bound(begin, end, cp, [](const nfc_data::Decomposition& d, uint32_t c) { return d.code_point < c; });
  return it != end && it->code_point == cp ? it : nullptr;
}

void decompose(uint32_t cp, std::vector<uint32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    uint32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  const nfc_data::Decomposition* d = find_decomposition(cp);
  if (!d) {
    out.push_back(cp);
    return;
  }
  decompose(d->first, out);
  if (d->second) decompose(d->second, out);
}

// The primary composite of (first, second), or 0.
uint32_t compose(uint32_t first, uint32_t second) {
  if (first >= kLBase && first < kLBase + kLCount && second >= kVBase && second < kVBase + kVCount)
    return kSBase + ((first - kLBase) * kVCount + (second - kVBase)) * kTCount;
  if (first >= kSBase && first < kSBase + kSCount && (first - kSBase) % kTCount == 0 && second > kTBase &&
      second < kTBase + kTCount)
    return first + (second - kTBase);
  const auto* begin = nfc_data::kCompositions;
  const auto* end = begin + nfc_data::kCompositionCount;
  const auto* it = std::lower_bound(begin, end, std::pair(first, second), [](const nfc_data::Composition& c, std::pair<uint32_t, uint32_t> key) {
    return c.first != key.first ? c.first < key.first : c.second < key.second;
  });
  return it != end && it->first == first && it->second == second ? it->composite : 0;
}

// Characters below U+0300 are all starters without decompositions that nothing composes with
// unless a combining mark follows; text made only of them is already NFC.
bool trivially_nfc(std::string_view text) {
  for (size_t i = 0; i < text.size(); i++) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0xCC) return false;  // lead bytes from U+0300 up
  }
  return true;
}

}  // namespace

uint8_t canonical_combining_class(uint32_t cp) {
  if (cp < 0x300) return 0;
  const auto* begin = nfc_data::kCombiningClasses;
  const auto* end = begin + nfc_data::kCombiningClassCount;
  const auto* it = std::upper_bound(begin, end, cp, [](uint32_t c, const nfc_data::CombiningClassRange& r) { return c < r.first; });
  if (it == begin) return 0;
  --it;
  return cp <= it->last ? it->combining_class : 0;
}

std::string to_nfc(std::string_view text) {
  if (trivially_nfc(text)) return std::string(text);

  std::vector<uint32_t> cps;
  cps.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) decompose(next_code_point(text, pos), cps);

  // Canonical ordering: within each run of non-starters, stable-sort by combining class.
  std::vector<uint8_t> classes(cps.size());
  for (size_t i = 0; i < cps.size(); i++) classes[i] = canonical_combining_class(cps[i]);
  for (size_t i = 0; i < cps.size();) {
    if (classes[i] == 0) {
      i++;
      continue;
    }
    size_t j = i;
    while (j < cps.size() && classes[j] != 0) j++;
    // Insertion sort: runs are short and stability is required.
    for (size_t a = i + 1; a < j; a++)
      for (size_t b = a; b > i && classes[b - 1] > classes[b]; b--) {
        std::swap(classes[b - 1], classes[b]);
        std::swap(cps[b - 1], cps[b]);
      }
    i = j;
  }

  // Canonical composition. A character C is blocked from the last starter S when a character
  // kept between them has class 0 or a class >= C's; canonical ordering makes the last kept one
  // the largest, so tracking it suffices.
  size_t out = 0;
  size_t starter = SIZE_MAX;
  bool adjacent = false;  // nothing kept between the starter and the next character
  int last_class = 0;
  for (size_t i = 0; i < cps.size(); i++) {
    const uint32_t cp = cps[i];
    const int cls = classes[i];
    if (starter != SIZE_MAX && (adjacent || last_class < cls))
      if (uint32_t composite = compose(cps[starter], cp)) {
        cps[starter] = composite;
        continue;
      }
    cps[out] = cp;
    if (cls == 0) {
      starter = out;
      adjacent = true;
    } else {
      adjacent = false;
      last_class = cls;
    }
    out++;
  }
  cps.resize(out);

  std::string result;
  result.reserve(text.size());
  for (uint32_t cp : cps) append_utf8(result, cp);
  return result;
}

}  // namespace llmprune::bpe
