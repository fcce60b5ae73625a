// Pipeline pieces the reference tokenizer cannot check (it does not implement them; see
// tools/tokref/gen_fixtures.mjs), error messages, and the vocabulary export, on small hand-made
// tokenizer.json files whose expected outputs follow from HF's documented semantics.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/tokenizers/fixture_reader.h"
#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace llmprune {
namespace {

using namespace tokenizer_test;
using nlohmann::json;

const std::string kSpace = "\xE2\x96\x81";  // ▁

class TempDir {
 public:
  TempDir() : path_(std::filesystem::temp_directory_path() / ("llmprune-tokc-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++))) {
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::filesystem::path write(const std::string& name, const std::string& text) const {
    std::ofstream(path_ / name, std::ios::binary) << text;
    return path_ / name;
  }

 private:
  static inline int counter_ = 0;
  std::filesystem::path path_;
};

std::unique_ptr<Tokenizer> load_json(const json& j) {
  TempDir dir;
  return load_hf_tokenizer_json(dir.write("tokenizer.json", j.dump()));
}

// A byte-level tokenizer whose vocabulary is the 256 byte characters plus `words`, with
// ignore_merges on and no merges: every pre-token that is a word comes out as one id, so the ids
// show exactly where the pre-tokeniser cut.
json word_probe(const json& pre_tokenizers, const std::vector<std::string>& words) {
  json vocab = json::object();
  int32_t next = 0;
  // The byte characters, spelled as GPT-2's alphabet spells them: printable Latin-1 bytes as
  // themselves, the other 68 bytes as U+0100.. in byte order.
  auto printable = [](int c) { return (c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF); };
  uint32_t extra = 0x100;
  for (int b = 0; b < 256; b++) {
    uint32_t cp = printable(b) ? static_cast<uint32_t>(b) : extra++;
    std::string s;
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    vocab[s] = next++;
  }
  for (const auto& w : words)
    if (!vocab.contains(w)) vocab[w] = next++;
  json seq = pre_tokenizers;
  seq.push_back({{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}});
  return {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}, {"ignore_merges", true}}},
          {"pre_tokenizer", {{"type", "Sequence"}, {"pretokenizers", seq}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"added_tokens", json::array()}};
}

std::vector<std::string> pieces(const Tokenizer& tok, const std::string& text) {
  std::vector<std::string> out;
  for (int32_t id : tok.encode(text)) out.push_back(tok.id_to_piece(id));
  return out;
}

using Pieces = std::vector<std::string>;
const Pieces kWords = {"a", "b", "c", "-", "--", "a-", "b-", "b--", "-b", "-c", "--c", "a-b", "a-b--c"};

json split(const std::string& behavior, bool invert, const json& pattern) {
  return json::array({{{"type", "Split"}, {"pattern", pattern}, {"behavior", behavior}, {"invert", invert}}});
}

TEST(TokenizerComponents, SplitBehaviours) {
  const json dash = {{"String", "-"}};
  auto cut = [&](const std::string& behavior, bool invert, const json& pattern) {
    return pieces(*load_json(word_probe(split(behavior, invert, pattern), kWords)), "a-b--c");
  };
  EXPECT_EQ(cut("Isolated", false, dash), (Pieces{"a", "-", "b", "-", "-", "c"}));
  EXPECT_EQ(cut("Removed", false, dash), (Pieces{"a", "b", "c"}));
  EXPECT_EQ(cut("MergedWithPrevious", false, dash), (Pieces{"a-", "b-", "-", "c"}));
  EXPECT_EQ(cut("MergedWithNext", false, dash), (Pieces{"a", "-b", "-", "-c"}));
  EXPECT_EQ(cut("Contiguous", false, dash), (Pieces{"a", "-", "b", "--", "c"}));
  const json letters = {{"Regex", "[a-c]"}};
  // Inverted, the letters are the content and the dashes between them the delimiters.
  EXPECT_EQ(cut("Isolated", true, letters), (Pieces{"a", "-", "b", "--", "c"}));
  EXPECT_EQ(cut("Removed", true, letters), (Pieces{"a", "b", "c"}));
  EXPECT_EQ(cut("MergedWithPrevious", true, letters), (Pieces{"a-", "b--", "c"}));
  EXPECT_EQ(cut("MergedWithNext", true, letters), (Pieces{"a", "-b", "--c"}));
}

TEST(TokenizerComponents, DigitsSplit) {
  json individual = json::array({{{"type", "Digits"}, {"individual_digits", true}}});
  json runs = json::array({{{"type", "Digits"}, {"individual_digits", false}}});
  Pieces words = {"x", "1", "2", "3", "12", "123", "y"};
  EXPECT_EQ(pieces(*load_json(word_probe(individual, words)), "x123y"), (Pieces{"x", "1", "2", "3", "y"}));
  EXPECT_EQ(pieces(*load_json(word_probe(runs, words)), "x123y"), (Pieces{"x", "123", "y"}));
}

// The \s of HF's patterns is Oniguruma's (Unicode White_Space, NEL included).
TEST(TokenizerComponents, RegexWhitespaceIsOnigurumasAndIncludesNel) {
  json pre = split("Removed", false, {{"Regex", "\\s+"}});
  auto tok = load_json(word_probe(pre, {"a", "b"}));
  EXPECT_EQ(pieces(*tok, "a\xC2\x85" "b"), (Pieces{"a", "b"}));               // U+0085 NEL
  EXPECT_EQ(pieces(*tok, "a\xE3\x80\x80" "b"), (Pieces{"a", "b"}));           // U+3000
  json not_space = split("Removed", false, {{"Regex", "[^\\sb]+"}});
  auto tok2 = load_json(word_probe(not_space, {"b", "\xC2\x85"}));
  EXPECT_EQ(tok2->encode("a\xC2\x85" "b").size(), 3u);  // "a" removed; NEL (2 bytes) and b kept
}

json spm_probe(const json& pre_tokenizer, const std::vector<std::string>& words) {
  json vocab = json::object();
  int32_t next = 0;
  vocab["<unk>"] = next++;
  for (const auto& w : words) vocab[w] = next++;
  return {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}, {"ignore_merges", true},
                     {"unk_token", "<unk>"}, {"byte_fallback", false}, {"fuse_unk", true}}},
          {"pre_tokenizer", pre_tokenizer},
          {"decoder", {{"type", "Metaspace"}, {"replacement", kSpace}, {"prepend_scheme", "always"}}},
          {"added_tokens", json::array({{{"id", 0}, {"content", "<unk>"}, {"special", true}}})}};
}

