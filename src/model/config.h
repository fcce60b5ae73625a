#pragma once
// Model configuration: global hyper-parameters from config.json, per-layer sizes from the
// tensor shapes (pruned models are ragged: every layer may have its own heads and MLP width).
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace llmprune {

struct LayerConfig {
  int n_head = 0;     // query heads
  int n_kv_head = 0;  // key/value heads (GQA when < n_head)
  int head_dim = 0;
  int d_ff = 0;       // MLP width
  int q_dim() const { return n_head * head_dim; }
  int kv_dim() const { return n_kv_head * head_dim; }
  // Depth pruning removes whole sub-blocks: no attention (0 heads) or no MLP (width 0).
  bool has_attention() const { return n_head > 0; }
  bool has_mlp() const { return d_ff > 0; }
  bool operator==(const LayerConfig&) const = default;
};

struct RopeScaling {
  std::string type;  // "" (none), "linear", "llama3"
  double factor = 1, low_freq_factor = 1, high_freq_factor = 4;
  int original_max_position = 8192;
};

struct ModelConfig {
  std::string model_type;
  int hidden = 0, n_layer = 0, vocab = 0, max_pos = 2048;
  int attention_window = 0;  // sliding window (ConfigKeys::attention_window); max_pos is capped at it; 0 = none
  int n_head = 0, n_kv_head = 0, head_dim = 0, d_ff = 0;  // config.json's uniform values
  double rms_eps = 1e-6, rope_theta = 10000;
  RopeScaling rope_scaling;
  bool tied = false;
  int bos_id = -1, eos_id = -1;
  // PositionKind::GlmBlocks (ChatGLM-6B v1): the token closing the bidirectional prefix (<sop>)
  // and the mask tokens whose first occurrence gives the generated tokens' position ([gMASK],
  // then [MASK]).
  int prefix_end_id = -1;
  std::vector<int> mask_ids;
  std::vector<LayerConfig> layers;  // filled from the tensor shapes
  nlohmann::json raw;               // config.json as read (kept for saving)

  // All layers equal, each with attention and MLP (HF can load it without extra keys).
  bool uniform() const;
  // Whether config.json's llmprune_layers states 0 heads (attention) / 0 MLP width for layer l:
  // the loader then accepts that sub-block's tensors being absent.
  bool states_removed(int layer, bool attention) const;
  // Reads config.json; throws UserError naming the file and field on bad/unsupported values.
  static ModelConfig from_json(const nlohmann::json& j, const std::string& file);
  static ModelConfig load(const std::filesystem::path& config_json);
  // config.json for saving: raw with sizes updated; ragged models add "llmprune_layers".
  nlohmann::json to_json() const;
};

// RoPE inverse frequencies [head_dim/2] with the configured scaling applied.
std::vector<float> rope_inv_freq(const ModelConfig& c, int head_dim);

}  // namespace llmprune
