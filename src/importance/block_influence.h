#pragma once
// Block Influence (ShortGPT, Men et al., arXiv 2403.03853): how much a block changes the residual
// stream, BI = 1 - E[cos(x_in, x_out)] over every calibration token, x_in / x_out the hidden
// states before and after the block. A block that barely turns the stream (low BI) is the first
// to remove. Computed for whole layers and for their attention / MLP sub-blocks from one forward
// pass, layer by layer like the activation statistics (importance/activation_stats.h).
#include <cstdint>
#include <vector>

#include "model/model.h"

namespace llmprune {

struct BlockInfluence {
  // [n_layer] each; a sub-block the model lacks (or the mask skips) has BI 0 (it is the identity).
  std::vector<double> layer, attn, mlp;
  double seconds = 0;
};

struct BlockInfluenceOptions {
  int chunk_windows = 16;                   // windows per layer forward
  std::vector<uint8_t> skip_attn, skip_mlp;  // sub-blocks to run as removed (Runner::skip_sublayers)
};

// 1 - cos(a, b) averaged over rows: a, b [N, C]; accumulated in double. A zero row counts as cos 1.
void add_cosines(const float* a, const float* b, int64_t N, int64_t C, double& sum);

// tokens [S, T]: S windows of T tokens.
BlockInfluence block_influence(const Model& m, const std::vector<int32_t>& tokens, int S, int T,
                               const BlockInfluenceOptions& opt = {});

}  // namespace llmprune