TEST(TokenizerComponents, MetaspaceSplitsBeforeEachSpace) {
  Pieces words = {kSpace, kSpace + "Hello", kSpace + "world", "Hello", "world"};
  json split_on = {{"type", "Metaspace"}, {"replacement", kSpace}, {"prepend_scheme", "always"}, {"split", true}};
  auto tok = load_json(spm_probe(split_on, words));
  EXPECT_EQ(tok->kind(), "bpe-spm");
  EXPECT_EQ(pieces(*tok, "Hello  world"), (Pieces{kSpace + "Hello", kSpace, kSpace + "world"}));
  EXPECT_EQ(tok->decode(tok->encode("Hello  world")), "Hello  world");
  // Files older than prepend_scheme: add_prefix_space, and split defaults to true.
  json legacy = {{"type", "Metaspace"}, {"replacement", kSpace}, {"add_prefix_space", true}};
  EXPECT_EQ(pieces(*load_json(spm_probe(legacy, words)), "Hello world"), (Pieces{kSpace + "Hello", kSpace + "world"}));
  json never = {{"type", "Metaspace"}, {"replacement", kSpace}, {"prepend_scheme", "never"}, {"split", true}};
  EXPECT_EQ(pieces(*load_json(spm_probe(never, words)), "Hello world"), (Pieces{"Hello", kSpace + "world"}));
}

TEST(TokenizerComponents, FuseUnkJoinsRunsOfUnknownCharacters) {
  json pre = {{"type", "Metaspace"}, {"replacement", kSpace}, {"prepend_scheme", "never"}, {"split", false}};
  json j = spm_probe(pre, {"a"});
  auto fused = load_json(j);
  EXPECT_EQ(fused->encode("xyzaxa"), (std::vector<int32_t>{0, 1, 0, 1}));
  j["model"]["fuse_unk"] = false;
  EXPECT_EQ(load_json(j)->encode("xyza"), (std::vector<int32_t>{0, 0, 0, 1}));
  j["model"].erase("unk_token");  // no unk token: HF drops unknown characters
  EXPECT_EQ(load_json(j)->encode("xyza"), (std::vector<int32_t>{1}));
}

