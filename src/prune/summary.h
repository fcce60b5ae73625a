#pragma once
// What one `prune` run did, as one typed value: prune::run returns it, pruning.json is its
// to_json(), and `llmprune report` reads pruning.json back through from_json() — so the writer
// and the reader of pruning.json cannot drift apart.
#include <cstdint>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "prune/budget.h"

namespace llmprune {

// The run's settings as given (strings as on the command line, so pruning.json stays readable).
struct PruneSettings {
  std::string strategy = "block", importance, taylor, criterion, reduction, attn_layers, mlp_layers, gqa_unit;
  std::string calib, calib_sampling = "random", allocation = "uniform", compensate = "none";
  double ratio = 0, attn_ratio = 0, mlp_ratio = 0;
  bool global = false;
  int iterative_steps = 1, round_to = 1, calib_samples = 0, calib_seq_len = 0;
  uint64_t seed = 0;
  std::string flap_metric;                  // --importance flap only
  std::string stat_calib;                   // activation statistics (flap, --compensate) only:
  int stat_samples = 0, stat_seq_len = 0;   //   0 = no statistics pass
  double damping = 0;                       // lstsq compensation only (0 = none)
  std::vector<double> layer_ratios;         // log-increasing / --layer-ratios: the planned ratio of each layer
  // --strategy sublayer (depth pruning of attention / MLP sub-blocks):
  int drop_sublayers = -1, shortlist = 0;
  std::string layers;                       // candidate layers A:B
};

// One layer of the input model, before and after (all zero after when the layer was removed).
struct PrunedLayer {
  int layer = 0;
  int heads_before = 0, heads_after = 0, kv_heads_before = 0, kv_heads_after = 0, mlp_before = 0, mlp_after = 0;
  bool removed = false;
  double attn_ratio() const { return heads_before ? 1.0 - double(heads_after) / heads_before : 0.0; }
  double mlp_ratio() const { return mlp_before ? 1.0 - double(mlp_after) / mlp_before : 0.0; }
};

// A removed unit, numbered in the input model (layer, and a layer unit's index).
struct RemovedUnit {
  int layer = 0;
  std::string kind;  // unit_kind_name: head, kv_group, mlp, channel, layer
  int index = 0;
  double score = 0;
  int step = 1;      // iterative pruning's step (1 otherwise); the sublayer search's step
  std::optional<double> calib_ppl;       // sublayer: calibration perplexity after this removal
  std::optional<int> candidates_scored;  // sublayer + ppl: candidates evaluated at this step
};

// Relative output error Σ‖y − y'‖² / Σ‖y‖² of one refitted projection over the calibration set.
struct ModuleError {
  bool pruned = false;
  double plain = 0, compensated = 0;  // W[:,K] as is; after the refit
};
struct LayerCompensationErrors {
  int layer = 0;
  ModuleError o_proj, down_proj;
};

struct RoleParams {
  int64_t embed = 0, lm_head = 0, attention = 0, mlp = 0, norms = 0;
};

struct PruneSummary {
  std::string llmprune_version, source_model;
  PruneSettings settings;
  std::vector<RemovedUnit> removed;
  std::vector<PrunedLayer> layers;
  int hidden_before = 0, hidden_after = 0;
  int64_t params_before = 0, params_after = 0;
  std::optional<RoleParams> by_role_before, by_role_after;
  double calib_loss = 0, seconds = 0;
  int64_t peak_rss_bytes = 0;
  MemoryEstimate memory_estimate;
  int64_t max_memory_bytes = 0;     // 0: no --max-memory
  std::string activations;          // kept | recomputed
  std::string compute = "fp32";     // fp32 | bf16 (--compute)
  double load_seconds = 0, importance_seconds = 0, save_seconds = 0;
  std::optional<double> statistics_seconds;                 // flap
  std::vector<LayerCompensationErrors> compensation;        // --compensate: one row per layer of the result
  std::optional<double> compensation_seconds;
  double gradient_flops = 0;
  std::optional<double> calib_ppl_before, calib_ppl_after, search_seconds;  // sublayer search

  double fraction_removed() const { return params_before ? 1.0 - double(params_after) / double(params_before) : 0.0; }
  int removed_units() const { return int(removed.size()); }
  nlohmann::json to_json() const;
  // Reads what to_json() writes (and the older files without the newer fields); a missing or
  // mistyped field is a UserError naming `file` and the field.
  static PruneSummary from_json(const nlohmann::json& j, const std::string& file);
  static PruneSummary read(const std::string& file);
};

}  // namespace llmprune
