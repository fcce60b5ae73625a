#pragma once
// Architectures as data: each family is a table of tensor roles with the HF tensor-name pattern
// and the index space each axis lives in. The model loader, the saver, the GGUF exporter and the
// dependency graph all read these tables; nothing else knows tensor names.
#include <array>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace llmprune {

// Per-layer tensor roles, in execution order, then the biases added later (o, gate, up, down):
// appended so that role numbers, which seed LoRA's initialisation and dropout, stay put.
enum class Role : int {
  AttnNorm, Q, QBias, K, KBias, V, VBias, O, MlpNorm, Gate, Up, Down,
  OBias, GateBias, UpBias, DownBias,
  Count
};
constexpr int kNumLayerRoles = int(Role::Count);

// Whole-model tensor roles.
enum class GlobalRole : int { Embed, FinalNorm, LmHead, Count };
constexpr int kNumGlobalRoles = int(GlobalRole::Count);

// Index spaces. Two axes in the same space are coupled: removing index i of one removes index i
// of the other. Hidden is the residual stream (shared by the whole model); the others are local
// to one layer. QHeads/KVHeads are further coupled by attention in blocks of head_dim (see graph/).
enum class Space : int { None, Hidden, Vocab, QHeads, KVHeads, Mlp };

struct RoleDesc {
  const char* name;     // short name used in CLI flags and reports: "q", "gate", "o_bias", ...
  const char* pattern;  // HF tensor name; "%d" is the layer index
  Space axis0, axis1;   // axis1 = None for vectors; matrices are [out, in] as in nn.Linear
  bool optional;        // biases: present in some families / configs only (see BiasSwitch)
  bool is_norm, is_bias;
  const char* gguf;     // llama.cpp tensor name stem ("blk.%d.attn_q"); a bias adds ".bias"
  Role bias_of = Role::Count;  // a bias: the matrix whose output [N, rows] it is added to
};

// Biases a family carries, switched on together by one config.json boolean (HF LLaMA's
// `attention_bias` puts a bias on q, k, v and o; `mlp_bias` on gate, up and down).
// config_key == nullptr: always present (Qwen2's q/k/v biases).
struct BiasSwitch {
  const char* config_key;
  std::vector<Role> roles;
};

struct ArchDesc {
  std::string family;                    // "llama" (also mistral), "qwen2"
  std::array<RoleDesc, kNumLayerRoles> layer;
  std::array<RoleDesc, kNumGlobalRoles> global;
  std::vector<BiasSwitch> bias_switches;  // a bias role in none of them is never present
  // Class-name stem of the transformers remote code written beside ragged models
  // (model/hf_code.h: "Llama" -> modeling_llmprune.LlmpruneLlamaForCausalLM); "" = none exists,
  // a ragged model of the family then loads in llmprune and llama.cpp only.
  std::string hf_remote_classes;
};

// The table for a config.json model_type; throws UserError for unknown ones.
const ArchDesc& arch_for_model_type(const std::string& model_type, const std::string& config_file);
const RoleDesc& role_desc(const ArchDesc& a, Role r);
std::string layer_tensor_name(const ArchDesc& a, Role r, int layer);
// Role of a projection's short name ("q", "k", "v", "o", "gate", "up", "down"); false if unknown.
bool role_from_short_name(const std::string& s, Role* out);
// Weight-matrix roles (projections), in execution order; the same in every family.
const std::vector<Role>& matrix_roles();
bool is_matrix_role(Role r);
// The bias role of projection `matrix` in table a (Role::Count when the table has none).
Role bias_role_of(const ArchDesc& a, Role matrix);

// Whether a model with config.json `cfg` carries bias role r.
enum class Presence { Absent, Optional, Required };
// Required when its switch has no key or the key is true, Absent when the key is false or the
// family carries no such bias, Optional when the key is missing (older checkpoints with q/k/v
// biases and no attention_bias key). A key that is not a boolean is a UserError naming the file.
Presence bias_presence(const ArchDesc& a, Role r, const nlohmann::json& cfg, const std::string& config_file);
// The switch holding bias role r, or nullptr.
const BiasSwitch* bias_switch_of(const ArchDesc& a, Role r);

}  // namespace llmprune