TEST(TokenizerComponents, AddedTokenSingleWordAndStrip) {
  json j = word_probe(json::array(), {"say", " ", "hi", "there"});
  const int32_t hi_id = 300;
  j["added_tokens"] = json::array({{{"id", hi_id}, {"content", "hi"}, {"single_word", true}, {"special", false},
                                    {"normalized", false}, {"lstrip", true}, {"rstrip", true}}});
  auto tok = load_json(j);
  auto ids = tok->encode("say  hi  there");
  // lstrip/rstrip swallow the spaces around the token; single_word lets it match here...
  EXPECT_EQ(pieces(*tok, "say  hi  there"), (Pieces{"say", "hi", "there"}));
  EXPECT_EQ(std::count(ids.begin(), ids.end(), hi_id), 1);
  // ...but not inside a word.
  ids = tok->encode("sayhi");
  EXPECT_EQ(std::count(ids.begin(), ids.end(), hi_id), 0);
  for (const char* glued : {"\xC3\xA9hi", "hi\xE4\xB8\xAD", "hi_", "9hi"}) {  // éhi, hi中
    ids = tok->encode(glued);
    EXPECT_EQ(std::count(ids.begin(), ids.end(), hi_id), 0) << glued;
  }
  ids = tok->encode("(hi)");
  EXPECT_EQ(std::count(ids.begin(), ids.end(), hi_id), 1);
  // A non-special added token survives decoding.
  EXPECT_EQ(tok->decode(tok->encode("say hi")), "sayhi");
}

TEST(TokenizerComponents, LongestAddedTokenWinsAtTheSamePosition) {
  json j = word_probe(json::array(), {});
  j["added_tokens"] = json::array({{{"id", 300}, {"content", "<|a|>"}, {"special", true}},
                                   {{"id", 301}, {"content", "<|a|><|b|>"}, {"special", true}},
                                   {{"id", 302}, {"content", "|a"}, {"special", true}}});
  auto tok = load_json(j);
  EXPECT_EQ(tok->encode("<|a|><|b|>"), (std::vector<int32_t>{301}));
  auto ids = tok->encode("x<|a|>");
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(ids.back(), 300);
  // Leftmost first: "<|a|>" at 0 beats "|a" at 1.
  EXPECT_EQ(tok->encode("<|a|>|a"), (std::vector<int32_t>{300, 302}));
}

// Gemma-style vocabularies add thousands of tokens sharing a first character.
TEST(TokenizerComponents, ManyAddedTokens) {
  json j = word_probe(json::array(), {});
  for (int i = 0; i < 6000; i++)
    j["added_tokens"].push_back({{"id", 300 + i}, {"content", "<unused" + std::to_string(i) + ">"}, {"special", true}});
  auto start = std::chrono::steady_clock::now();
  auto tok = load_json(j);
  std::string text;
  for (int i = 0; i < 20000; i++) text += "<a> <unused" + std::to_string(i % 7000) + "> ";
  auto ids = tok->encode(text);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  long expected = 0;
  for (int i = 0; i < 20000; i++) expected += i % 7000 < 6000;
  EXPECT_EQ(std::count_if(ids.begin(), ids.end(), [](int32_t id) { return id >= 300; }), expected);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 300 + 5999), 20000 / 7000 + (20000 % 7000 > 5999));
  EXPECT_LT(seconds, 5.0);
}

// ---- errors -------------------------------------------------------------------------------------

std::string load_error(const std::string& text) {
  TempDir dir;
  auto path = dir.write("tokenizer.json", text);
  try {
    load_hf_tokenizer_json(path);
  } catch (const UserError& e) {
    std::string what = e.what();
    EXPECT_EQ(what.rfind(path.string() + ": ", 0), 0u) << what;  // "<file>: <what>"
    return what;
  }
  ADD_FAILURE() << "no UserError for " << text.substr(0, 200);
  return "";
}

json minimal_bytelevel() { return word_probe(json::array(), {}); }

