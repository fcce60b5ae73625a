#pragma once
// Text <-> token ids. One interface for SentencePiece `.model` files and HF `tokenizer.json`.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace llmprune {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Plain encoding of `text`: no BOS/EOS added (callers add bos_id() where a convention says so).
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Decoding of a sequence; special tokens (BOS/EOS) are dropped.
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual int32_t vocab_size() const = 0;
  // Surface string of one id as stored in the vocabulary (for listings and GGUF export).
  virtual std::string id_to_piece(int32_t id) const = 0;
  virtual std::string kind() const = 0;  // "sentencepiece", "bpe-bytelevel", "bpe-spm"
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  void set_special_ids(int32_t bos, int32_t eos) { bos_id_ = bos; eos_id_ = eos; }

 protected:
  int32_t bos_id_ = -1, eos_id_ = -1;
};

// Loads the tokenizer a checkpoint directory ships. Prefers tokenizer.json over tokenizer.model
// (as HF does). BOS/EOS ids come from config.json/generation_config.json when present.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& model_dir);

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
