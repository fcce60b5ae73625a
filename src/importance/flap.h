#pragma once
// FLAP's fluctuation metrics (An et al., "Fluctuation-based Adaptive Structured Pruning for
// Large Language Models", AAAI 2024) on the activation statistics of o_proj / down_proj inputs.
// A unit's channels are the input columns of o_proj (its query heads' head_dim columns each,
// so a KV group aggregates every query head it serves) or of down_proj (one MLP channel).
#include <string>
#include <vector>

#include "graph/groups.h"
#include "importance/activation_stats.h"

namespace llmprune {

// WIFV: Var(X_j)·‖W[:,j]‖² (FLAP's default); IFV: Var(X_j); WIFN: mean_i |W_ij|·sqrt(E[X_j²]).
enum class FlapMetric { Wifv, Ifv, Wifn };
FlapMetric parse_flap_metric(const std::string& s);  // wifv | ifv | wifn; UserError otherwise
std::string flap_metric_name(FlapMetric m);

// Per input channel metric of W [out, in] (row-major) whose input has statistics `st`.
std::vector<double> flap_channel_metric(FlapMetric metric, const ChannelStats& st, const float* W, int64_t out,
                                        int64_t in);

struct FlapScores {
  // Per group, in the groups' order. raw: attention units sum their channels' metric², an MLP
  // channel is its metric (FLAP's uniform ranking). standardized: each channel's value (metric²
  // for attention, metric for MLP) standardized over its layer's o_proj (down_proj) channels,
  // (v - mean) / std with the n-1 std, then averaged over the unit's channels (FLAP's adaptive
  // structure search compares these across layers and modules).
  std::vector<double> raw, standardized;
};

// Scores of every Head / KvGroup / Mlp group of m (other kinds: UserError).
FlapScores flap_scores(const Model& m, const std::vector<Group>& groups, const std::vector<LayerInputStats>& stats,
                       FlapMetric metric);

}  // namespace llmprune
