#pragma once
// The BPE "model" stage of an HF tokenizer.json: one pre-token (already spelled in the
// vocabulary's alphabet) in, token ids out. Merges are applied by rank, lowest first and leftmost
// first among equal ranks, which is what HF tokenizers' BPE does.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace llmprune::bpe {

// Heterogeneous lookup so string_view keys find std::string entries without allocating.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using PieceMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

struct BpeOptions {
  std::optional<int32_t> unk_id;         // model.unk_token (when it is in the vocabulary)
  bool fuse_unk = false;                 // runs of unknown characters become one unk
  bool byte_fallback = false;            // unknown characters become <0xNN> byte tokens
  bool ignore_merges = false;            // a pre-token that is itself a token is emitted whole
  std::string continuing_subword_prefix;  // e.g. "##"; empty for GPT-2/LLaMA
  std::string end_of_word_suffix;         // e.g. "</w>"; empty for GPT-2/LLaMA
};

class BpeModel {
 public:
  // `vocab`: piece -> id. `merges`: pairs of pieces in rank order. Throws std::invalid_argument
  // naming the merge when one refers to a piece (or makes a piece) the vocabulary lacks.
  BpeModel(PieceMap vocab, const std::vector<std::pair<std::string, std::string>>& merges, BpeOptions options);

  // Appends the ids of `word` to `out`.
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;

  const PieceMap& vocab() const { return vocab_; }
  const BpeOptions& options() const { return options_; }
  // Merges in rank order, as given (kept for export).
  const std::vector<std::pair<std::string, std::string>>& merges() const { return merges_; }
  // Rank of the first merge whose result is `id`, or -1 if no merge makes it.
  int32_t producing_merge_rank(int32_t id) const;
  int32_t byte_fallback_id(uint8_t b) const { return byte_token_ids_[b]; }

 private:
  struct Merge {
    int32_t rank;
    int32_t result_id;
  };
  static uint64_t pair_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  void merge_symbols(std::vector<int32_t>& ids, std::vector<int32_t>& out) const;

  PieceMap vocab_;
  BpeOptions options_;
  std::vector<std::pair<std::string, std::string>> merges_;
  std::unordered_map<uint64_t, Merge> merge_by_pair_;
  std::vector<int32_t> producing_rank_;       // by id
  std::vector<int32_t> byte_token_ids_ = std::vector<int32_t>(256, -1);  // <0xNN> tokens
  std::vector<int32_t> single_byte_char_id_ = std::vector<int32_t>(128, -1);  // fast path for ASCII chars
};

}  // namespace llmprune::bpe
