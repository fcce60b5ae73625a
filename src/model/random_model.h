#pragma once
// Randomly initialised models of any LLaMA shape, for benchmarks and tests (no checkpoint needed).
#include <cstdint>
#include <filesystem>

#include "model/model.h"

namespace llmprune {

// A llama config.json equivalent with uniform layers.
ModelConfig llama_config(int hidden, int layers, int heads, int kv_heads, int d_ff, int vocab, bool tied = false,
                         int max_pos = 4096);

// Weights ~ uniform with std 0.02 (LLaMA's init scale), norm weights 1; stored in `dtype`.
// Filled in parallel from `seed` (deterministic for a given seed and thread-independent).
Model make_random_model(const ModelConfig& cfg, DType dtype, uint64_t seed);

// n values of the tensor numbered `seed` (as make_random_model draws them), written in `dtype` to dst.
void fill_random(DType dtype, void* dst, int64_t n, uint64_t seed, bool ones);

// The same weights as make_random_model(cfg, dtype, seed), written to `dir` (which must exist)
// as config.json + model.safetensors one tensor at a time: a 7B-class checkpoint never has more
// than its largest tensor in memory.
void write_random_checkpoint(const ModelConfig& cfg, DType dtype, uint64_t seed, const std::filesystem::path& dir);

}  // namespace llmprune
