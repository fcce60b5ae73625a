#pragma once
// Depth pruning by sub-blocks (BlockPruner, Zhong et al., arXiv 2406.10594): each layer is two
// residual blocks, its attention (with its norm) and its MLP (with its norm); removing one leaves
// the residual stream untouched there. The greedy search removes, one at a time, the sub-block
// whose removal gives the lowest calibration perplexity (MrGGLS/BlockPruner block_search.py), or
// ranks them once by their Block Influence (ShortGPT's BI on sub-blocks, importance/block_influence.h).
#include <cstdint>
#include <vector>

#include "model/model.h"

namespace llmprune {

struct Sublayer {
  int layer = 0;
  bool attention = true;  // false: the MLP
  bool operator==(const Sublayer&) const = default;
};
const char* sublayer_kind_name(bool attention);  // "attn" | "mlp"

// Parameters of a sub-block: its projections, their biases and its norm.
int64_t sublayer_params(const Model& m, const Sublayer& s);

// A copy of m without the given sub-blocks (their tensors dropped; the other tensors still share
// m's storage). A layer left with neither attention nor MLP is the identity and is removed, the
// rest renumbered; kept_layers (optional) receives the original index of each remaining layer.
// Throws UserError when nothing would be left of the model.
Model remove_sublayers(const Model& m, const std::vector<Sublayer>& gone, std::vector<int>* kept_layers = nullptr);

enum class SublayerCriterion { Perplexity, BlockInfluence };

struct SublayerSearchOptions {
  SublayerCriterion criterion = SublayerCriterion::Perplexity;
  int remove = -1;           // sub-blocks to remove; -1: until param_ratio is reached
  double param_ratio = 0;    // fraction of all parameters to remove (the smallest count reaching it)
  int shortlist = 0;         // perplexity: evaluate only the K lowest-BI candidates per step (0: all)
  std::vector<uint8_t> candidate_layers;  // [n_layer]: 1 = its sub-blocks may go (empty: all)
  int chunk_windows = 8;     // windows per layer forward
};

struct SublayerStep {
  Sublayer removed;
  double calib_ppl = 0;  // calibration perplexity of the model after this step
  double bi = 0;         // the sub-block's BI when chosen (BI criterion, or a shortlist)
  int evaluated = 0;     // candidates whose perplexity was computed in this step
  std::vector<std::pair<Sublayer, double>> candidates;  // perplexity: each one scored and its perplexity
};

struct SublayerSearch {
  double base_ppl = 0;  // calibration perplexity before any removal
  std::vector<SublayerStep> steps;
  int64_t params_removed = 0;
  double seconds = 0;
};

// tokens [S, T]: S calibration windows of T tokens. Candidates at step k are the sub-blocks still
// present, attention ones by layer then MLP ones by layer (the reference's order, which breaks
// ties); each is scored from the cached residual stream at its layer's input (one pass of the
// layers before it shared by all candidates of a layer).
SublayerSearch search_sublayers(const Model& m, const std::vector<int32_t>& tokens, int S, int T,
                                const SublayerSearchOptions& opt);

// Calibration perplexity of m with the masked sub-blocks run as removed (Runner::skip_sublayers).
double masked_perplexity(const Model& m, const std::vector<int32_t>& tokens, int S, int T,
                         const std::vector<uint8_t>& skip_attn, const std::vector<uint8_t>& skip_mlp, int chunk_windows = 8);

}  // namespace llmprune
