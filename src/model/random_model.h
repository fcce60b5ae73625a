#pragma once
// Randomly initialised models of any LLaMA shape, for benchmarks and tests (no checkpoint needed).
#include <cstdint>

#include "model/model.h"

namespace llmprune {

// A llama config.json equivalent with uniform layers.
ModelConfig llama_config(int hidden, int layers, int heads, int kv_heads, int d_ff, int vocab, bool tied = false,
                         int max_pos = 4096);

// Weights ~ uniform with std 0.02 (LLaMA's init scale), norm weights 1; stored in `dtype`.
// Filled in parallel from `seed` (deterministic for a given seed and thread-independent).
Model make_random_model(const ModelConfig& cfg, DType dtype, uint64_t seed);

}  // namespace llmprune