TEST(TokenizerComponents, UnsupportedComponentsNameTheField) {
  json j = minimal_bytelevel();
  j["model"]["type"] = "Unigram";
  EXPECT_NE(load_error(j.dump()).find("model.type \"Unigram\""), std::string::npos);

  j = minimal_bytelevel();
  j["normalizer"] = {{"type", "NFKC"}};
  EXPECT_NE(load_error(j.dump()).find("normalizer.type \"NFKC\""), std::string::npos);

  j = minimal_bytelevel();
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", json::array({{{"type", "Prepend"}, {"prepend", "x"}}, {{"type", "NFKD"}}})}};
  EXPECT_NE(load_error(j.dump()).find("normalizer.normalizers[1].type \"NFKD\""), std::string::npos);

  j = minimal_bytelevel();
  j["pre_tokenizer"]["pretokenizers"].insert(j["pre_tokenizer"]["pretokenizers"].begin(), json::object({{"type", "Whitespace"}}));
  EXPECT_NE(load_error(j.dump()).find("pre_tokenizer.pretokenizers[0].type \"Whitespace\""), std::string::npos);

  j = minimal_bytelevel();
  j["decoder"] = {{"type", "WordPiece"}};
  EXPECT_NE(load_error(j.dump()).find("decoder.type \"WordPiece\""), std::string::npos);

  j = minimal_bytelevel();
  j["pre_tokenizer"]["pretokenizers"].insert(j["pre_tokenizer"]["pretokenizers"].begin(),
                                             json::object({{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}}));
  EXPECT_NE(load_error(j.dump()).find("pre_tokenizer.pretokenizers[0].pattern.Regex"), std::string::npos);

  j = minimal_bytelevel();
  j["model"]["merges"] = json::array({"a zz"});
  EXPECT_NE(load_error(j.dump()).find("model.merges"), std::string::npos);

  j = minimal_bytelevel();
  j["model"]["merges"] = json::array({"a b c"});
  EXPECT_NE(load_error(j.dump()).find("model.merges[0]"), std::string::npos);

  j = minimal_bytelevel();
  j["model"]["dropout"] = 0.1;
  EXPECT_NE(load_error(j.dump()).find("model.dropout"), std::string::npos);

  j = minimal_bytelevel();
  j["pre_tokenizer"] = nullptr;  // BPE that is neither byte-level nor SentencePiece-style
  EXPECT_NE(load_error(j.dump()).find("not supported"), std::string::npos);

  EXPECT_NE(load_error("{\"model\": ").find("not valid JSON"), std::string::npos);
  EXPECT_NE(load_error("[]").find("not a tokenizer.json"), std::string::npos);
}

// ---- vocabulary export --------------------------------------------------------------------------

TEST(TokenizerComponents, ExportByteLevelVocabularies) {
  auto llama3 = load_hf_tokenizer_json(fixtures_dir() / "llama3/tokenizer.json");
  VocabExport v = export_vocab(*llama3);
  EXPECT_EQ(v.model, "gpt2");
  EXPECT_EQ(v.pre, "llama-bpe");
  ASSERT_EQ(v.tokens.size(), 128256u);
  ASSERT_EQ(v.scores.size(), v.tokens.size());
  ASSERT_EQ(v.types.size(), v.tokens.size());
  ASSERT_EQ(v.merges.size(), 280147u);
  EXPECT_EQ(v.merges[0], "\xC4\xA0 \xC4\xA0");  // "Ġ Ġ"
  EXPECT_EQ(v.tokens[9906], "Hello");
  EXPECT_EQ(v.tokens[128000], "<|begin_of_text|>");
  EXPECT_EQ(v.types[128000], static_cast<int32_t>(TokenType::kControl));
  EXPECT_EQ(v.types[9906], static_cast<int32_t>(TokenType::kNormal));

  auto gpt2 = load_hf_tokenizer_json(fixtures_dir() / "gpt2/tokenizer.json");
  v = export_vocab(*gpt2);
  EXPECT_EQ(v.pre, "gpt-2");
  EXPECT_EQ(v.tokens.size(), 50257u);
  EXPECT_EQ(v.merges.size(), 50000u);
  EXPECT_EQ(v.types[50256], static_cast<int32_t>(TokenType::kControl));
}

