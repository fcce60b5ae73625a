#pragma once
// Small random models built in memory (Model::from_tensors), for tests that need a specific
// architecture variant: MHA / GQA, tied embeddings, q/k/v biases, ragged layers, any dtype, any
// registered family (model_type "chatglm", "phi3": fused tensors in their stored layout; "glm4":
// its post-sub-block norms).
//
//   auto m = llmprune::test::make_random_model(llmprune::test::RandomModelSpec::uniform(2, 4, 2, 48));
//   spec.layers[1].d_ff = 20;  // ragged
#include <cmath>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "arch/arch.h"
#include "core/dtype.h"
#include "core/tensor.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/model.h"

namespace llmprune::test {

struct RandomModelSpec {
  std::string model_type = "llama";  // "qwen2" ships q/k/v biases; any registered family
  int hidden = 32, vocab = 64, head_dim = 8, max_pos = 128;
  std::vector<LayerConfig> layers;   // n_head, n_kv_head, d_ff per layer (head_dim from above)
  bool tied = false;
  bool qkv_bias = false;             // q/k/v biases (implied by qwen2; ChatGLM: add_qkv_bias)
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

// Every tensor of a safetensors file as an fp32 copy (to edit, then Model::from_tensors).
inline std::map<std::string, Tensor> f32_tensors_of(const std::filesystem::path& file) {
  SafetensorsFile f = SafetensorsFile::open(file);
  std::map<std::string, Tensor> out;
  for (auto& [name, t] : f.tensors) out[name] = t.to_f32_copy();
  return out;
}

// Zeroes rows [r0, r0 + n) of a tensor (entries of a vector): pruning-equals-masking tests.
inline void zero_rows(Tensor& t, int64_t r0, int64_t n) {
  const size_t row = t.nbytes() / size_t(t.dim(0));
  std::memset(static_cast<uint8_t*>(t.data) + size_t(r0) * row, 0, size_t(n) * row);
}

// Config and tensors are built from the family's description (arch/arch.h): its config keys,
// tensor names and fused tensors (ChatGLM's query_key_value / Phi-3's qkv_proj get their parts
// concatenated), so every registered model_type can be made.
inline Model make_random_model(const RandomModelSpec& s) {
  const ArchDesc& a = arch_for_model_type(s.model_type, "random-model/config.json");
  const ConfigKeys& k = a.keys;
  nlohmann::json j = {{"model_type", s.model_type},
                      {k.hidden.front(), s.hidden},
                      {k.n_layer.front(), int(s.layers.size())},
                      {k.vocab.front(), s.vocab},
                      {k.n_head.front(), s.layers.at(0).n_head},
                      {k.n_kv_head.front(), s.layers.at(0).n_kv_head},
                      {k.head_dim.front(), s.head_dim},
                      {k.d_ff.front(), s.layers.at(0).d_ff},
                      {k.max_pos.front(), s.max_pos},
                      {k.eps.front(), 1e-5},
                      {"hidden_act", "silu"},
                      {"tie_word_embeddings", s.tied},
                      {"bos_token_id", 1},
                      {"eos_token_id", 2}};
  if (k.rope_theta) j[k.rope_theta] = 10000.0;
  if (k.kv_heads_enabled) j[k.kv_heads_enabled] = true;
  for (const ConfigRequirement& r : a.requirements)
    if (r.required != r.default_value) j[r.key] = r.required;
  if (s.attention_bias) j["attention_bias"] = true;
  if (s.mlp_bias) j["mlp_bias"] = true;
  const BiasSwitch* qkv_switch = bias_switch_of(a, Role::QBias);
  if (s.qkv_bias && qkv_switch && qkv_switch->config_key) j[qkv_switch->config_key] = true;
  ModelConfig cfg = ModelConfig::from_json(j, "random-model/config.json");
  auto required = [&](Role r) { return bias_presence(a, r, j, "random-model/config.json") == Presence::Required; };
  const bool bias = s.qkv_bias || required(Role::QBias);
  std::mt19937 rng(s.seed);
  const int64_t C = s.hidden, V = s.vocab, D = s.head_dim;
  std::map<std::string, Tensor> t;
  t[a.global[size_t(GlobalRole::Embed)].pattern] = random_tensor({V, C}, s.dtype, rng, s.scale * 4);
  for (int l = 0; l < int(s.layers.size()); l++) {
    const LayerConfig& lc = s.layers[size_t(l)];
    const int64_t Q = lc.n_head * D, K = lc.n_kv_head * D, F = lc.d_ff;
    std::map<Role, Tensor> roles;  // drawn in this order whatever the family, so seeds give the same values
    auto put = [&](Role r, std::vector<int64_t> shape, float scale, float offset = 0.0f) {
      roles[r] = random_tensor(std::move(shape), s.dtype, rng, scale, offset);
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
    for (Role r : {Role::PostAttnNorm, Role::PostMlpNorm})  // GLM-4-0414's sub-block output norms
      if (has_role(a, r)) put(r, {C}, s.scale, 1.0f);
    for (const FusedTensor& f : a.fused) {  // a stored tensor = its parts' rows one after another
      if (!roles.count(f.parts.front())) continue;
      std::vector<int64_t> shape = roles.at(f.parts.front()).shape;
      shape[0] = 0;
      for (Role r : f.parts) shape[0] += roles.at(r).dim(0);
      Tensor fused = Tensor::zeros(s.dtype, shape);
      auto* out = static_cast<uint8_t*>(fused.data);
      for (Role r : f.parts) {
        std::memcpy(out, roles.at(r).data, roles.at(r).nbytes());
        out += roles.at(r).nbytes();
        roles.erase(r);
      }
      t[fused_tensor_name(f, l)] = std::move(fused);
    }
    for (auto& [r, x] : roles) t[layer_tensor_name(a, r, l)] = std::move(x);
  }
  t[a.global[size_t(GlobalRole::FinalNorm)].pattern] = random_tensor({C}, s.dtype, rng, s.scale, 1.0f);
  if (!s.tied) t[a.global[size_t(GlobalRole::LmHead)].pattern] = random_tensor({V, C}, s.dtype, rng, s.scale);
  return Model::from_tensors(std::move(cfg), std::move(t), "random-model");
}

}  // namespace llmprune::test
