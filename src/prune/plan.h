#pragma once
// Which units go (METHOD.md §3 and §8 "How many go"): local (per layer) or global ranking,
// ratios per kind, layer ranges, rounding of kept MLP widths, GQA-even query-head removal.
#include <string>
#include <vector>

#include "graph/groups.h"

namespace llmprune {

// Sublayer: whole attention / MLP sub-blocks (depth pruning, prune/depth.h), not group-based.
enum class Strategy { Block, Channel, Layer, Sublayer };
Strategy parse_strategy(const std::string& s);
std::string strategy_name(Strategy s);

struct LayerRange {
  int begin = 0, end = -1;  // [begin, end); end = -1 means "to the last layer"
  bool contains(int l, int n_layers) const { return l >= begin && l < (end < 0 ? n_layers : end); }
};
// "4:30" (0-based, end-exclusive), "4:" or ":" ; throws UserError naming the flag.
LayerRange parse_layer_range(const std::string& s, const std::string& flag, int n_layers);

struct PlanOptions {
  Strategy strategy = Strategy::Block;
  double attn_ratio = 0, mlp_ratio = 0, channel_ratio = 0, layer_ratio = 0;
  LayerRange attn_layers, mlp_layers, block_layers;
  bool global = false;
  int round_to = 1;
  GqaUnit gqa_unit = GqaUnit::KvGroup;
  int drop_layers = -1;  // layer strategy: explicit count (overrides layer_ratio)
};

// How many units of a kind to keep out of n at `ratio` (⌊n·(1−ratio) + 1e-9⌋, at least 1).
int units_to_keep(int n, double ratio);

// The kinds and layers the plan targets, for discover_groups + filtering.
GroupOptions plan_group_options(const PlanOptions& o);
bool plan_targets(const PlanOptions& o, const Group& g, int n_layers);

// Per-(kind, layer) target counts after the whole plan, computed on the ORIGINAL model so that
// iterative steps converge to the same final sizes. Key: kind*1e6 + layer (layer -1 for global kinds).
struct KeepTargets {
  std::vector<std::pair<long, int>> keep;  // (key, units to keep)
  std::vector<std::pair<long, int>> start; // (key, units at the start)
  int get(long key, const std::vector<std::pair<long, int>>& v) const;
};
KeepTargets plan_keep_targets(const Model& original, const PlanOptions& o);
long keep_target_key(UnitKind k, int layer);  // the key above

// Chooses the groups to remove at step `step` of `steps` (1-based) so that each (kind, layer)
// reaches start - (start - keep) * step / steps units. groups/scores: targeted groups of the
// current model. Returns indices into groups.
std::vector<size_t> select_removals(const Model& current, const std::vector<Group>& groups, const std::vector<double>& scores,
                                    const PlanOptions& o, const KeepTargets& targets, int step, int steps);

}  // namespace llmprune
