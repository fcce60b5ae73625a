#pragma once
// LLaMA-family models as GGUF files that llama.cpp runs, and GGUF files as model input.
// What is written, key by key, and why ragged models use llama.cpp's "deci" architecture:
// docs/export.md.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>

#include "core/dtype.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace llmprune {

// Writes `m` as a GGUF v3 file at `out` (atomically: `<out>.tmp`, then rename), streaming one
// tensor at a time. Matrices are stored in `dtype`; 1-D tensors (norms, biases) always in F32,
// as llama.cpp's converter does. q/k rows are permuted from HF's rotate-half layout into the
// interleaved layout llama.cpp's LLaMA RoPE expects. Uniform models are written as
// general.architecture "llama"; ragged (pruned) models as "deci" with per-layer arrays for
// head_count, head_count_kv and feed_forward_length (llama.cpp's "llama" builds every layer with
// layer 0's sizes). The vocabulary comes from `tok` (SentencePiece: the tokenizer.model in
// m.dir; tokenizer.json: export_vocab); with no tokenizer, the tokenizer.* keys of a GGUF source
// model are copied, and otherwise none are written. Throws UserError naming the field for models
// llama.cpp cannot represent.
void export_gguf(const Model& m, const Tokenizer* tok, const std::filesystem::path& out, DType dtype);

// Reads a GGUF file written by export_gguf or by llama.cpp's converter (architectures "llama" and
// "deci"; F32/F16/BF16 tensors): config from the metadata (per-layer arrays included), tensors
// renamed to HF names, q/k rows back in HF order (owned copies; every other tensor is a view into
// the mapping, which the tensors keep alive). m.dir is the file itself; m.files = {file}.
Model load_gguf_model(const std::filesystem::path& file);

// A tokenizer from a GGUF file's tokenizer.* metadata. Supports tokenizer.ggml.model "llama"
// (SentencePiece-style BPE over tokens/scores/token_type, rebuilt as a SentencePiece BPE model
// with byte fallback). Other models throw UserError asking for tokenizer.json next to the file.
std::unique_ptr<Tokenizer> load_gguf_tokenizer(const std::filesystem::path& file);
// The same SentencePiece model written as a tokenizer.model file at `out` (atomically).
void write_gguf_tokenizer_model(const std::filesystem::path& file, const std::filesystem::path& out);

// q/k row order, per head of `head_dim` rows (`rows` a multiple of head_dim, each row
// `row_bytes` bytes): HF rotate-half (row a*D/2 + i of a head) <-> interleaved (row 2i + a).
void rope_rows_hf_to_gguf(const void* src, void* dst, int64_t rows, size_t row_bytes, int head_dim);
void rope_rows_gguf_to_hf(const void* src, void* dst, int64_t rows, size_t row_bytes, int head_dim);

}  // namespace llmprune
