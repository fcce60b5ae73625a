#pragma once
// Text <-> token ids. One interface for SentencePiece `.model` files and HF `tokenizer.json`.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/whitespace_escapes.h"

namespace llmprune {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Plain encoding of `text`: no BOS/EOS added (callers add bos_id() where a convention says so).
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Opt-in for text that spells a family's appended specials ("<|user|>", "[gMASK]"): those
  // strings become their ids, the rest is encoded plainly. encode() never does this for them
  // (ChatGLM2/3's SentencePiece text "people" holds "eop"); tokenizer.json added tokens are
  // matched by encode() itself, as HF does.
  virtual std::vector<int32_t> encode_with_specials(std::string_view text) const { return encode(text); }
  // Decoding of a sequence; special tokens (BOS/EOS) are dropped.
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual int32_t vocab_size() const = 0;
  // Surface string of one id as stored in the vocabulary (for listings and GGUF export).
  virtual std::string id_to_piece(int32_t id) const = 0;
  virtual std::string kind() const = 0;  // "sentencepiece", "bpe-bytelevel", "bpe-spm"
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  void set_special_ids(int32_t bos, int32_t eos) { bos_id_ = bos; eos_id_ = eos; }
  // What a text scored on its own starts with where the convention says "BOS": a family that
  // frames prompts scores it as the reply to an empty prompt, prefix + suffix (ChatGLM2/3:
  // [gMASK] sop; ChatGLM-6B v1: [gMASK] <sop>); else BOS when there is one, else nothing.
  std::vector<int32_t> prefix_ids() const { return prompt_ids({}); }
  // A prompt framed for generation: the family's prefix + prompt + suffix (ChatGLM-6B v1 ends it
  // with [gMASK] <sop>, THUDM's build_inputs_with_special_tokens), else BOS + prompt.
  std::vector<int32_t> prompt_ids(const std::vector<int32_t>& prompt) const {
    std::vector<int32_t> out = prefix_;
    if (prefix_.empty() && suffix_.empty() && bos_id_ >= 0) out.push_back(bos_id_);
    out.insert(out.end(), prompt.begin(), prompt.end());
    out.insert(out.end(), suffix_.begin(), suffix_.end());
    return out;
  }
  const std::vector<int32_t>& suffix_ids() const { return suffix_; }
  void set_prefix_ids(std::vector<int32_t> ids) { prefix_ = std::move(ids); }
  void set_suffix_ids(std::vector<int32_t> ids) { suffix_ = std::move(ids); }

 protected:
  int32_t bos_id_ = -1, eos_id_ = -1;
  std::vector<int32_t> prefix_, suffix_;
};

// Conventions a model family adds on top of its tokenizer file (arch's TokenizerConvention).
struct TokenizerExtras {
  // Special tokens appended after a SentencePiece model's pieces (ids size, size+1, ...), matched
  // as whole strings only by encode_with_specials. Not applied to tokenizer.json, which lists its
  // own added tokens.
  std::vector<std::string> sp_appended_specials;
  // Tokens every text starts with; each entry lists accepted spellings ("sop" or "<sop>").
  std::vector<std::vector<std::string>> prefix;
  // Tokens a prompt ends with (ChatGLM-6B v1: [gMASK] <sop>), spelled likewise.
  std::vector<std::vector<std::string>> suffix;
  // SentencePiece file names the family ships instead of tokenizer.model (ChatGLM-6B v1:
  // ice_text.model), looked for before it.
  std::vector<std::string> sp_files;
  // Whitespace spelled as pieces of the SentencePiece model (ChatGLM-6B v1's <n>, <|tab|>,
  // <|blank_k|>): encode() writes them, decode() reads them back. Not applied to tokenizer.json.
  WhitespaceEscapes escapes;
};

// The file load_tokenizer reads in `model_dir`: tokenizer.json, else the first of
// extras.sp_files present, else tokenizer.model; empty when there is none.
std::filesystem::path find_tokenizer_file(const std::filesystem::path& model_dir, const TokenizerExtras& extras = {});

// Loads the tokenizer a checkpoint directory ships (find_tokenizer_file: tokenizer.json first,
// as HF does). BOS/EOS ids come from config.json/generation_config.json when present.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& model_dir, const TokenizerExtras& extras = {});

// A SentencePiece `.model` file through libsentencepiece.
std::unique_ptr<Tokenizer> load_sentencepiece(const std::filesystem::path& file);

// Incremental decoding for streaming generation: feed ids, get the newly printable text.
class StreamDecoder {
 public:
  // `context` (e.g. the prompt's ids) is decoded with the new ids but never printed, so pieces
  // that start with a space ("▁unto") keep it after the prompt.
  explicit StreamDecoder(const Tokenizer& tok, std::vector<int32_t> context = {});
  std::string push(int32_t id);

 private:
  const Tokenizer& tok_;
  std::vector<int32_t> ids_;
  size_t printed_ = 0;
};

}  // namespace llmprune
