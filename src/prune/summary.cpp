#include "prune/summary.h"

#include <fstream>

#include "core/error.h"
#include "core/json_reader.h"

namespace llmprune {

using nlohmann::json;

namespace {

json role_params_json(const RoleParams& p) {
  return {{"embed", p.embed}, {"lm_head", p.lm_head}, {"attention", p.attention}, {"mlp", p.mlp}, {"norms", p.norms}};
}

// One JSON object of `file` and where it sits, read through JsonReader.
struct Fields {
  const json& j;
  const std::string& file;
  std::string where;  // "layers[3]: " etc.
  JsonReader r() const { return {file}; }
  template <class T>
  T get(const char* key) const { return r().get<T>(j, key, where); }
  template <class T>
  T opt(const char* key, T fallback) const { return r().opt<T>(j, key, fallback, where); }
  const json& array(const char* key) const { return r().array(j, key, where); }
};

RoleParams role_params_from(const json& j, const std::string& file, const std::string& where) {
  Fields f{j, file, where};
  return {f.opt<int64_t>("embed", 0), f.opt<int64_t>("lm_head", 0), f.opt<int64_t>("attention", 0), f.opt<int64_t>("mlp", 0),
          f.opt<int64_t>("norms", 0)};
}

}  // namespace

json PruneSummary::to_json() const {
  const PruneSettings& s = settings;
  const bool sublayer = s.strategy == "sublayer";
  json pj;
  pj["llmprune_version"] = llmprune_version;
  pj["source_model"] = source_model;
  // Keys every strategy has, then the sub-block search's or the unit pruning's own
  // (nlohmann::json objects keep keys sorted: the order written here does not matter).
  json& st = pj["settings"];
  st = {{"strategy", s.strategy}, {"importance", s.importance}, {"criterion", s.criterion}, {"ratio", s.ratio},
        {"calib_sampling", s.calib_sampling}, {"seed", s.seed}};
  if (sublayer) {
    st.update({{"drop_sublayers", s.drop_sublayers}, {"shortlist", s.shortlist}, {"layers", s.layers}});
  } else {
    st.update({{"taylor", s.taylor}, {"group_reduction", s.reduction}, {"attn_ratio", s.attn_ratio}, {"mlp_ratio", s.mlp_ratio},
               {"attn_layers", s.attn_layers}, {"mlp_layers", s.mlp_layers}, {"global", s.global},
               {"iterative_steps", s.iterative_steps}, {"round_to", s.round_to}, {"gqa_unit", s.gqa_unit}, {"calib", s.calib},
               {"calib_samples", s.calib_samples}, {"calib_seq_len", s.calib_seq_len}, {"allocation", s.allocation},
               {"compensate", s.compensate}});
  }
  if (!s.flap_metric.empty()) st["flap_metric"] = s.flap_metric;
  if (s.stat_samples > 0) st.update({{"stat_calib", s.stat_calib}, {"stat_samples", s.stat_samples}, {"stat_seq_len", s.stat_seq_len}});
  if (s.damping > 0) st["damping"] = s.damping;
  if (!s.layer_ratios.empty()) st["layer_ratios"] = s.layer_ratios;
  json rm = json::array();
  for (const RemovedUnit& u : removed) {
    json x = {{"layer", u.layer}, {"kind", u.kind}, {"index", u.index}, {"score", u.score}};
    if (settings.iterative_steps > 1 || sublayer) x["step"] = u.step;
    if (u.calib_ppl) x["calib_ppl"] = *u.calib_ppl;
    if (u.candidates_scored) x["candidates_scored"] = *u.candidates_scored;
    rm.push_back(x);
  }
  pj["removed"] = rm;
  json ls = json::array();
  for (const PrunedLayer& l : layers) {
    json row = {{"layer", l.layer}, {"heads_before", l.heads_before}, {"kv_heads_before", l.kv_heads_before}, {"mlp_before", l.mlp_before}};
    if (l.removed) row["removed"] = true;
    row["heads_after"] = l.heads_after;
    row["kv_heads_after"] = l.kv_heads_after;
    row["mlp_after"] = l.mlp_after;
    row["attn_ratio"] = l.attn_ratio();
    row["mlp_ratio"] = l.mlp_ratio();
    ls.push_back(row);
  }
  pj["layers"] = ls;
  pj["hidden_before"] = hidden_before;
  pj["hidden_after"] = hidden_after;
  pj["params_before"] = params_before;
  pj["params_after"] = params_after;
  pj["fraction_removed"] = fraction_removed();
  if (by_role_before) pj["params_by_role_before"] = role_params_json(*by_role_before);
  if (by_role_after) pj["params_by_role_after"] = role_params_json(*by_role_after);
  pj["seconds"] = seconds;
  pj["peak_rss_bytes"] = peak_rss_bytes;
  pj["save_seconds"] = save_seconds;
  pj["memory_estimate"] = memory_estimate.to_json();
  if (max_memory_bytes > 0) pj["max_memory_bytes"] = max_memory_bytes;
  if (!sublayer) {
    pj["calib_loss"] = calib_loss;
    pj["activations"] = activations;
    pj["compute"] = compute;
    pj["load_seconds"] = load_seconds;
    pj["importance_seconds"] = importance_seconds;
  }
  if (statistics_seconds) pj["statistics_seconds"] = *statistics_seconds;
  if (compensation_seconds) {
    json rows = json::array();
    for (const LayerCompensationErrors& c : compensation) {
      json row = {{"layer", c.layer}};
      for (auto [name, m] : {std::pair{"o_proj", &c.o_proj}, std::pair{"down_proj", &c.down_proj}})
        if (m->pruned) row[name] = {{"rel_error_plain", m->plain}, {"rel_error_compensated", m->compensated}};
      rows.push_back(row);
    }
    pj["compensation"] = rows;
    pj["compensation_seconds"] = *compensation_seconds;
  }
  if (calib_ppl_before) pj["calib_ppl_before"] = *calib_ppl_before;
  if (calib_ppl_after) pj["calib_ppl_after"] = *calib_ppl_after;
  if (search_seconds) pj["search_seconds"] = *search_seconds;
  if (gradient_flops > 0) {
    pj["gradient_flops"] = gradient_flops;
    pj["gradient_gflops_per_s"] = importance_seconds > 0 ? gradient_flops / importance_seconds / 1e9 : 0.0;
  }
  return pj;
}

PruneSummary PruneSummary::from_json(const json& pj, const std::string& file) {
  if (!pj.is_object()) throw input_error(file, "expected an object");
  PruneSummary r;
  Fields top{pj, file, ""};
  r.llmprune_version = top.opt<std::string>("llmprune_version", "");
  r.source_model = top.opt<std::string>("source_model", "");
  static const json empty = json::object();
  const json& sj = pj.contains("settings") && pj["settings"].is_object() ? pj["settings"] : empty;
  Fields s{sj, file, "settings: "};
  PruneSettings& st = r.settings;
  st.strategy = s.opt<std::string>("strategy", "block");
  st.importance = s.opt<std::string>("importance", "");
  st.taylor = s.opt<std::string>("taylor", "");
  st.criterion = s.opt<std::string>("criterion", st.importance);
  st.reduction = s.opt<std::string>("group_reduction", "");
  st.gqa_unit = s.opt<std::string>("gqa_unit", "");
  st.attn_layers = s.opt<std::string>("attn_layers", "");
  st.mlp_layers = s.opt<std::string>("mlp_layers", "");
  st.calib = s.opt<std::string>("calib", "");
  st.calib_sampling = s.opt<std::string>("calib_sampling", "random");
  st.ratio = s.opt<double>("ratio", 0.0);
  st.attn_ratio = s.opt<double>("attn_ratio", st.ratio);
  st.mlp_ratio = s.opt<double>("mlp_ratio", st.ratio);
  st.global = s.opt<bool>("global", false);
  st.iterative_steps = s.opt<int>("iterative_steps", 1);
  st.round_to = s.opt<int>("round_to", 1);
  st.calib_samples = s.opt<int>("calib_samples", 0);
  st.calib_seq_len = s.opt<int>("calib_seq_len", 0);
  st.seed = s.opt<uint64_t>("seed", 0);
  st.allocation = s.opt<std::string>("allocation", "uniform");
  st.compensate = s.opt<std::string>("compensate", "none");
  st.flap_metric = s.opt<std::string>("flap_metric", "");
  st.stat_calib = s.opt<std::string>("stat_calib", "");
  st.stat_samples = s.opt<int>("stat_samples", 0);
  st.stat_seq_len = s.opt<int>("stat_seq_len", 0);
  st.damping = s.opt<double>("damping", 0.0);
  st.layer_ratios = s.opt<std::vector<double>>("layer_ratios", {});
  st.drop_sublayers = s.opt<int>("drop_sublayers", -1);
  st.shortlist = s.opt<int>("shortlist", 0);
  st.layers = s.opt<std::string>("layers", "");

  const json& layers = top.array("layers");
  for (size_t i = 0; i < layers.size(); i++) {
    Fields f{layers[i], file, "layers[" + std::to_string(i) + "]: "};
    PrunedLayer l;
    l.layer = f.get<int>("layer");
    l.heads_before = f.get<int>("heads_before");
    l.heads_after = f.get<int>("heads_after");
    l.kv_heads_before = f.opt<int>("kv_heads_before", l.heads_before);
    l.kv_heads_after = f.opt<int>("kv_heads_after", l.heads_after);
    l.mlp_before = f.get<int>("mlp_before");
    l.mlp_after = f.get<int>("mlp_after");
    l.removed = f.opt<bool>("removed", false);
    if (l.heads_after > l.heads_before || l.mlp_after > l.mlp_before || l.heads_after < 0 || l.mlp_after < 0)
      throw input_error(file, f.where + "sizes grow or are negative");
    r.layers.push_back(l);
  }
  r.hidden_before = top.opt<int>("hidden_before", 0);
  r.hidden_after = top.opt<int>("hidden_after", r.hidden_before);
  r.params_before = top.get<int64_t>("params_before");
  r.params_after = top.get<int64_t>("params_after");
  if (pj.contains("params_by_role_before") && pj["params_by_role_before"].is_object()) {
    r.by_role_before = role_params_from(pj["params_by_role_before"], file, "params_by_role_before: ");
    r.by_role_after = role_params_from(pj.contains("params_by_role_after") ? pj["params_by_role_after"] : empty, file,
                                       "params_by_role_after: ");
  }
  r.calib_loss = top.opt<double>("calib_loss", 0.0);
  r.seconds = top.opt<double>("seconds", 0.0);
  r.peak_rss_bytes = top.opt<int64_t>("peak_rss_bytes", 0);
  r.memory_estimate = MemoryEstimate::from_json(pj.contains("memory_estimate") ? pj["memory_estimate"] : json());
  r.max_memory_bytes = top.opt<int64_t>("max_memory_bytes", 0);
  r.activations = top.opt<std::string>("activations", "");
  r.compute = top.opt<std::string>("compute", "fp32");  // files written before --compute: fp32
  r.load_seconds = top.opt<double>("load_seconds", 0.0);
  r.importance_seconds = top.opt<double>("importance_seconds", 0.0);
  r.save_seconds = top.opt<double>("save_seconds", 0.0);
  if (pj.contains("statistics_seconds")) r.statistics_seconds = top.get<double>("statistics_seconds");
  r.gradient_flops = top.opt<double>("gradient_flops", 0.0);
  if (pj.contains("calib_ppl_before")) r.calib_ppl_before = top.get<double>("calib_ppl_before");
  if (pj.contains("calib_ppl_after")) r.calib_ppl_after = top.get<double>("calib_ppl_after");
  if (pj.contains("search_seconds")) r.search_seconds = top.get<double>("search_seconds");
  if (pj.contains("removed")) {
    const json& rm = top.array("removed");
    for (size_t i = 0; i < rm.size(); i++) {
      Fields f{rm[i], file, "removed[" + std::to_string(i) + "]: "};
      RemovedUnit u;
      u.kind = f.get<std::string>("kind");
      u.layer = f.get<int>("layer");
      u.index = f.get<int>("index");
      u.score = rm[i].contains("score") && rm[i]["score"].is_number() ? rm[i]["score"].get<double>() : 0.0;
      u.step = f.opt<int>("step", 1);
      if (rm[i].contains("calib_ppl")) u.calib_ppl = f.get<double>("calib_ppl");
      if (rm[i].contains("candidates_scored")) u.candidates_scored = f.get<int>("candidates_scored");
      r.removed.push_back(u);
    }
  }
  if (pj.contains("compensation")) {
    r.compensation_seconds = top.opt<double>("compensation_seconds", 0.0);
    const json& rows = top.array("compensation");
    for (size_t i = 0; i < rows.size(); i++) {
      Fields f{rows[i], file, "compensation[" + std::to_string(i) + "]: "};
      LayerCompensationErrors c;
      c.layer = f.get<int>("layer");
      for (auto [name, m] : {std::pair{"o_proj", &c.o_proj}, std::pair{"down_proj", &c.down_proj}}) {
        if (!rows[i].contains(name)) continue;
        Fields g{rows[i][name], file, f.where + name + ": "};
        m->pruned = true;
        m->plain = g.get<double>("rel_error_plain");
        m->compensated = g.get<double>("rel_error_compensated");
      }
      r.compensation.push_back(c);
    }
  }
  return r;
}

PruneSummary PruneSummary::read(const std::string& file) {
  std::ifstream in(file);
  if (!in) throw input_error(file, "cannot be read");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw input_error(file, std::string("is not valid JSON (") + e.what() + ")");
  }
  return from_json(j, file);
}

}  // namespace llmprune
