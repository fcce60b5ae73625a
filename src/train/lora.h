#pragma once
// LoRA adapters (METHOD.md §4): for a projection y = x W^T of shape [out, in], a branch
// y += s * (drop(x) A^T) B^T with A [r, in], B [out, r], s = alpha / r — PEFT's LoraLayer.
// Only A and B train (fp32); the base weights stay frozen in their storage dtype. At the end the
// branch is merged: W' = W + s B A, and the model is dense again with no extra parameters.
//
// The adapters plug into the forward/backward pass as a LinearHook. The backward pass
// recomputes every layer's forward (calling forward() again), so dropout masks are a pure
// function of (seed, dropout key, layer, role, element), never of a running RNG stream: the
// trainer sets one dropout key per micro-batch.
#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "model/forward.h"

namespace llmprune {

struct LoraConfig {
  int r = 8;
  double alpha = 16;
  double dropout = 0.05;
  std::vector<Role> targets = matrix_roles();  // every projection
  uint64_t seed = 42;  // initialisation of A and the dropout masks
  double scale() const { return alpha / double(r); }
};

// "q,k,v,o,gate,up,down" (also the HF module names q_proj, ..., down_proj, and "all").
// Throws UserError naming `flag` on an unknown name.
std::vector<Role> parse_lora_targets(const std::string& list, const std::string& flag = "--lora-targets");
std::string lora_target_name(Role r);    // "q"
std::string hf_module_name(Role r);      // "q_proj"
// The PEFT target module of a role in family `a`: "q_proj" for LLaMA, "query_key_value" for
// ChatGLM's q, k and v (one fused module), "dense_4h_to_h" for its down.
std::string hf_module_name(const ArchDesc& a, Role r);

// One adapter pair. Gradients accumulate (+=) until zero_grad().
struct LoraPair {
  int layer = 0;
  Role role = Role::Q;
  int in = 0, out = 0, r = 0;
  std::vector<float> A, B;    // [r, in], [out, r]
  std::vector<float> dA, dB;  // same shapes
};

class LoraAdapters : public LinearHook {
 public:
  // A ~ U(-1/sqrt(in), 1/sqrt(in)) (PEFT: kaiming_uniform_(a=sqrt(5))) from cfg.seed, B = 0.
  // Projections of width 0 (fully pruned heads / MLP) get no adapter.
  LoraAdapters(const Model& m, const LoraConfig& cfg);

  const LoraConfig& config() const { return cfg_; }
  float scale() const { return float(cfg_.scale()); }
  std::vector<LoraPair>& pairs() { return pairs_; }
  const std::vector<LoraPair>& pairs() const { return pairs_; }
  LoraPair* find(int layer, Role r);
  const LoraPair* find(int layer, Role r) const;
  int64_t n_params() const;

  // Dropout is applied only while training (off for evaluation and for merged-equivalence).
  void set_training(bool on) { training_ = on; }
  bool training() const { return training_; }
  // Selects the dropout masks (one key per micro-batch, same key for its backward).
  void set_dropout_key(uint64_t key) { key_ = key; }
  // Gradients of the next backward are multiplied by this (micro-batch weight in a step).
  void set_grad_scale(float s) { grad_scale_ = s; }
  void zero_grad();

  void forward(int layer, Role r, const float* x, float* y, int N, int in, int out) override;
  void backward(int layer, Role r, const float* x, const float* dy, float* dx, int N, int in, int out) override;

  // PEFT's tensor names: base_model.model.<module>.lora_A.weight / .lora_B.weight, where
  // <module> is the HF weight name without ".weight" (model.layers.0.self_attn.q_proj). A role
  // inside a fused tensor shares its module with the other parts; its own name (used for the
  // optimizer state) ends in ":<role>".
  std::string peft_name(const LoraPair& p, bool is_A) const;
  const Model& model() const { return m_; }

 private:
  // x with the dropout mask applied (scaled by 1/(1-p)), or x itself when no dropout.
  const float* dropped(int layer, Role r, const float* x, int N, int in, std::vector<float>& buf) const;
  const Model& m_;
  LoraConfig cfg_;
  std::vector<LoraPair> pairs_;
  std::vector<int> index_;  // layer * kNumLayerRoles + role -> pair index or -1
  bool training_ = true;
  uint64_t key_ = 0;
  float grad_scale_ = 1.0f;
};

// The model with every adapter merged: W' = W + s B A, computed in fp32 and rounded once to the
// weight's storage dtype. Tensors without an adapter are shared with `base`.
Model merge_lora(const Model& base, const LoraAdapters& lora);

// PEFT layout: adapter_model.safetensors (fp32 lora_A / lora_B) + adapter_config.json, written
// into `dir` (which must exist). The adapters of the roles of one fused tensor (ChatGLM's q, k, v
// in query_key_value) are one PEFT module of rank r x parts: A = [A_q; A_k; A_v] and B the
// block diagonal of B_q, B_k, B_v (zero rows for parts without an adapter), which is the same
// update; adapter_config.json gives its rank and alpha in rank_pattern / alpha_pattern. B's rows
// are the stored tensor's rows (the fused layout's fused_row: ChatGLM-6B v1's query_key_value is
// interleaved per head), so PEFT's W + s B A applies to the tensor as stored.
void save_peft_adapter(const LoraAdapters& lora, const std::filesystem::path& dir, const std::string& base_model);
// Reads A/B back from a PEFT adapter_model.safetensors (names and shapes must match).
void load_lora_weights(LoraAdapters& lora, const std::filesystem::path& file);

// splitmix64: the counter-based RNG behind initialisation, dropout masks and shuffling.
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
inline uint64_t mix_keys(uint64_t a, uint64_t b) { return splitmix64(a ^ splitmix64(b + 0x632be59bd9b4e019ull)); }
// Uniform in [0, 1) with 24 bits (exactly representable in fp32).
inline float uniform01(uint64_t bits) { return float(bits >> 40) * (1.0f / 16777216.0f); }

}  // namespace llmprune
