#include "model/config.h"

#include <cmath>
#include <fstream>

#include "core/error.h"

using nlohmann::json;

namespace llmprune {
namespace {

int get_int(const json& j, const char* key, const std::string& file, bool required, int fallback = 0) {
  if (!j.contains(key) || j[key].is_null()) {
    if (required) throw input_error(file, std::string("missing field '") + key + "'");
    return fallback;
  }
  if (!j[key].is_number_integer() || j[key].get<int64_t>() < 0 || j[key].get<int64_t>() > (1 << 30))
    throw input_error(file, std::string("field '") + key + "' must be a non-negative integer");
  return j[key].get<int>();
}

double get_num(const json& j, const char* key, const std::string& file, double fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_number()) throw input_error(file, std::string("field '") + key + "' must be a number");
  return j[key].get<double>();
}

}  // namespace

ModelConfig ModelConfig::from_json(const json& j, const std::string& file) {
  if (!j.is_object()) throw input_error(file, "not a JSON object");
  ModelConfig c;
  c.raw = j;
  if (!j.contains("model_type") || !j["model_type"].is_string()) throw input_error(file, "missing field 'model_type'");
  c.model_type = j["model_type"].get<std::string>();
  c.hidden = get_int(j, "hidden_size", file, true);
  c.n_layer = get_int(j, "num_hidden_layers", file, true);
  c.vocab = get_int(j, "vocab_size", file, true);
  c.n_head = get_int(j, "num_attention_heads", file, true);
  c.n_kv_head = get_int(j, "num_key_value_heads", file, false, c.n_head);
  c.d_ff = get_int(j, "intermediate_size", file, true);
  c.max_pos = get_int(j, "max_position_embeddings", file, false, 2048);
  if (c.hidden <= 0 || c.n_layer <= 0 || c.vocab <= 0 || c.n_head <= 0 || c.n_kv_head <= 0)
    throw input_error(file, "hidden_size, num_hidden_layers, vocab_size and head counts must be positive");
  if (c.n_head % c.n_kv_head != 0)
    throw input_error(file, "num_attention_heads must be a multiple of num_key_value_heads");
  c.head_dim = get_int(j, "head_dim", file, false, c.hidden / c.n_head);
  if (c.head_dim <= 0 || c.head_dim % 2 != 0) throw input_error(file, "head_dim must be a positive even number");
  c.rms_eps = get_num(j, "rms_norm_eps", file, 1e-6);
  c.rope_theta = get_num(j, "rope_theta", file, 10000.0);
  c.tied = j.contains("tie_word_embeddings") && j["tie_word_embeddings"].is_boolean() && j["tie_word_embeddings"].get<bool>();
  if (j.contains("hidden_act") && j["hidden_act"].is_string()) {
    std::string act = j["hidden_act"].get<std::string>();
    if (act != "silu" && act != "swish") throw input_error(file, "hidden_act '" + act + "' is not supported (silu is)");
  }
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    const json& rs = j["rope_scaling"];
    if (!rs.is_object()) throw input_error(file, "rope_scaling must be an object or null");
    std::string type;
    for (const char* key : {"rope_type", "type"}) {  // rope_type wins when both are given
      if (!rs.contains(key) || rs[key].is_null()) continue;
      if (!rs[key].is_string()) throw input_error(file, std::string("rope_scaling.") + key + " must be a string");
      type = rs[key].get<std::string>();
      break;
    }
    if (type == "default" || type.empty()) {
      c.rope_scaling.type = "";
    } else if (type == "linear" || type == "llama3") {
      c.rope_scaling.type = type;
      c.rope_scaling.factor = get_num(rs, "factor", file, 1.0);
      c.rope_scaling.low_freq_factor = get_num(rs, "low_freq_factor", file, 1.0);
      c.rope_scaling.high_freq_factor = get_num(rs, "high_freq_factor", file, 4.0);
      c.rope_scaling.original_max_position = get_int(rs, "original_max_position_embeddings", file, false, 8192);
      if (c.rope_scaling.factor <= 0) throw input_error(file, "rope_scaling.factor must be positive");
    } else {
      throw input_error(file, "rope_scaling type '" + type + "' is not supported (linear, llama3 are)");
    }
  }
  if (j.contains("use_sliding_window") && !j["use_sliding_window"].is_null() && !j["use_sliding_window"].is_boolean())
    throw input_error(file, "field 'use_sliding_window' must be true or false");
  const bool use_sliding_window = !j.contains("use_sliding_window") || j["use_sliding_window"].is_null() ||
                                  j["use_sliding_window"].get<bool>();
  if (j.contains("sliding_window") && j["sliding_window"].is_number_integer() && use_sliding_window &&
      c.model_type == "mistral") {
    // Mistral-style sliding window only matters past the window; we score shorter contexts.
  }
  c.bos_id = get_int(j, "bos_token_id", file, false, -1);
  if (j.contains("eos_token_id") && j["eos_token_id"].is_array()) {
    const json& e = j["eos_token_id"];
    for (auto& id : e)
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > (1 << 30))
        throw input_error(file, "field 'eos_token_id' must be a non-negative integer or a list of them");
    c.eos_id = e.empty() ? -1 : e[0].get<int>();
  } else
    c.eos_id = get_int(j, "eos_token_id", file, false, -1);
  return c;
}

