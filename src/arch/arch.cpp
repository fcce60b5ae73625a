#include "arch/arch.h"

#include <cstdio>

#include "core/error.h"

namespace llmprune {
namespace {

ArchDesc make_llama_like(const std::string& family, bool bias, const std::string& hf_remote_classes) {
  ArchDesc a;
  a.family = family;
  a.qkv_bias_expected = bias;
  a.hf_remote_classes = hf_remote_classes;
  a.layer = {{
      {"attn_norm", "model.layers.%d.input_layernorm.weight", Space::Hidden, Space::None, false, true, false, "blk.%d.attn_norm"},
      {"q", "model.layers.%d.self_attn.q_proj.weight", Space::QHeads, Space::Hidden, false, false, false, "blk.%d.attn_q"},
      {"q_bias", "model.layers.%d.self_attn.q_proj.bias", Space::QHeads, Space::None, true, false, true, "blk.%d.attn_q"},
      {"k", "model.layers.%d.self_attn.k_proj.weight", Space::KVHeads, Space::Hidden, false, false, false, "blk.%d.attn_k"},
      {"k_bias", "model.layers.%d.self_attn.k_proj.bias", Space::KVHeads, Space::None, true, false, true, "blk.%d.attn_k"},
      {"v", "model.layers.%d.self_attn.v_proj.weight", Space::KVHeads, Space::Hidden, false, false, false, "blk.%d.attn_v"},
      {"v_bias", "model.layers.%d.self_attn.v_proj.bias", Space::KVHeads, Space::None, true, false, true, "blk.%d.attn_v"},
      {"o", "model.layers.%d.self_attn.o_proj.weight", Space::Hidden, Space::QHeads, false, false, false, "blk.%d.attn_output"},
      {"mlp_norm", "model.layers.%d.post_attention_layernorm.weight", Space::Hidden, Space::None, false, true, false, "blk.%d.ffn_norm"},
      {"gate", "model.layers.%d.mlp.gate_proj.weight", Space::Mlp, Space::Hidden, false, false, false, "blk.%d.ffn_gate"},
      {"up", "model.layers.%d.mlp.up_proj.weight", Space::Mlp, Space::Hidden, false, false, false, "blk.%d.ffn_up"},
      {"down", "model.layers.%d.mlp.down_proj.weight", Space::Hidden, Space::Mlp, false, false, false, "blk.%d.ffn_down"},
  }};
  a.global = {{
      {"embed", "model.embed_tokens.weight", Space::Vocab, Space::Hidden, false, false, false, "token_embd"},
      {"final_norm", "model.norm.weight", Space::Hidden, Space::None, false, true, false, "output_norm"},
      {"lm_head", "lm_head.weight", Space::Vocab, Space::Hidden, true, false, false, "output"},
  }};
  return a;
}

}  // namespace

const ArchDesc& arch_for_model_type(const std::string& model_type, const std::string& config_file) {
  static const ArchDesc llama = make_llama_like("llama", false, "Llama");
  static const ArchDesc mistral = make_llama_like("mistral", false, "Mistral");
  static const ArchDesc qwen2 = make_llama_like("qwen2", true, "Qwen2");
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

bool role_from_short_name(const std::string& s, Role* out) {
  static const std::pair<const char*, Role> names[] = {{"q", Role::Q}, {"k", Role::K}, {"v", Role::V}, {"o", Role::O},
                                                       {"gate", Role::Gate}, {"up", Role::Up}, {"down", Role::Down}};
  for (auto& [n, r] : names)
    if (s == n) { *out = r; return true; }
  return false;
}

bool is_matrix_role(Role r) {
  return r == Role::Q || r == Role::K || r == Role::V || r == Role::O || r == Role::Gate || r == Role::Up || r == Role::Down;
}

}  // namespace llmprune
