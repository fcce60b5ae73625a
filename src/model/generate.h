#pragma once
// Token-by-token generation with a KV cache: greedy at temperature 0, else temperature + top-p.
#include <cstdint>
#include <functional>
#include <vector>

#include "model/forward.h"

namespace llmprune {

struct GenerateOptions {
  int max_tokens = 64;
  float temperature = 0.0f;
  float top_p = 1.0f;
  uint64_t seed = 0;
  int eos_id = -1;  // stop when produced (-1: never)
};

// Returns the generated ids (prompt excluded); on_token is called as each id is produced.
std::vector<int32_t> generate(Runner& r, const std::vector<int32_t>& prompt, const GenerateOptions& opt,
                              const std::function<void(int32_t)>& on_token);

// Picks the next id from logits[V]; exposed for tests.
int32_t sample_token(std::vector<float>& logits, float temperature, float top_p, uint64_t* rng_state);

}  // namespace llmprune
