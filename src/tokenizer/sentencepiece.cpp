#include <sentencepiece_processor.h>

#include <cctype>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace llmprune {
namespace {

class SentencePieceTokenizer : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::filesystem::path& file) : file_(file.string()) {
    sentencepiece::util::Status st;
    try {
      st = sp_.Load(file.string());
    } catch (const std::exception& e) {  // libsentencepiece's trie builder throws on some malformed models
      throw input_error(file.string(), std::string("not a SentencePiece model: ") + e.what());
    }
    if (!st.ok()) throw input_error(file.string(), "not a SentencePiece model: " + st.ToString());
    bos_id_ = sp_.bos_id();
    eos_id_ = sp_.eos_id();
  }
  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int> ids;
    auto st = sp_.Encode(std::string(text), &ids);
    // A model that loads but cannot encode is a malformed model file, not a runtime failure.
    if (!st.ok()) throw input_error(file_, "SentencePiece model cannot encode the text: " + st.ToString());
    return std::vector<int32_t>(ids.begin(), ids.end());
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::vector<int> v;
    v.reserve(ids.size());
    for (int32_t id : ids)
      if (id >= 0 && id < sp_.GetPieceSize() && !sp_.IsControl(id)) v.push_back(id);
    std::string out;
    auto st = sp_.Decode(v, &out);
    if (!st.ok()) throw input_error(file_, "SentencePiece model cannot decode the ids: " + st.ToString());
    return out;
  }
  int32_t vocab_size() const override { return sp_.GetPieceSize(); }
  std::string id_to_piece(int32_t id) const override { return sp_.IdToPiece(id); }
  std::string kind() const override { return "sentencepiece"; }

 private:
  sentencepiece::SentencePieceProcessor sp_;
  std::string file_;
};

int json_int_or(const std::filesystem::path& file, const char* key, int fallback) {
  std::ifstream in(file);
  if (!in) return fallback;
  auto j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains(key)) return fallback;
  const auto& v = j[key];
  if (v.is_number_integer()) return v.get<int>();
  if (v.is_array() && !v.empty() && v[0].is_number_integer()) return v[0].get<int>();
  return fallback;
}

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece(const std::filesystem::path& file) {
  return std::make_unique<SentencePieceTokenizer>(file);
}

// Defined in tokenizer/hf_tokenizer.cpp when tokenizer.json support is built.
std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const std::filesystem::path& file);

// Defined in tokenizer/appended_specials.cpp.
std::unique_ptr<Tokenizer> with_appended_specials(std::unique_ptr<Tokenizer> base, const std::vector<std::string>& specials);
int32_t find_piece(const Tokenizer& tok, const std::vector<std::string>& spellings);
// Defined in tokenizer/whitespace_escapes.cpp.
std::unique_ptr<Tokenizer> with_whitespace_escapes(std::unique_ptr<Tokenizer> base, const WhitespaceEscapes& escapes);

namespace {

// GLM-4's tokenizer.model is tiktoken's text format: lines "base64(token) rank".
bool looks_like_tiktoken(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::string line;
  if (!std::getline(in, line) || line.empty()) return false;
  size_t sp = line.find(' ');
  if (sp == std::string::npos || sp == 0 || sp + 1 >= line.size()) return false;
  for (size_t i = 0; i < sp; i++) {
    char c = line[i];
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '/' || c == '=')) return false;
  }
  for (size_t i = sp + 1; i < line.size(); i++)
    if (!std::isdigit(static_cast<unsigned char>(line[i]))) return false;
  return true;
}

}  // namespace

std::filesystem::path find_tokenizer_file(const std::filesystem::path& model_dir, const TokenizerExtras& extras) {
  std::vector<std::string> names = {"tokenizer.json"};
  names.insert(names.end(), extras.sp_files.begin(), extras.sp_files.end());
  names.push_back("tokenizer.model");
  for (const std::string& name : names)
    if (std::filesystem::exists(model_dir / name)) return model_dir / name;
  return {};
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& model_dir, const TokenizerExtras& extras) {
  const std::filesystem::path file = find_tokenizer_file(model_dir, extras);
  std::unique_ptr<Tokenizer> tok;
  if (file.empty()) {
    std::string names = "tokenizer.json";
    for (const std::string& f : extras.sp_files) names += ", " + f;
    throw input_error(model_dir.string(), "no " + names + " or tokenizer.model in the model directory");
  } else if (file.filename() == "tokenizer.json") {
    tok = load_hf_tokenizer_json(file);
  } else {
    if (looks_like_tiktoken(file))
      throw input_error(file.string(), "a tiktoken rank file (GLM-4's tokenizer) is not supported; put the model's tokenizer.json next to it");
    tok = load_sentencepiece(file);
    if (!extras.sp_appended_specials.empty()) tok = with_appended_specials(std::move(tok), extras.sp_appended_specials);
    if (extras.escapes.any()) tok = with_whitespace_escapes(std::move(tok), extras.escapes);
  }
  int bos = json_int_or(model_dir / "generation_config.json", "bos_token_id", tok->bos_id());
  int eos = json_int_or(model_dir / "generation_config.json", "eos_token_id", tok->eos_id());
  bos = json_int_or(model_dir / "config.json", "bos_token_id", bos);
  eos = json_int_or(model_dir / "config.json", "eos_token_id", eos);
  tok->set_special_ids(bos, eos);
  auto ids_of = [&](const std::vector<std::vector<std::string>>& tokens, const char* where) {
    std::vector<int32_t> ids;
    for (const auto& spellings : tokens) {
      int32_t id = find_piece(*tok, spellings);
      if (id < 0)
        throw input_error(model_dir.string(), "the tokenizer has no '" + spellings.front() + "' token, which this model family's prompts " + where);
      ids.push_back(id);
    }
    return ids;
  };
  tok->set_prefix_ids(ids_of(extras.prefix, "start with"));
  tok->set_suffix_ids(ids_of(extras.suffix, "end with"));
  return tok;
}

StreamDecoder::StreamDecoder(const Tokenizer& tok, std::vector<int32_t> context) : tok_(tok), ids_(std::move(context)) {
  printed_ = ids_.empty() ? 0 : tok_.decode(ids_).size();
}

std::string StreamDecoder::push(int32_t id) {
  ids_.push_back(id);
  std::string text = tok_.decode(ids_);
  // Hold back an incomplete UTF-8 tail (byte-fallback tokens arrive one byte at a time).
  size_t end = text.size();
  size_t i = end;
  while (i > 0 && (static_cast<unsigned char>(text[i - 1]) & 0xC0) == 0x80) i--;
  if (i > 0) {
    unsigned char lead = static_cast<unsigned char>(text[i - 1]);
    size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    if (end - (i - 1) < need) end = i - 1;
  }
  if (end <= printed_) return "";
  std::string out = text.substr(printed_, end - printed_);
  printed_ = end;
  return out;
}

}  // namespace llmprune
