// tokenizer.json BPE against reference ids made by HF's tokenizers (JS port), see
// tests/data/tokenizers/README.md for where every fixture comes from.
#include <gtest/gtest.h>

#include <random>
#include <thread>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/tokenizers/fixture_reader.h"
#include "tokenizer/bpe_text.h"
#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace llmprune {
namespace {

using namespace tokenizer_test;

// Loading LLaMA-3's 128k vocabulary and 280k merges takes a moment; share one per file.
const Tokenizer& cached(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> loaded;
  auto& slot = loaded[name];
  if (!slot) slot = load_hf_tokenizer_json(fixtures_dir() / name / "tokenizer.json");
  return *slot;
}

bool has_added_token(const std::vector<int32_t>& ids, int32_t first_added_id, const std::vector<int32_t>& others = {}) {
  for (int32_t id : ids)
    if (id >= first_added_id || std::find(others.begin(), others.end(), id) != others.end()) return true;
  return false;
}

// Compares every case's ids exactly; checks decode(encode(s)) == s where no added (special)
// token is involved, since decode drops special tokens by contract.
void check_fixture(const Tokenizer& tok, const std::filesystem::path& dir, int32_t first_added_id,
                   const std::vector<int32_t>& other_added_ids, size_t min_cases) {
  auto cases = read_cases(dir / "cases.inp", dir / "cases.out");
  ASSERT_GE(cases.size(), min_cases);
  size_t mismatches = 0, round_trips = 0;
  for (const auto& c : cases) {
    auto ids = tok.encode(c.input);
    if (ids != c.ids) {
      if (++mismatches <= 10)
        ADD_FAILURE() << "input " << escaped(c.input) << "\n  expected" << join_ids(c.ids) << "\n  got     " << join_ids(ids);
      continue;
    }
    if (!has_added_token(ids, first_added_id, other_added_ids)) {
      EXPECT_EQ(tok.decode(ids), c.input) << "round trip of " << escaped(c.input);
      round_trips++;
    }
  }
  EXPECT_EQ(mismatches, 0u) << "of " << cases.size() << " cases";
  EXPECT_GT(round_trips, cases.size() * 3 / 4);
}

TEST(TokenizerHf, Llama3MatchesReference) {
  const Tokenizer& tok = cached("llama3");
  EXPECT_EQ(tok.kind(), "bpe-bytelevel");
  EXPECT_EQ(tok.vocab_size(), 128256);
  EXPECT_EQ(tok.bos_id(), 128000);
  EXPECT_EQ(tok.eos_id(), 128001);
  check_fixture(tok, fixtures_dir() / "llama3", 128000, {}, 200);
}

TEST(TokenizerHf, Gpt2MatchesReference) {
  const Tokenizer& tok = cached("gpt2");
  EXPECT_EQ(tok.kind(), "bpe-bytelevel");
  EXPECT_EQ(tok.vocab_size(), 50257);
  EXPECT_EQ(tok.bos_id(), 50256);
  EXPECT_EQ(tok.eos_id(), 50256);
  check_fixture(tok, fixtures_dir() / "gpt2", 50256, {}, 200);
}

TEST(TokenizerHf, MistralSpmStyleMatchesReference) {
  const Tokenizer& tok = cached("mistral");
  EXPECT_EQ(tok.kind(), "bpe-spm");
  EXPECT_EQ(tok.vocab_size(), 32000);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  check_fixture(tok, fixtures_dir() / "mistral", 32000, {0, 1, 2}, 100);
}

// The LLaMA-3 vectors from llama.cpp (generated there with HF's Rust tokenizers).
TEST(TokenizerHf, Llama3MatchesLlamaCppVectors) {
  const auto dir = shared_dir() / "fixtures/tokenizers/llamacpp-vocab";
  if (!std::filesystem::exists(dir / "ggml-vocab-llama-bpe.gguf.inp")) GTEST_SKIP() << "no shared fixtures";
  auto cases = read_cases(dir / "ggml-vocab-llama-bpe.gguf.inp", dir / "ggml-vocab-llama-bpe.gguf.out");
  ASSERT_GE(cases.size(), 40u);
  const Tokenizer& tok = cached("llama3");
  for (const auto& c : cases) {
    auto ids = tok.encode(c.input);
    EXPECT_EQ(join_ids(ids), join_ids(c.ids)) << "input " << escaped(c.input);
    EXPECT_EQ(tok.decode(ids), c.input);
  }
}

std::string base64_decode(std::string_view in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  uint32_t bits = 0;
  int count = 0;
  for (char c : in) {
    int v = value(c);
    if (v < 0) break;  // '=' padding
    bits = (bits << 6) | static_cast<uint32_t>(v);
    count += 6;
    if (count >= 8) {
      count -= 8;
      out += static_cast<char>((bits >> count) & 0xFF);
    }
  }
  return out;
}

// The npm copy of LLaMA-3's tokenizer.json has exactly Meta's 128000 ranked byte strings
// (shared/.../llama3/tokenizer.model, tiktoken format "base64 rank"), so the fixture is genuine.
TEST(TokenizerHf, Llama3VocabularyEqualsMetasTiktokenFile) {
  const auto model = shared_dir() / "fixtures/tokenizers/llama3/tokenizer.model";
  if (!std::filesystem::exists(model)) GTEST_SKIP() << "no shared fixtures";
  const Tokenizer& tok = cached("llama3");
  std::istringstream lines(read_file(model));
  std::string encoded;
  int32_t rank, count = 0, mismatches = 0;
  while (lines >> encoded >> rank) {
    std::string bytes = base64_decode(encoded);
    if (tok.decode({rank}) != bytes) mismatches++;
    count++;
  }
  EXPECT_EQ(count, 128000);
  EXPECT_EQ(mismatches, 0);
}

TEST(TokenizerHf, LoadTokenizerPrefersTokenizerJson) {
  auto tok = load_tokenizer(fixtures_dir() / "mistral");
  EXPECT_EQ(tok->kind(), "bpe-spm");
  EXPECT_EQ(tok->encode("Hello world"), (std::vector<int32_t>{22557, 1526}));
}

TEST(TokenizerHf, InvalidUtf8IsEncodedAsReplacementCharacter) {
  const Tokenizer& tok = cached("llama3");
  EXPECT_EQ(tok.encode("a\xFF" "b"), tok.encode("a\xEF\xBF\xBD" "b"));
  EXPECT_EQ(tok.encode("\xE4\xBD"), tok.encode("\xEF\xBF\xBD\xEF\xBF\xBD"));
}

TEST(TokenizerHf, DecodeKeepsBytesOfPartialCharactersForStreaming) {
  const Tokenizer& tok = cached("llama3");
  auto ids = tok.encode("🦙 ok");
  ASSERT_GE(ids.size(), 2u);
  StreamDecoder stream(tok);
  std::string streamed;
  for (int32_t id : ids) streamed += stream.push(id);
  EXPECT_EQ(streamed, "🦙 ok");
}

TEST(TokenizerHf, SpecialTokensAreDroppedByDecode) {
  const Tokenizer& tok = cached("llama3");
  auto ids = tok.encode("<|begin_of_text|>Hi<|eot_id|>");
  ASSERT_EQ(ids.front(), 128000);
  EXPECT_EQ(tok.decode(ids), "Hi");
  EXPECT_EQ(tok.id_to_piece(128000), "<|begin_of_text|>");
  EXPECT_EQ(tok.id_to_piece(9906), "Hello");
}

// Arbitrary bytes: never a crash, and byte-level / byte-fallback vocabularies give back the
// text exactly (after ill-formed UTF-8 became U+FFFD).
TEST(TokenizerHf, RandomBytesRoundTrip) {
  std::mt19937 rng(42);
  const std::string alphabet = std::string("ab <|>\n\t ") + "\xC3\xA9\xE4\xB8\xAD\xF0\x9F\xA6\x99\x80\xFF";
  for (const char* name : {"llama3", "gpt2", "mistral"}) {
    const Tokenizer& tok = cached(name);
    int failures = 0;
    for (int i = 0; i < 2000; i++) {
      std::string s;
      const int len = static_cast<int>(rng() % 48);
      for (int k = 0; k < len; k++)
        s += rng() % 3 == 0 ? static_cast<char>(rng() % 256) : alphabet[rng() % alphabet.size()];
      std::string expected = bpe::sanitize_utf8(s);
      if (tok.decode(tok.encode(s)) != expected && ++failures <= 3) ADD_FAILURE() << name << ": " << escaped(s);
    }
    EXPECT_EQ(failures, 0) << name;
  }
}

// encode/decode are const and keep no caches: one tokenizer serves many threads.
TEST(TokenizerHf, ConcurrentEncodingGivesTheSameIds) {
  const Tokenizer& tok = cached("gpt2");
  auto cases = read_cases(fixtures_dir() / "gpt2/cases.inp", fixtures_dir() / "gpt2/cases.out");
  std::vector<int> failures(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; t++)
    threads.emplace_back([&, t] {
      for (int round = 0; round < 5; round++)
        for (size_t i = static_cast<size_t>(t); i < cases.size(); i += 2)
          failures[t] += tok.encode(cases[i].input) != cases[i].ids;
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures, std::vector<int>(4, 0));
}

// 1 MiB of mixed text round-trips through each tokenizer. Its speed is a figure, not a bound:
// bench/tokenizer.cpp prints encode/decode MB/s (a timed test here failed only under load).
TEST(TokenizerHf, EncodesOneMegabyteRoundTrip) {
  // Varied text: every fixture input in turn (all scripts, whitespace runs, numbers, code).
  std::string varied;
  for (const auto& c : read_cases(fixtures_dir() / "llama3/cases.inp", fixtures_dir() / "llama3/cases.out"))
    if (c.input.find("<|") == std::string::npos) varied += c.input + " ";
  std::string text;
  while (text.size() < (1u << 20)) text += varied;
  for (const char* name : {"llama3", "gpt2", "mistral"}) {
    const Tokenizer& tok = cached(name);
    auto ids = tok.encode(text);
    EXPECT_GT(ids.size(), text.size() / 16) << name;
    EXPECT_EQ(tok.decode(ids), text) << name;
  }
}

}  // namespace
}  // namespace llmprune
