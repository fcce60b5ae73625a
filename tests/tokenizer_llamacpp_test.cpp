// The SentencePiece path (libsentencepiece on LLaMA-2's genuine tokenizer.model) against
// llama.cpp's llama-spm test vectors, and the vocabulary export against llama.cpp's own GGUF of
// that vocabulary. Conventions are in tests/data/tokenizers/README.md.
#include <gtest/gtest.h>

#include "core/error.h"
#include "data/tokenizers/fixture_reader.h"
#include "io/gguf.h"
#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace llmprune {
namespace {

using namespace tokenizer_test;

std::filesystem::path llama2_model() { return shared_dir() / "fixtures/tokenizers/llama2/tokenizer.model"; }
std::filesystem::path vocab_dir() { return shared_dir() / "fixtures/tokenizers/llamacpp-vocab"; }

TEST(TokenizerLlamaCpp, SentencePieceMatchesLlamaSpmVectors) {
  if (!std::filesystem::exists(llama2_model())) GTEST_SKIP() << "no shared fixtures";
  auto tok = load_sentencepiece(llama2_model());
  EXPECT_EQ(tok->kind(), "sentencepiece");
  auto cases = read_cases(vocab_dir() / "ggml-vocab-llama-spm.gguf.inp", vocab_dir() / "ggml-vocab-llama-spm.gguf.out");
  ASSERT_GE(cases.size(), 40u);
  for (const auto& c : cases) {
    // The vectors include the dummy-prefix "▁" that SentencePiece itself adds: encode(text) as is.
    auto ids = tok->encode(c.input);
    EXPECT_EQ(join_ids(ids), join_ids(c.ids)) << "input " << escaped(c.input);
    // SentencePiece decoding removes the dummy prefix again, so this round trip is exact too,
    // except that a leading run of spaces loses one (the prefix and a real space look alike).
    std::string decoded = tok->decode(ids);
    if (c.input.empty() || c.input[0] != ' ') {
      EXPECT_EQ(decoded, c.input) << "round trip of " << escaped(c.input);
    }
  }
}

// export_sentencepiece_vocab() must give the pieces, scores and types llama.cpp's converter wrote
// into ggml-vocab-llama-spm.gguf for the same LLaMA-2 vocabulary.
TEST(TokenizerLlamaCpp, SentencePieceExportEqualsLlamaCppGguf) {
  const auto gguf_path = vocab_dir() / "ggml-vocab-llama-spm.gguf";
  if (!std::filesystem::exists(gguf_path) || !std::filesystem::exists(llama2_model())) GTEST_SKIP() << "no shared fixtures";
  auto file = gguf::GGUFFile::open(gguf_path.string());
  EXPECT_EQ(file.get_string("tokenizer.ggml.model"), "llama");
  auto tokens = file.get_string_array("tokenizer.ggml.tokens");
  auto scores = file.get_f32_array("tokenizer.ggml.scores");
  auto types = file.get_int_array("tokenizer.ggml.token_type");

  VocabExport v = export_sentencepiece_vocab(llama2_model());
  EXPECT_EQ(v.model, "llama");
  ASSERT_EQ(v.tokens.size(), tokens.size());
  ASSERT_EQ(v.scores.size(), scores.size());
  ASSERT_EQ(v.types.size(), types.size());
  size_t token_diffs = 0, score_diffs = 0, type_diffs = 0;
  for (size_t i = 0; i < tokens.size(); i++) {
    token_diffs += v.tokens[i] != tokens[i];
    score_diffs += v.scores[i] != scores[i];
    type_diffs += v.types[i] != types[i];
  }
  EXPECT_EQ(token_diffs, 0u);
  EXPECT_EQ(score_diffs, 0u);
  EXPECT_EQ(type_diffs, 0u);
  EXPECT_EQ(v.types[0], static_cast<int32_t>(TokenType::kUnknown));
  EXPECT_EQ(v.types[1], static_cast<int32_t>(TokenType::kControl));
  EXPECT_EQ(v.types[3], static_cast<int32_t>(TokenType::kByte));
}

TEST(TokenizerLlamaCpp, ExportVocabOfSentencePieceTokenizerPointsAtTheFileVariant) {
  if (!std::filesystem::exists(llama2_model())) GTEST_SKIP() << "no shared fixtures";
  auto tok = load_sentencepiece(llama2_model());
  EXPECT_THROW(export_vocab(*tok), UserError);
}

}  // namespace
}  // namespace llmprune
