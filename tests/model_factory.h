#pragma once
// Small random models built in memory (Model::from_tensors), for tests that need a specific
// architecture variant: MHA / GQA, tied embeddings, q/k/v biases, ragged layers, any dtype.
//
//   auto m = llmprune::test::make_random_model(llmprune::test::RandomModelSpec::uniform(2, 4, 2, 48));
//   spec.layers[1].d_ff = 20;  // ragged
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "arch/arch.h"
#include "core/dtype.h"
#include "core/tensor.h"
#include "model/config.h"
#include "model/model.h"

namespace llmprune::test {

struct RandomModelSpec {
  std::string model_type = "llama";  // "qwen2" ships q/k/v biases
  int hidden = 32, vocab = 64, head_dim = 8, max_pos = 128;
  std::vector<LayerConfig> layers;   // n_head, n_kv_head, d_ff per layer (head_dim from above)
  bool tied = false;
  bool qkv_bias = false;             // q/k/v biases without a config key (implied by qwen2)
  bool attention_bias = false;       // config.json attention_bias: q, k, v and o biases (llama)
  bool mlp_bias = false;             // config.json mlp_bias: gate, up and down biases (llama)
  DType dtype = DType::F32;          // storage dtype of every tensor
  uint32_t seed = 1;
  float scale = 0.2f;                // std of weight entries; norm weights are 1 + scale * N(0,1)

  static RandomModelSpec uniform(int n_layer, int n_head, int n_kv_head, int d_ff) {
    RandomModelSpec s;
    s.layers.assign(size_t(n_layer), LayerConfig{n_head, n_kv_head, 0, d_ff});
    return s;
  }
};

inline Tensor random_tensor(std::vector<int64_t> shape, DType dtype, std::mt19937& rng, float scale, float offset = 0.0f) {
  Tensor f = Tensor::zeros(DType::F32, std::move(shape));
  std::normal_distribution<float> d(0.0f, 1.0f);
  float* p = f.f32_mut();
  for (int64_t i = 0; i < f.numel(); i++) p[i] = offset + scale * d(rng);
  return dtype == DType::F32 ? f : f.converted(dtype);
}

inline Model make_random_model(const RandomModelSpec& s) {
  nlohmann::json j = {{"model_type", s.model_type},
                      {"hidden_size", s.hidden},
                      {"num_hidden_layers", int(s.layers.size())},
                      {"vocab_size", s.vocab},
                      {"num_attention_heads", s.layers.at(0).n_head},
                      {"num_key_value_heads", s.layers.at(0).n_kv_head},
                      {"head_dim", s.head_dim},
                      {"intermediate_size", s.layers.at(0).d_ff},
                      {"max_position_embeddings", s.max_pos},
                      {"rms_norm_eps", 1e-5},
                      {"rope_theta", 10000.0},
                      {"hidden_act", "silu"},
                      {"tie_word_embeddings", s.tied},
                      {"bos_token_id", 1},
                      {"eos_token_id", 2}};
  if (s.attention_bias) j["attention_bias"] = true;
  if (s.mlp_bias) j["mlp_bias"] = true;
  ModelConfig cfg = ModelConfig::from_json(j, "random-model/config.json");
  const ArchDesc& a = arch_for_model_type(s.model_type, "random-model/config.json");
  auto required = [&](Role r) { return bias_presence(a, r, j, "random-model/config.json") == Presence::Required; };
  const bool bias = s.qkv_bias || required(Role::QBias);
  std::mt19937 rng(s.seed);
  const int64_t C = s.hidden, V = s.vocab, D = s.head_dim;
  std::map<std::string, Tensor> t;
  t[a.global[size_t(GlobalRole::Embed)].pattern] = random_tensor({V, C}, s.dtype, rng, s.scale * 4);
  for (int l = 0; l < int(s.layers.size()); l++) {
    const LayerConfig& lc = s.layers[size_t(l)];
    const int64_t Q = lc.n_head * D, K = lc.n_kv_head * D, F = lc.d_ff;
    auto put = [&](Role r, std::vector<int64_t> shape, float scale, float offset = 0.0f) {
      t[layer_tensor_name(a, r, l)] = random_tensor(std::move(shape), s.dtype, rng, scale, offset);
    };
    put(Role::AttnNorm, {C}, s.scale, 1.0f);
    put(Role::Q, {Q, C}, s.scale);
    put(Role::K, {K, C}, s.scale);
    put(Role::V, {K, C}, s.scale);
    if (bias) {
      put(Role::QBias, {Q}, s.scale);
      put(Role::KBias, {K}, s.scale);
      put(Role::VBias, {K}, s.scale);
    }
    put(Role::O, {C, Q}, s.scale);
    put(Role::MlpNorm, {C}, s.scale, 1.0f);
    put(Role::Gate, {F, C}, s.scale);
    put(Role::Up, {F, C}, s.scale);
    put(Role::Down, {C, F}, s.scale);
    if (required(Role::OBias)) put(Role::OBias, {C}, s.scale);
    if (required(Role::GateBias)) put(Role::GateBias, {F}, s.scale);
    if (required(Role::UpBias)) put(Role::UpBias, {F}, s.scale);
    if (required(Role::DownBias)) put(Role::DownBias, {C}, s.scale);
  }
  t[a.global[size_t(GlobalRole::FinalNorm)].pattern] = random_tensor({C}, s.dtype, rng, s.scale, 1.0f);
  if (!s.tied) t[a.global[size_t(GlobalRole::LmHead)].pattern] = random_tensor({V, C}, s.dtype, rng, s.scale);
  return Model::from_tensors(std::move(cfg), std::move(t), "random-model");
}

}  // namespace llmprune::test
