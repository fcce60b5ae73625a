#pragma once
// HF tokenizer.json (BPE models) and vocabulary export for GGUF.
//
// Supported tokenizer.json shapes:
//   kind "bpe-bytelevel": byte-level BPE (GPT-2, LLaMA-3, Qwen2, SmolLM): pre_tokenizer ByteLevel
//     (with or without its built-in GPT-2 regex), optionally after Split/Digits in a Sequence;
//     decoder ByteLevel.
//   kind "bpe-spm": SentencePiece-style BPE (LLaMA-2, Mistral HF repos): normalizer Prepend "▁" +
//     Replace " "->"▁", or pre_tokenizer Metaspace; byte_fallback; decoder Replace/ByteFallback/
//     Fuse/Strip or Metaspace.
// Anything else fails with UserError "<file>: <what>" naming the field.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace llmprune {

// Loads a tokenizer.json. Throws UserError for malformed or unsupported files.
std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const std::filesystem::path& file);

// Token types, numbered as GGUF's tokenizer.ggml.token_type (and SentencePiece's proto) number them.
enum class TokenType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// Everything a GGUF writer needs to describe a vocabulary, index = token id.
struct VocabExport {
  std::string model;                // "gpt2" (byte-level BPE) or "llama" (SentencePiece / SPM-style BPE)
  std::vector<std::string> tokens;  // pieces as spelled in the vocabulary ("Ġthe", "▁the", "<0x0A>")
  std::vector<float> scores;        // SentencePiece: the model's scores; SPM-style BPE: -rank of the
                                    // merge producing the piece (see hf_tokenizer.cpp); byte-level: 0
  std::vector<int32_t> types;       // TokenType values
  std::vector<std::string> merges;  // "left right" in rank order; empty for SentencePiece .model
  std::string pre;                  // llama.cpp pre-tokeniser name ("llama-bpe", "gpt-2", "qwen2",
                                    // "smollm"), "default" for SPM, "" when the pattern is not known
};

// For tokenizers loaded from tokenizer.json (kind "bpe-bytelevel" / "bpe-spm"). A tokenizer from
// a SentencePiece .model has no access path here (its class is private to sentencepiece.cpp):
// for those this throws UserError pointing at export_sentencepiece_vocab().
VocabExport export_vocab(const Tokenizer& tokenizer);

// Reads a SentencePiece .model (through libsentencepiece, which validates it) and exports its
// pieces, scores and types.
VocabExport export_sentencepiece_vocab(const std::filesystem::path& model_file);

}  // namespace llmprune
