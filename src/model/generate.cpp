#include "model/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "core/error.h"

namespace llmprune {

int32_t sample_token(std::vector<float>& logits, float temperature, float top_p, uint64_t* rng_state) {
  const int V = int(logits.size());
  if (temperature <= 0.0f) return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  float mx = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (auto& x : logits) {
    x = std::exp((x - mx) / temperature);
    sum += x;
  }
  for (auto& x : logits) x = float(x / sum);
  std::vector<int32_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[size_t(a)] > logits[size_t(b)]; });
  // Nucleus: the smallest prefix whose mass reaches top_p.
  double mass = 0;
  size_t keep = 0;
  while (keep < order.size()) {
    mass += logits[size_t(order[keep])];
    keep++;
    if (mass >= top_p) break;
  }
  std::mt19937_64 rng(*rng_state);
  *rng_state = rng();
  double u = std::uniform_real_distribution<double>(0.0, mass)(rng);
  double acc = 0;
  for (size_t i = 0; i < keep; i++) {
    acc += logits[size_t(order[i])];
    if (u < acc) return order[i];
  }
  return order[keep - 1];
}

std::vector<int32_t> generate(Runner& r, const std::vector<int32_t>& prompt, const GenerateOptions& opt,
                              const std::function<void(int32_t)>& on_token) {
  const Model& m = r.model();
  if (prompt.empty()) throw UserError("empty prompt");
  int total = int(prompt.size()) + opt.max_tokens;
  if (total > m.cfg.max_pos)
    throw UserError("prompt + --max-tokens = " + std::to_string(total) + " exceeds the model's context of " + std::to_string(m.cfg.max_pos));
  KVCache cache(m, 1, total);
  std::vector<float> logits(size_t(m.cfg.vocab));
  r.forward(prompt.data(), 1, int(prompt.size()), logits.data(), &cache, true);
  uint64_t state = opt.seed * 0x9E3779B97F4A7C15ull + 1;
  std::vector<int32_t> out;
  for (int i = 0; i < opt.max_tokens; i++) {
    int32_t id = sample_token(logits, opt.temperature, opt.top_p, &state);
    out.push_back(id);
    if (on_token) on_token(id);
    if (id == opt.eos_id) break;
    if (i + 1 == opt.max_tokens) break;
    r.forward(&id, 1, 1, logits.data(), &cache, true);
  }
  return out;
}

}  // namespace llmprune
