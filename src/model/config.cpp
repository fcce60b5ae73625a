#include "model/config.h"

#include <cmath>
#include <fstream>

#include "arch/arch.h"
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

// The first key of `keys` present (and not null) in j, or nullptr.
const char* present_key(const json& j, const std::vector<const char*>& keys) {
  for (const char* k : keys)
    if (j.contains(k) && !j[k].is_null()) return k;
  return nullptr;
}

int get_int_keys(const json& j, const std::vector<const char*>& keys, const std::string& file, bool required, int fallback = 0) {
  const char* k = present_key(j, keys);
  if (!k) {
    if (required) throw input_error(file, std::string("missing field '") + keys.front() + "'");
    return fallback;
  }
  return get_int(j, k, file, true);
}

bool get_bool(const json& j, const char* key, const std::string& file, bool fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_boolean()) throw input_error(file, std::string("field '") + key + "' must be true or false");
  return j[key].get<bool>();
}

// transformers 5 writes the rotary settings as one object, rope_parameters {rope_type,
// rope_theta, partial_rotary_factor, factor, ...}, where 4.x wrote top-level rope_theta /
// partial_rotary_factor and a rope_scaling object. Read it as the 4.x keys (those win when both
// are given), so every family's keys, refusals and rope_scaling checks apply unchanged.
json with_rope_parameters_flattened(const json& j, const std::string& file) {
  if (!j.is_object() || !j.contains("rope_parameters") || j["rope_parameters"].is_null()) return j;
  const json& rp = j["rope_parameters"];
  if (!rp.is_object()) throw input_error(file, "rope_parameters must be an object or null");
  json out = j;
  for (const char* key : {"rope_theta", "partial_rotary_factor"})
    if (rp.contains(key) && (!out.contains(key) || out[key].is_null())) out[key] = rp[key];
  if (!out.contains("rope_scaling") || out["rope_scaling"].is_null()) {
    json scaling = rp;
    scaling.erase("rope_theta");
    scaling.erase("partial_rotary_factor");
    out["rope_scaling"] = scaling;
  }
  return out;
}

}  // namespace

ModelConfig ModelConfig::from_json(const json& given, const std::string& file) {
  if (!given.is_object()) throw input_error(file, "not a JSON object");
  ModelConfig c;
  c.raw = given;
  const json j = with_rope_parameters_flattened(given, file);
  if (!j.contains("model_type") || !j["model_type"].is_string()) throw input_error(file, "missing field 'model_type'");
  c.model_type = j["model_type"].get<std::string>();
  const ArchDesc& arch = arch_for_config(j, file);
  const ConfigKeys& keys = arch.keys;
  for (const ConfigRefusal& r : arch.refusals) {
    if (!j.contains(r.key) || j[r.key].is_null()) continue;
    const json& v = j[r.key];
    const bool absent = r.accepted ? v.is_number() && v.get<double>() == *r.accepted
                                   : (v.is_boolean() && !v.get<bool>()) || (v.is_number() && v.get<double>() == 0);
    if (!absent) throw input_error(file, std::string("field '") + r.key + "': " + r.meaning);
  }
  for (const ConfigRequirement& r : arch.requirements)
    if (get_bool(j, r.key, file, r.default_value) != r.required)
      throw input_error(file, std::string("field '") + r.key + "' is " + (r.required ? "false" : "true") + ": " + r.meaning +
                                  " is not supported for " + arch.family);
  c.hidden = get_int_keys(j, keys.hidden, file, true);
  c.n_layer = get_int_keys(j, keys.n_layer, file, true);
  c.vocab = get_int_keys(j, keys.vocab, file, true);
  c.n_head = get_int_keys(j, keys.n_head, file, true);
  // No n_kv_head key (ChatGLM-6B v1): one K/V head per query head.
  const bool kv_heads = !keys.n_kv_head.empty() && (!keys.kv_heads_enabled || get_bool(j, keys.kv_heads_enabled, file, false));
  c.n_kv_head = kv_heads ? get_int_keys(j, keys.n_kv_head, file, keys.kv_heads_enabled != nullptr, c.n_head) : c.n_head;
  c.d_ff = get_int_keys(j, keys.d_ff, file, true);
  c.max_pos = get_int_keys(j, keys.max_pos, file, false, keys.max_pos_default);
  if (keys.attention_window && j.contains(keys.attention_window) && !j[keys.attention_window].is_null()) {
    c.attention_window = get_int(j, keys.attention_window, file, true);
    if (c.attention_window <= 0) throw input_error(file, std::string("field '") + keys.attention_window + "' must be positive");
    c.max_pos = std::min(c.max_pos, c.attention_window);
  }
  if (c.hidden <= 0 || c.n_layer <= 0 || c.vocab <= 0 || c.n_head <= 0 || c.n_kv_head <= 0)
    throw input_error(file, std::string(keys.hidden.front()) + ", " + keys.n_layer.front() + ", " + keys.vocab.front() +
                                " and head counts must be positive");
  if (c.n_head % c.n_kv_head != 0)
    throw input_error(file, std::string(keys.n_head.front()) + " must be a multiple of " + keys.n_kv_head.front());
  c.head_dim = get_int_keys(j, keys.head_dim, file, keys.head_dim_required, c.hidden / c.n_head);
  if (c.head_dim <= 0 || c.head_dim % 2 != 0)
    throw input_error(file, std::string(keys.head_dim.front()) + " must be a positive even number");
  if (arch.rotary.table_dims(c.head_dim) % 2 != 0 || arch.rotary.table_dims(c.head_dim) <= 0)
    throw input_error(file, std::string(keys.head_dim.front()) + ": the rotated part of a head must be a positive even number of dims");
  const char* eps_key = present_key(j, keys.eps);
  c.rms_eps = get_num(j, eps_key ? eps_key : keys.eps.front(), file, keys.eps_default);
  if (keys.rope_theta) c.rope_theta = get_num(j, keys.rope_theta, file, keys.rope_base_default);
  if (keys.rope_ratio) c.rope_theta = keys.rope_base_default * get_num(j, keys.rope_ratio, file, 1.0);
  if (!(c.rope_theta > 0)) throw input_error(file, "the RoPE base must be positive");
  const bool tie_key = j.contains("tie_word_embeddings") && !j["tie_word_embeddings"].is_null();
  c.tied = tie_key ? j["tie_word_embeddings"].is_boolean() && j["tie_word_embeddings"].get<bool>() : keys.tied_default;
  if (arch.positions == PositionKind::GlmBlocks) {
    c.prefix_end_id = get_int(j, keys.prefix_end_key, file, true);
    for (const char* k : keys.mask_keys) c.mask_ids.push_back(get_int(j, k, file, true));
  }
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
    if (!(l == layers.front()) || !l.has_attention() || !l.has_mlp()) return false;
  return true;
}