// The scores given to SPM-style BPE pieces must let llama.cpp's SentencePiece algorithm (merge the
// adjacent pair whose joined piece scores highest, leftmost on ties) reproduce BPE's ids. This
// runs that algorithm over the exported vocabulary and compares with our encoder on the fixtures.
std::vector<int32_t> spm_by_scores(const VocabExport& v, const std::unordered_map<std::string, int32_t>& ids,
                                   const std::string& text) {
  if (text.empty()) return {};
  std::string s = kSpace;
  for (char c : text) s += c == ' ' ? kSpace : std::string(1, c);
  std::vector<std::string> symbols;
  for (size_t i = 0; i < s.size();) {
    unsigned char lead = static_cast<unsigned char>(s[i]);
    size_t len = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
    symbols.push_back(s.substr(i, len));
    i += len;
  }
  while (true) {
    int best = -1;
    float best_score = 0;
    for (size_t i = 0; i + 1 < symbols.size(); i++) {
      auto it = ids.find(symbols[i] + symbols[i + 1]);
      if (it == ids.end() || v.types[it->second] != static_cast<int32_t>(TokenType::kNormal)) continue;
      if (best < 0 || v.scores[it->second] > best_score) best = static_cast<int>(i), best_score = v.scores[it->second];
    }
    if (best < 0) break;
    symbols[best] += symbols[best + 1];
    symbols.erase(symbols.begin() + best + 1);
  }
  std::vector<int32_t> out;
  for (const auto& sym : symbols) {
    if (auto it = ids.find(sym); it != ids.end()) {
      out.push_back(it->second);
      continue;
    }
    for (unsigned char b : sym) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      out.push_back(ids.at(name));
    }
  }
  return out;
}

TEST(TokenizerComponents, ExportSpmStyleVocabularyReproducesBpeWithScores) {
  auto mistral = load_hf_tokenizer_json(fixtures_dir() / "mistral/tokenizer.json");
  VocabExport v = export_vocab(*mistral);
  EXPECT_EQ(v.model, "llama");
  EXPECT_EQ(v.pre, "default");
  ASSERT_EQ(v.tokens.size(), 32000u);
  EXPECT_EQ(v.types[0], static_cast<int32_t>(TokenType::kUnknown));
  EXPECT_EQ(v.types[1], static_cast<int32_t>(TokenType::kControl));
  EXPECT_EQ(v.types[2], static_cast<int32_t>(TokenType::kControl));
  EXPECT_EQ(v.tokens[3], "<0x00>");
  EXPECT_EQ(v.types[3], static_cast<int32_t>(TokenType::kByte));
  EXPECT_EQ(v.merges.size(), 58980u);

  std::unordered_map<std::string, int32_t> ids;
  for (size_t i = 0; i < v.tokens.size(); i++) ids.emplace(v.tokens[i], static_cast<int32_t>(i));
  auto cases = read_cases(fixtures_dir() / "mistral/cases.inp", fixtures_dir() / "mistral/cases.out");
  size_t compared = 0, differ = 0;
  for (const auto& c : cases) {
    if (c.input.find("<s>") != std::string::npos || c.input.find("</s>") != std::string::npos ||
        c.input.find("<unk>") != std::string::npos)
      continue;
    compared++;
    if (spm_by_scores(v, ids, c.input) != c.ids) {
      if (++differ <= 5) ADD_FAILURE() << "score-driven merge differs on " << escaped(c.input);
    }
  }
  EXPECT_GT(compared, 200u);
  EXPECT_EQ(differ, 0u);
}

TEST(TokenizerComponents, ExportNamesKnownPreTokenizers) {
  json j = json::parse(read_file(fixtures_dir() / "variants/gpt2-digits/variant.json"));
  json tokenizer = json::parse(read_file(fixtures_dir() / "gpt2/tokenizer.json"));
  tokenizer["pre_tokenizer"] = j["set"]["pre_tokenizer"];
  EXPECT_EQ(export_vocab(*load_json(tokenizer)).pre, "smollm");

  // The name follows the split pattern alone, so GPT-2's (smaller) vocabulary serves here too.
  j = json::parse(read_file(fixtures_dir() / "variants/llama3-qwen2-split/variant.json"));
  tokenizer["pre_tokenizer"] = j["set"]["pre_tokenizer"];
  EXPECT_EQ(export_vocab(*load_json(tokenizer)).pre, "qwen2");
}

}  // namespace
}  // namespace llmprune
