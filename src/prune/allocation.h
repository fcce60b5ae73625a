#pragma once
// How many units each layer loses (the allocation), on top of plan.h's uniform per-layer ratio:
// FLAP's adaptive structure search (one threshold on standardized scores across layers and
// modules, weighed by each unit's parameter count), SlimGPT's log-increasing per-layer ratios
// (Ling et al., NeurIPS 2024) and user-given per-layer ratios. Each yields KeepTargets for
// select_removals, which then removes the lowest-scored units inside each layer.
#include <string>
#include <vector>

#include "prune/plan.h"

namespace llmprune {

enum class Allocation { Uniform, Global, Adaptive, LogIncreasing };
Allocation parse_allocation(const std::string& s);  // uniform | global | adaptive | log-increasing
std::string allocation_name(Allocation a);

// SlimGPT's schedule r_l = r_min + (r_max - r_min)·ln(1+l)/ln(L) over the L targeted layers
// (SlimGPT hard-codes ln 32, LLaMA-7B's depth, so its last layer gets r_max; ln(L) keeps that
// for any depth), with r_max chosen so that the mean ratio is `ratio`. UserError when r_max >= 1.
std::vector<double> log_increasing_ratios(int n_layers, double ratio, double min_ratio);

// "0.1,0.2,..." -> one ratio per layer, each in [0, 1); UserError naming --layer-ratios.
std::vector<double> parse_layer_ratios(const std::string& s, int n_layers);

// Keep targets with ratio[l] for both heads and MLP channels of layer l (layers outside the
// plan's ranges or at ratio 0 keep everything), rounded as plan_keep_targets rounds.
KeepTargets per_layer_keep_targets(const Model& m, const PlanOptions& o, const std::vector<double>& ratio);

// FLAP's adaptive search over the targeted groups: sorted by standardized score (descending),
// the threshold is the score where the cumulated parameter count of the kept units comes
// closest to (1 - ratio) of all targeted units' parameters; units scoring above it stay. A
// unit's cost is its group's parameter count (MHA head 4·C·D vs MLP channel 3·C: FLAP's 512/3
// at D=128; a GQA KV group (2·rep+2)·C·D). Each (kind, layer) keeps at least one unit; query
// heads under --gqa-unit query keep a multiple of the layer's KV heads (rounded up).
KeepTargets adaptive_keep_targets(const Model& m, const PlanOptions& o, const std::vector<Group>& groups,
                                  const std::vector<double>& standardized, double ratio);

}  // namespace llmprune

namespace llmprune {

// The keep targets of an allocation. layer_ratios (non-empty: user-given, one per layer) replace
// the uniform ratio; log-increasing builds them from o's ratio and min_ratio; global ranks each
// kind across layers (o.global); adaptive needs the standardized scores of `groups`.
struct AllocationOptions {
  Allocation allocation = Allocation::Uniform;
  double ratio = 0;                 // the overall ratio (--ratio)
  double min_ratio = -1;            // log-increasing: first layer's ratio (< 0: 0.3·ratio, SlimGPT's 0.06 at 0.2)
  std::vector<double> layer_ratios; // user-given per-layer ratios (uniform allocation only)
};
KeepTargets allocation_keep_targets(const Model& m, PlanOptions& o, const AllocationOptions& a,
                                    const std::vector<Group>& groups, const std::vector<double>* standardized,
                                    std::vector<double>* per_layer_ratio = nullptr);

}  // namespace llmprune
