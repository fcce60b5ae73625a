#pragma once
// Architectures as data: each family is a table of tensor roles with the HF tensor-name pattern
// and the index space each axis lives in. The model loader, the saver, the GGUF exporter and the
// dependency graph all read these tables; nothing else knows tensor names.
#include <array>
#include <string>
#include <vector>

namespace llmprune {

// Per-layer tensor roles, in execution order.
enum class Role : int { AttnNorm, Q, QBias, K, KBias, V, VBias, O, MlpNorm, Gate, Up, Down, Count };
constexpr int kNumLayerRoles = int(Role::Count);

// Whole-model tensor roles.
enum class GlobalRole : int { Embed, FinalNorm, LmHead, Count };
constexpr int kNumGlobalRoles = int(GlobalRole::Count);

// Index spaces. Two axes in the same space are coupled: removing index i of one removes index i
// of the other. Hidden is the residual stream (shared by the whole model); the others are local
// to one layer. QHeads/KVHeads are further coupled by attention in blocks of head_dim (see graph/).
enum class Space : int { None, Hidden, Vocab, QHeads, KVHeads, Mlp };

struct RoleDesc {
  const char* name;     // short name used in CLI flags and reports: "q", "gate", ...
  const char* pattern;  // HF tensor name; "%d" is the layer index
  Space axis0, axis1;   // axis1 = None for vectors; matrices are [out, in] as in nn.Linear
  bool optional;        // biases: present in some families only
  bool is_norm, is_bias;
  const char* gguf;     // llama.cpp tensor name stem ("blk.%d.attn_q")
};

struct ArchDesc {
  std::string family;                    // "llama" (also mistral), "qwen2"
  std::array<RoleDesc, kNumLayerRoles> layer;
  std::array<RoleDesc, kNumGlobalRoles> global;
  bool qkv_bias_expected;                // the family ships q/k/v biases
  // Class-name stem of the transformers remote code written beside ragged models
  // (model/hf_code.h: "Llama" -> modeling_llmprune.LlmpruneLlamaForCausalLM); "" = none exists,
  // a ragged model of the family then loads in llmprune and llama.cpp only.
  std::string hf_remote_classes;
};

// The table for a config.json model_type; throws UserError for unknown ones.
const ArchDesc& arch_for_model_type(const std::string& model_type, const std::string& config_file);
const RoleDesc& role_desc(const ArchDesc& a, Role r);
std::string layer_tensor_name(const ArchDesc& a, Role r, int layer);
// Role of a short name ("q", "k", "v", "o", "gate", "up", "down"); false if unknown.
bool role_from_short_name(const std::string& s, Role* out);
bool is_matrix_role(Role r);

}  // namespace llmprune
