#include "model/random_model.h"

#include <cmath>
#include <map>

#include "core/fs.h"
#include "io/safetensors.h"

namespace llmprune {

ModelConfig llama_config(int hidden, int layers, int heads, int kv_heads, int d_ff, int vocab, bool tied, int max_pos) {
  nlohmann::json j = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"hidden_size", hidden},
                      {"intermediate_size", d_ff}, {"num_hidden_layers", layers}, {"num_attention_heads", heads},
                      {"num_key_value_heads", kv_heads}, {"vocab_size", vocab}, {"max_position_embeddings", max_pos},
                      {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0}, {"hidden_act", "silu"},
                      {"tie_word_embeddings", tied}, {"bos_token_id", 1}, {"eos_token_id", 2}};
  return ModelConfig::from_json(j, "<random>");
}

namespace {

// splitmix64: a counter-based generator, so every chunk can be filled independently.
inline uint64_t splitmix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

void fill_random(DType dtype, void* dst, int64_t n, uint64_t seed, bool ones) {
  const int64_t chunk = 1 << 16;
  const float half_width = 0.02f * std::sqrt(3.0f);  // uniform[-a, a] has std a/sqrt(3)
#pragma omp parallel for schedule(static)
  for (int64_t c0 = 0; c0 < n; c0 += chunk) {
    int64_t len = std::min(chunk, n - c0);
    std::vector<float> buf(static_cast<size_t>(len));
    for (int64_t i = 0; i < len; i++) {
      if (ones) {
        buf[size_t(i)] = 1.0f;
      } else {
        uint64_t r = splitmix(seed ^ uint64_t(c0 + i) * 0xD1B54A32D192ED03ull);
        float u = float(r >> 40) * (1.0f / 16777216.0f);  // [0, 1)
        buf[size_t(i)] = (2 * u - 1) * half_width;
      }
    }
    from_f32(dtype, buf.data(), static_cast<uint8_t*>(dst) + size_t(c0) * dtype_size(dtype), size_t(len));
  }
}

namespace {

Tensor random_tensor(DType dtype, std::vector<int64_t> shape, uint64_t seed, bool ones) {
  Tensor t = Tensor::zeros(dtype, std::move(shape));
  fill_random(dtype, t.data, t.numel(), seed, ones);
  return t;
}

// Every tensor of a random model with its shape, seed and kind, in make_random_model's draw order.
struct RandomSpec {
  std::string name;
  std::vector<int64_t> shape;
  uint64_t seed;
  bool ones;
};

std::vector<RandomSpec> random_specs(const ModelConfig& cfg, uint64_t seed) {
  std::vector<RandomSpec> out;
  const ArchDesc& a = arch_for_model_type(cfg.model_type, "<random>");
  const int64_t C = cfg.hidden, V = cfg.vocab, D = cfg.head_dim, F = cfg.d_ff;
  const int64_t QD = cfg.n_head * D, KD = cfg.n_kv_head * D;
  uint64_t k = seed * 1000003ull;
  out.push_back({a.global[size_t(GlobalRole::Embed)].pattern, {V, C}, ++k, false});
  out.push_back({a.global[size_t(GlobalRole::FinalNorm)].pattern, {C}, ++k, true});
  if (!cfg.tied) out.push_back({a.global[size_t(GlobalRole::LmHead)].pattern, {V, C}, ++k, false});
  for (int l = 0; l < cfg.n_layer; l++) {
    auto put = [&](Role r, std::vector<int64_t> shape, bool ones) { out.push_back({layer_tensor_name(a, r, l), std::move(shape), ++k, ones}); };
    put(Role::AttnNorm, {C}, true);
    put(Role::Q, {QD, C}, false);
    put(Role::K, {KD, C}, false);
    put(Role::V, {KD, C}, false);
    put(Role::O, {C, QD}, false);
    put(Role::MlpNorm, {C}, true);
    put(Role::Gate, {F, C}, false);
    put(Role::Up, {F, C}, false);
    put(Role::Down, {C, F}, false);
    // Biases last (the other tensors keep their seeds), each sized by its projection's rows.
    for (int r = 0; r < kNumLayerRoles; r++) {
      const RoleDesc& d = role_desc(a, Role(r));
      if (!d.is_bias || bias_presence(a, Role(r), cfg.raw, "<random>") != Presence::Required) continue;
      const Space rows = role_desc(a, d.bias_of).axis0;
      put(Role(r), {rows == Space::QHeads ? QD : rows == Space::KVHeads ? KD : rows == Space::Mlp ? F : C}, false);
    }
    for (Role r : {Role::PostAttnNorm, Role::PostMlpNorm})  // GLM-4-0414's sub-block output norms
      if (has_role(a, r)) put(r, {C}, true);
  }
  return out;
}

}  // namespace

Model make_random_model(const ModelConfig& cfg, DType dtype, uint64_t seed) {
  std::map<std::string, Tensor> tensors;
  for (auto& sp : random_specs(cfg, seed)) tensors[sp.name] = random_tensor(dtype, sp.shape, sp.seed, sp.ones);
  return Model::from_tensors(cfg, std::move(tensors), "<random>");
}

void write_random_checkpoint(const ModelConfig& cfg, DType dtype, uint64_t seed, const std::filesystem::path& dir) {
  SafetensorsWriter w;
  w.set_metadata("format", "pt");
  for (auto& sp : random_specs(cfg, seed)) {
    int64_t n = 1;
    for (int64_t d : sp.shape) n *= d;
    w.add(sp.name, dtype, sp.shape, [dtype, n, s = sp.seed, ones = sp.ones](void* dst) { fill_random(dtype, dst, n, s, ones); });
  }
  w.write(dir / "model.safetensors");
  nlohmann::json j = cfg.raw;  // as given (cfg.layers is derived from shapes at load time)
  j["torch_dtype"] = dtype == DType::F32 ? "float32" : dtype == DType::F16 ? "float16" : "bfloat16";
  atomic_write_file(dir / "config.json", j.dump(2) + "\n");
}

}  // namespace llmprune
