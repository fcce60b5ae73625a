#pragma once
// Architectures as data: each family is one description holding
//   - its tensor roles with the HF tensor-name pattern, the llama.cpp name and the index space of
//     each axis (what the loader, saver, GGUF exporter and dependency graph read);
//   - its config.json vocabulary (which key holds the hidden size, the layer count, ...);
//   - its per-layer behaviour (norm kind, rotary pairing and the fraction of a head rotated);
//   - its FUSED tensors: a stored tensor that is the concatenation of several roles along rows
//     (ChatGLM's query_key_value = [Q | K | V]); the loader splits it into role views, the saver
//     and the GGUF exporter concatenate the roles again;
//   - its tokenizer conventions (special tokens appended after the vocabulary, the prompt prefix).
// Everything above arch/ works on separate roles; nothing else knows a family's names or keys.
#include <array>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/whitespace_escapes.h"

namespace llmprune {

// Per-layer tensor roles, in execution order, then the biases added later (o, gate, up, down,
// then the LayerNorm biases), then the norms of the sub-block outputs (GLM-4-0414's
// post_self_attn_layernorm / post_mlp_layernorm, ResidualDesc::post_norm): appended so that role
// numbers, which seed LoRA's initialisation and dropout, stay put.
enum class Role : int {
  AttnNorm, Q, QBias, K, KBias, V, VBias, O, MlpNorm, Gate, Up, Down,
  OBias, GateBias, UpBias, DownBias,
  AttnNormBias, MlpNormBias,
  PostAttnNorm, PostMlpNorm,
  Count
};
constexpr int kNumLayerRoles = int(Role::Count);

// Whole-model tensor roles.
// FinalNormBias: LayerNorm families only (a role whose pattern is nullptr is absent from the family).
enum class GlobalRole : int { Embed, FinalNorm, LmHead, FinalNormBias, Count };
constexpr int kNumGlobalRoles = int(GlobalRole::Count);

// Index spaces. Two axes in the same space are coupled: removing index i of one removes index i
// of the other. Hidden is the residual stream (shared by the whole model); the others are local
// to one layer. QHeads/KVHeads are further coupled by attention in blocks of head_dim (see graph/).
enum class Space : int { None, Hidden, Vocab, QHeads, KVHeads, Mlp };

struct RoleDesc {
  const char* name;     // short name used in CLI flags and reports: "q", "gate", "o_bias", ...
  const char* pattern;  // HF tensor name; "%d" is the layer index. nullptr: stored inside a fused tensor
  Space axis0, axis1;   // axis1 = None for vectors; matrices are [out, in] as in nn.Linear
  bool optional;        // biases: present in some families / configs only (see BiasSwitch)
  bool is_norm, is_bias;
  const char* gguf;     // llama.cpp tensor name stem ("blk.%d.attn_q"); a bias adds ".bias"; unused for fused parts
  Role bias_of = Role::Count;  // a bias: the matrix whose output [N, rows] it is added to
};

// Biases a family carries, switched on together by one config.json boolean (HF LLaMA's
// `attention_bias` puts a bias on q, k, v and o; `mlp_bias` on gate, up and down; ChatGLM's
// `add_qkv_bias` on the fused query_key_value).
// config_key == nullptr: always present (Qwen2's q/k/v biases).
struct BiasSwitch {
  const char* config_key;
  std::vector<Role> roles;
};

// A stored tensor made of several roles concatenated along axis 0 (rows; for vectors, entries),
// in `parts` order. The size of each part is the size of its role's axis-0 index space, known
// from the layer's other tensors (ChatGLM: Q rows = dense's columns, MLP rows = dense_4h_to_h's
// columns); parts whose space no other tensor states share the remaining rows equally (K and V).
// How the parts of a fused tensor are laid out along its rows (Torch-Pruning's index mapping).
enum class FusedLayout {
  Concat,   // [part 0 | part 1 | ...]: each part's rows contiguous
  PerHead,  // per head h: [part 0 head h | part 1 head h | ...], blocks of head_dim rows
            // (ChatGLM-6B v1's query_key_value: [q_0 k_0 v_0 q_1 k_1 v_1 ...]); every part has
            // the same number of heads
};

struct FusedTensor {
  const char* pattern;      // HF tensor name with "%d" for the layer
  std::vector<Role> parts;  // concatenated in this order
  const char* gguf;         // llama.cpp tensor name stem when llama.cpp keeps it fused, else nullptr
  const char* lora_module;  // PEFT module name ("query_key_value")
  FusedLayout layout = FusedLayout::Concat;
};

// Stored row of row `row` of part `part` (of n_parts) in a fused tensor whose parts have
// `part_rows` rows each (Concat: any sizes, pass the offset of the part in `part_offset`).
int64_t fused_row(const FusedTensor& f, int part, int64_t row, int64_t part_offset, int64_t part_rows, int head_dim);

enum class NormKind {
  RMS,        // RMSNorm, weight only
  LayerNorm,  // nn.LayerNorm with weight and bias (roles AttnNormBias, MlpNormBias, FinalNormBias)
};

// The MLP's activation.
enum class MlpKind {
  SwiGLU,    // down(silu(gate(x)) * up(x))
  GeluTanh,  // down(gelu_tanh(up(x))): no gate (ChatGLM-6B v1's dense_h_to_4h is the role `up`)
};

// How RoPE pairs the rotated dimensions of a head.
enum class RotaryPairing {
  RotateHalf,        // LLaMA/NeoX: dims (i, i + r/2), i < r/2
  ConsecutivePairs,  // GPT-J/ChatGLM: dims (2i, 2i+1), i < r/2
  Glm2D,             // ChatGLM-6B v1: each half of the head rotate-half on its own, the first by the
                     // position, the second by the block position (PositionKind::GlmBlocks)
};

struct RotaryDesc {
  RotaryPairing pairing = RotaryPairing::RotateHalf;
  int rotated_num = 1, rotated_den = 1;  // r = head_dim * num / den dims are rotated, the rest pass through
  bool inv_freq_fp16 = false;            // inverse frequencies rounded to fp16 (THUDM v1 calls .half())
  int rotated_dims(int head_dim) const { return head_dim * rotated_num / rotated_den; }
  // Dims one cos/sin table row spans: the rotated dims, or one half of the head for Glm2D.
  int table_dims(int head_dim) const { return pairing == RotaryPairing::Glm2D ? head_dim / 2 : rotated_dims(head_dim); }
};

// Where a token's positions and its attention mask come from.
enum class PositionKind {
  Causal,     // position t, causal mask
  GlmBlocks,  // ChatGLM-6B v1 (CHATGLM.md §1.5): with c = the index of sop (config key
              // prefix_end_key) and m = the index of the first mask token (mask_keys, in order of
              // preference), position p_t = t before c and m from c on, block position b_t = 0
              // before c and t - c + 1 from c on, and every query sees the keys before c
              // (prefix-bidirectional). A sequence without sop is scored as a causal LM: p_t = t,
              // b_t = 0, causal mask.
};

// The residual connection of a block: out = scale * (normalised input if from_normed, else the
// input) + sub-block(normalised input). ChatGLM-6B v1: from the normalised input, scaled by
// alpha = sqrt(2 * 28) (hard-coded in THUDM's GLMBlock, whatever num_layers says).
// post_norm (GLM-4-0414): each sub-block's output is normalised (RMSNorm, the model's eps,
// weights Role::PostAttnNorm / Role::PostMlpNorm) before it is added:
//   h = x + post_attn_norm(attn(attn_norm(x))),  out = h + post_mlp_norm(mlp(mlp_norm(h))).
struct ResidualDesc {
  bool from_normed = false;
  double scale = 1.0;
  bool post_norm = false;
};

// config.json keys. Each list is tried in order; reading takes the first present, writing updates
// every one present (GLM-4 states both num_layers and num_hidden_layers) and adds the first.
struct ConfigKeys {
  std::vector<const char*> hidden, n_layer, vocab, n_head, n_kv_head, head_dim, d_ff, eps, max_pos;
  const char* rope_theta = nullptr;  // the RoPE base itself ("rope_theta")
  const char* rope_ratio = nullptr;  // or a multiplier of rope_base_default ("rope_ratio": base = 10000 * ratio)
  double rope_base_default = 10000, eps_default = 1e-6;
  int max_pos_default = 2048;
  bool tied_default = false;  // tie_word_embeddings when absent (v1 has no key: transformers' default, true)
  // PositionKind::GlmBlocks: the token ending the bidirectional prefix, and the mask tokens.
  const char* prefix_end_key = nullptr;        // "bos_token_id" (v1's <sop>)
  std::vector<const char*> mask_keys;          // "gmask_token_id", "mask_token_id" 
  const char* kv_heads_enabled = nullptr;  // boolean key that must be true for n_kv_head to be read ("multi_query_attention")
  bool head_dim_required = false;          // head_dim is not hidden / heads in general (kv_channels)
  // Sliding-window attention ("sliding_window"): llmprune computes full attention, which differs
  // once a sequence is longer than the window, so the model's usable context is capped at it.
  const char* attention_window = nullptr;
};

// A boolean config key that must have a given value for the description to hold.
struct ConfigRequirement {
  const char* key;
  bool required, default_value;  // default_value: its meaning when absent
  const char* meaning;           // what the other value would need ("LayerNorm with bias")
};

// A config key whose presence marks a variant this description does not cover (false, 0 and
// null are absence), unless it holds `accepted` (Phi-3's partial_rotary_factor 1.0: the whole
// head rotates; then 0 is refused too).
struct ConfigRefusal {
  const char* key;
  const char* meaning;
  std::optional<double> accepted = std::nullopt;
};

// Token strings added after the tokenizer's own vocabulary (ids continue from its size), and how
// a prompt is framed: the tokens it starts with (instead of BOS) and the tokens it ends with,
// after which the reply follows. A text scored on its own (perplexity, calibration, plain-text
// tuning) is framed as the reply to an empty prompt: prefix + suffix + text. The family's own
// SentencePiece file name is read before tokenizer.model and written back under that name.
struct TokenizerConvention {
  std::vector<const char*> appended_specials;      // after a SentencePiece model's pieces
  std::vector<std::vector<const char*>> prefix;    // each: the accepted spellings of one token
  std::vector<std::vector<const char*>> suffix;    // likewise; ChatGLM-6B v1: [gMASK] <sop>
  std::vector<const char*> sp_files;               // ChatGLM-6B v1: ice_text.model
  WhitespaceEscapes escapes;                       // ChatGLM-6B v1: <n> <|tab|> <|blank_k|>
};

struct ArchDesc {
  std::string family;                    // "llama" (also mistral), "qwen2", "chatglm"
  std::array<RoleDesc, kNumLayerRoles> layer;
  std::array<RoleDesc, kNumGlobalRoles> global;
  std::vector<BiasSwitch> bias_switches;  // a bias role in none of them is never present
  // Class-name stem of the transformers remote code written beside ragged models
  // (model/hf_code.h: "Llama" -> modeling_llmprune.LlmpruneLlamaForCausalLM); "" = none exists,
  // a ragged model of the family then loads in llmprune and llama.cpp only.
  std::string hf_remote_classes;
  // transformers has no class of its own for the family (ChatGLM: THUDM's modeling_chatglm.py
  // ships with the checkpoint): the remote code is written beside uniform models too.
  bool hf_remote_always = false;
  std::vector<FusedTensor> fused;        // stored tensors holding several roles
  ConfigKeys keys;
  std::vector<ConfigRequirement> requirements;
  std::vector<ConfigRefusal> refusals;
  NormKind norm = NormKind::RMS;
  MlpKind mlp = MlpKind::SwiGLU;
  RotaryDesc rotary;
  PositionKind positions = PositionKind::Causal;
  ResidualDesc residual;
  TokenizerConvention tokenizer;
  const char* gguf_arch = "llama";       // llama.cpp general.architecture for uniform models; nullptr: none (refused)
  const char* gguf_refusal = nullptr;    // with gguf_arch nullptr: why (the export error says it)
  bool gguf_ragged = true;               // llama.cpp can load per-layer sizes for this family
  bool gguf_permute_qk = true;           // q/k rows reordered to llama.cpp's RoPE layout (rotate-half families)
  bool gguf_heads_span_hidden = false;   // llama.cpp's graph needs heads x head size = hidden (no key_length key)
  const char* gguf_tokenizer_pre = nullptr;  // llama.cpp pre-tokenizer for a SentencePiece vocabulary ("chatglm-spm")
  // The biases llama.cpp's architecture reads (its `llama` and `deci` loaders take all seven);
  // exporting another is refused rather than written into a file llama.cpp would reject.
  std::vector<Role> gguf_biases = {Role::QBias, Role::KBias, Role::VBias, Role::OBias, Role::GateBias, Role::UpBias, Role::DownBias};
};

// The table for a config.json model_type (its first variant); throws UserError for unknown ones.
const ArchDesc& arch_for_model_type(const std::string& model_type, const std::string& config_file);
// The table for a whole config.json: model_type, then the variant its keys select ("chatglm" with
// position_encoding_2d or inner_hidden_size is ChatGLM-6B v1, else ChatGLM2/3/GLM-4).
const ArchDesc& arch_for_config(const nlohmann::json& cfg, const std::string& config_file);
// The same for a model_type given apart from the config's keys (ModelConfig::model_type wins).
const ArchDesc& arch_for_config(const std::string& model_type, const nlohmann::json& cfg, const std::string& config_file);
// Every registered model_type (for messages and docs).
std::vector<std::string> supported_model_types();
const RoleDesc& role_desc(const ArchDesc& a, Role r);
// The HF name of a role's tensor; a role stored inside a fused tensor is named "<fused>[<role>]".
std::string layer_tensor_name(const ArchDesc& a, Role r, int layer);
// The fused tensor holding role r, or nullptr when r is stored on its own.
const FusedTensor* fused_of(const ArchDesc& a, Role r);
std::string fused_tensor_name(const FusedTensor& f, int layer);
// Role of a projection's short name ("q", "k", "v", "o", "gate", "up", "down"); false if unknown.
bool role_from_short_name(const std::string& s, Role* out);
// Weight-matrix roles (projections), in execution order; the same in every family.
const std::vector<Role>& matrix_roles();
bool is_matrix_role(Role r);
// Whether table a has role r at all (MlpKind::GeluTanh has no gate, RMS norms no norm biases).
bool has_role(const ArchDesc& a, Role r);
bool has_global_role(const ArchDesc& a, GlobalRole g);
// Whether role r belongs to a layer's attention sub-block (its norm, q/k/v/o and their biases);
// every other layer role belongs to the MLP sub-block. A depth-pruned layer may lack either.
bool is_attention_role(Role r);
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