ModelConfig ModelConfig::load(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw input_error(path.string(), "cannot open");
  json j = json::parse(in, nullptr, false);
  if (j.is_discarded()) throw input_error(path.string(), "not valid JSON");
  return from_json(j, path.string());
}

bool ModelConfig::uniform() const {
  for (auto& l : layers)
    if (!(l == layers.front())) return false;
  return true;
}

json ModelConfig::to_json() const {
  json j = raw;
  j["hidden_size"] = hidden;
  j["num_hidden_layers"] = int(layers.size());
  j["vocab_size"] = vocab;
  j["head_dim"] = head_dim;
  j.erase("llmprune_layers");
  if (!layers.empty()) {
    const LayerConfig& l0 = layers.front();
    j["num_attention_heads"] = l0.n_head;
    j["num_key_value_heads"] = l0.n_kv_head;
    j["intermediate_size"] = l0.d_ff;
    if (!uniform()) {
      // HF transformers assumes equal layers; ragged models record each layer's sizes here.
      // llmprune reads sizes from the tensor shapes; the transformers remote code
      // (model/hf_code/modeling_llmprune.py) builds each layer from its entry. 0 heads / 0
      // intermediate_size mean that sub-block is removed (no tensors, its norm included).
      json arr = json::array();
      for (auto& l : layers)
        arr.push_back({{"num_attention_heads", l.n_head}, {"num_key_value_heads", l.n_kv_head}, {"intermediate_size", l.d_ff}});
      j["llmprune_layers"] = arr;
      int max_heads = 0, max_kv = 0, max_ff = 0;
      for (auto& l : layers) {
        max_heads = std::max(max_heads, l.n_head);
        max_kv = std::max(max_kv, l.n_kv_head);
        max_ff = std::max(max_ff, l.d_ff);
      }
      j["num_attention_heads"] = max_heads;
      j["num_key_value_heads"] = max_kv;
      j["intermediate_size"] = max_ff;
      j["llmprune_ragged_note"] =
          "layers differ in size (see llmprune_layers): transformers loads this model with trust_remote_code=True "
          "through the modeling_llmprune.py written beside it (llama, mistral, qwen2)";
    }
  }
  return j;
}

std::vector<float> rope_inv_freq(const ModelConfig& c, int head_dim) {
  int half = head_dim / 2;
  std::vector<float> inv(static_cast<size_t>(half));
  for (int i = 0; i < half; i++)
    inv[size_t(i)] = float(1.0 / std::pow(c.rope_theta, double(2 * i) / double(head_dim)));
  const RopeScaling& rs = c.rope_scaling;
  if (rs.type == "linear") {
    for (auto& f : inv) f = float(f / rs.factor);
  } else if (rs.type == "llama3") {
    // LLaMA-3.1: long wavelengths are slowed by `factor`, short ones kept, a smooth blend between.
    double low_wavelen = rs.original_max_position / rs.low_freq_factor;
    double high_wavelen = rs.original_max_position / rs.high_freq_factor;
    for (auto& f : inv) {
      double wavelen = 2 * M_PI / f;
      if (wavelen < high_wavelen) continue;
      if (wavelen > low_wavelen) {
        f = float(f / rs.factor);
      } else {
        double smooth = (rs.original_max_position / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
        f = float((1 - smooth) * f / rs.factor + smooth * f);
      }
    }
  }
  return inv;
}

}  // namespace llmprune
