#include "arch/arch.h"

#include <algorithm>
#include <cstdio>

#include "core/error.h"

namespace llmprune {
namespace {

// Rows in Role order (arch.h).
ArchDesc make_llama_like(const std::string& family, std::vector<BiasSwitch> biases, const std::string& hf_remote_classes) {
  ArchDesc a;
  a.family = family;
  a.bias_switches = std::move(biases);
  a.hf_remote_classes = hf_remote_classes;
  a.layer = {{
      {"attn_norm", "model.layers.%d.input_layernorm.weight", Space::Hidden, Space::None, false, true, false, "blk.%d.attn_norm"},
      {"q", "model.layers.%d.self_attn.q_proj.weight", Space::QHeads, Space::Hidden, false, false, false, "blk.%d.attn_q"},
      {"q_bias", "model.layers.%d.self_attn.q_proj.bias", Space::QHeads, Space::None, true, false, true, "blk.%d.attn_q", Role::Q},
      {"k", "model.layers.%d.self_attn.k_proj.weight", Space::KVHeads, Space::Hidden, false, false, false, "blk.%d.attn_k"},
      {"k_bias", "model.layers.%d.self_attn.k_proj.bias", Space::KVHeads, Space::None, true, false, true, "blk.%d.attn_k", Role::K},
      {"v", "model.layers.%d.self_attn.v_proj.weight", Space::KVHeads, Space::Hidden, false, false, false, "blk.%d.attn_v"},
      {"v_bias", "model.layers.%d.self_attn.v_proj.bias", Space::KVHeads, Space::None, true, false, true, "blk.%d.attn_v", Role::V},
      {"o", "model.layers.%d.self_attn.o_proj.weight", Space::Hidden, Space::QHeads, false, false, false, "blk.%d.attn_output"},
      {"mlp_norm", "model.layers.%d.post_attention_layernorm.weight", Space::Hidden, Space::None, false, true, false, "blk.%d.ffn_norm"},
      {"gate", "model.layers.%d.mlp.gate_proj.weight", Space::Mlp, Space::Hidden, false, false, false, "blk.%d.ffn_gate"},
      {"up", "model.layers.%d.mlp.up_proj.weight", Space::Mlp, Space::Hidden, false, false, false, "blk.%d.ffn_up"},
      {"down", "model.layers.%d.mlp.down_proj.weight", Space::Hidden, Space::Mlp, false, false, false, "blk.%d.ffn_down"},
      {"o_bias", "model.layers.%d.self_attn.o_proj.bias", Space::Hidden, Space::None, true, false, true, "blk.%d.attn_output", Role::O},
      {"gate_bias", "model.layers.%d.mlp.gate_proj.bias", Space::Mlp, Space::None, true, false, true, "blk.%d.ffn_gate", Role::Gate},
      {"up_bias", "model.layers.%d.mlp.up_proj.bias", Space::Mlp, Space::None, true, false, true, "blk.%d.ffn_up", Role::Up},
      {"down_bias", "model.layers.%d.mlp.down_proj.bias", Space::Hidden, Space::None, true, false, true, "blk.%d.ffn_down", Role::Down},
  }};
  a.global = {{
      {"embed", "model.embed_tokens.weight", Space::Vocab, Space::Hidden, false, false, false, "token_embd"},
      {"final_norm", "model.norm.weight", Space::Hidden, Space::None, false, true, false, "output_norm"},
      {"lm_head", "lm_head.weight", Space::Vocab, Space::Hidden, true, false, false, "output"},
  }};
  return a;
}

// HF LlamaConfig / MistralConfig: attention_bias (q, k, v, o) and mlp_bias (gate, up, down).
std::vector<BiasSwitch> llama_biases() {
  return {{"attention_bias", {Role::QBias, Role::KBias, Role::VBias, Role::OBias}},
          {"mlp_bias", {Role::GateBias, Role::UpBias, Role::DownBias}}};
}

}  // namespace

const ArchDesc& arch_for_model_type(const std::string& model_type, const std::string& config_file) {
  static const ArchDesc llama = make_llama_like("llama", llama_biases(), "Llama");
  static const ArchDesc mistral = make_llama_like("mistral", llama_biases(), "Mistral");
  // Qwen2Attention: q/k/v always with a bias, o without; the MLP has none.
  static const ArchDesc qwen2 = make_llama_like("qwen2", {{nullptr, {Role::QBias, Role::KBias, Role::VBias}}}, "Qwen2");
  if (model_type == "llama") return llama;
  if (model_type == "mistral") return mistral;
  if (model_type == "qwen2") return qwen2;
  throw input_error(config_file, "model_type '" + model_type + "' is not supported (llama, mistral, qwen2 are)");
}

const RoleDesc& role_desc(const ArchDesc& a, Role r) { return a.layer[size_t(r)]; }

std::string layer_tensor_name(const ArchDesc& a, Role r, int layer) {
  char buf[256];
  std::snprintf(buf, sizeof buf, role_desc(a, r).pattern, layer);
  return buf;
}

namespace {
// Role names and shapes are the same in every family; the llama table stands for all of them.
const ArchDesc& reference_table() { return arch_for_model_type("llama", "<builtin>"); }
}  // namespace

const std::vector<Role>& matrix_roles() {
  static const std::vector<Role> roles = [] {
    std::vector<Role> out;
    const ArchDesc& a = reference_table();
    for (int r = 0; r < kNumLayerRoles; r++)
      if (a.layer[size_t(r)].axis1 != Space::None) out.push_back(Role(r));
    return out;
  }();
  return roles;
}

bool is_matrix_role(Role r) {
  const auto& m = matrix_roles();
  return std::find(m.begin(), m.end(), r) != m.end();
}

bool role_from_short_name(const std::string& s, Role* out) {
  for (Role r : matrix_roles())
    if (s == role_desc(reference_table(), r).name) {
      *out = r;
      return true;
    }
  return false;
}

Role bias_role_of(const ArchDesc& a, Role matrix) {
  for (int r = 0; r < kNumLayerRoles; r++)
    if (a.layer[size_t(r)].is_bias && a.layer[size_t(r)].bias_of == matrix) return Role(r);
  return Role::Count;
}

const BiasSwitch* bias_switch_of(const ArchDesc& a, Role r) {
  for (const BiasSwitch& s : a.bias_switches)
    if (std::find(s.roles.begin(), s.roles.end(), r) != s.roles.end()) return &s;
  return nullptr;
}

Presence bias_presence(const ArchDesc& a, Role r, const nlohmann::json& cfg, const std::string& config_file) {
  const BiasSwitch* s = bias_switch_of(a, r);
  if (!s) return Presence::Absent;
  if (!s->config_key) return Presence::Required;
  if (!cfg.is_object() || !cfg.contains(s->config_key) || cfg[s->config_key].is_null()) return Presence::Optional;
  if (!cfg[s->config_key].is_boolean()) throw input_error(config_file, std::string("field '") + s->config_key + "' must be true or false");
  return cfg[s->config_key].get<bool>() ? Presence::Required : Presence::Absent;
}

}  // namespace llmprune
