// NFC (the "NFC" normalizer of tokenizer.json) against Python's unicodedata.normalize("NFC"),
// vectors in tests/data/tokenizers/nfc/cases.txt.
#include <gtest/gtest.h>

#include "data/tokenizers/fixture_reader.h"
#include "tokenizer/bpe_nfc.h"
#include "tokenizer/bpe_text.h"

namespace llmprune {
namespace {

using namespace tokenizer_test;

std::string from_hex_code_points(const std::string& hex) {
  std::istringstream in(hex);
  std::string out, word;
  while (in >> word) bpe::append_utf8(out, static_cast<uint32_t>(std::stoul(word, nullptr, 16)));
  return out;
}

TEST(TokenizerNfc, MatchesPythonUnicodedata) {
  std::istringstream lines(read_file(fixtures_dir() / "nfc/cases.txt"));
  std::string line;
  size_t cases = 0, failures = 0;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    size_t tab = line.find('\t');
    ASSERT_NE(tab, std::string::npos) << line;
    std::string input = from_hex_code_points(line.substr(0, tab));
    std::string expected = from_hex_code_points(line.substr(tab + 1));
    cases++;
    if (bpe::to_nfc(input) != expected && ++failures <= 10) ADD_FAILURE() << "NFC of " << line.substr(0, tab);
  }
  EXPECT_GT(cases, 5000u);
  EXPECT_EQ(failures, 0u);
}

TEST(TokenizerNfc, Basics) {
  EXPECT_EQ(bpe::to_nfc("plain ascii"), "plain ascii");
  EXPECT_EQ(bpe::to_nfc("cafe\xCC\x81"), "caf\xC3\xA9");                       // e + U+0301 -> é
  EXPECT_EQ(bpe::to_nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"), "\xEA\xB0\x81");  // jamo -> 각
  EXPECT_EQ(bpe::to_nfc("\xE2\x84\xA6"), "\xCE\xA9");                           // Ohm sign -> Omega
  EXPECT_EQ(bpe::to_nfc("\xEF\xAC\x81"), "\xEF\xAC\x81");                       // ﬁ stays (compatibility only)
  EXPECT_EQ(bpe::canonical_combining_class(0x301), 230);
  EXPECT_EQ(bpe::canonical_combining_class('a'), 0);
}

}  // namespace
}  // namespace llmprune