bool ModelConfig::states_removed(int layer, bool attention) const {
  auto it = raw.find("llmprune_layers");
  if (it == raw.end() || !it->is_array() || layer < 0 || size_t(layer) >= it->size()) return false;
  const json& entry = (*it)[size_t(layer)];
  if (!entry.is_object()) return false;
  const ConfigKeys& keys = arch_for_config(model_type, raw, "config.json").keys;
  const char* key = attention ? keys.n_head.front() : keys.d_ff.front();
  return entry.contains(key) && entry[key].is_number_integer() && entry[key].get<int64_t>() == 0;
}

json ModelConfig::to_json() const {
  json j = raw;
  const ArchDesc& arch = arch_for_config(model_type, raw, "config.json");
  const ConfigKeys& keys = arch.keys;
  // Writes v under the family's first key for it and every other spelling already present.
  auto put = [&](const std::vector<const char*>& names, const json& v) {
    for (size_t i = 0; i < names.size(); i++)
      if (i == 0 || j.contains(names[i])) j[names[i]] = v;
  };
  put(keys.hidden, hidden);
  put(keys.n_layer, int(layers.size()));
  put(keys.vocab, vocab);
  put(keys.head_dim, head_dim);
  j.erase("llmprune_layers");
  j.erase("llmprune_ragged_note");
  if (!layers.empty()) {
    const LayerConfig& l0 = layers.front();
    int n_head = l0.n_head, n_kv = l0.n_kv_head, d_ff = l0.d_ff;
    if (!uniform()) {
      // HF transformers assumes equal layers; ragged models record each layer's sizes here.
      // llmprune reads sizes from the tensor shapes; the transformers remote code
      // (model/hf_code/modeling_llmprune.py) builds each layer from its entry. 0 heads / 0
      // intermediate_size mean that sub-block is removed (no tensors, its norm included).
      json arr = json::array();
      for (auto& l : layers)
        if (keys.n_kv_head.empty()) arr.push_back({{keys.n_head.front(), l.n_head}, {keys.d_ff.front(), l.d_ff}});
        else arr.push_back({{keys.n_head.front(), l.n_head}, {keys.n_kv_head.front(), l.n_kv_head}, {keys.d_ff.front(), l.d_ff}});
      j["llmprune_layers"] = arr;
      for (auto& l : layers) {
        n_head = std::max(n_head, l.n_head);
        n_kv = std::max(n_kv, l.n_kv_head);
        d_ff = std::max(d_ff, l.d_ff);
      }
      j["llmprune_ragged_note"] =
          arch.hf_remote_classes.empty()
              ? "layers differ in size (see llmprune_layers): llmprune loads this model from its tensor shapes; the "
                "family's own transformers code assumes equal layers"
              : "layers differ in size (see llmprune_layers): transformers loads this model with trust_remote_code=True "
                "through the modeling_llmprune.py written beside it";
    }
    put(keys.n_head, n_head);
    put(keys.n_kv_head, n_kv);
    put(keys.d_ff, d_ff);
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
