#pragma once
// Activation statistics of the projections that write the residual stream (o_proj, down_proj):
// one forward pass, no gradients, streamed layer by layer over the calibration windows (FLAP,
// arXiv 2312.11983; the least-squares compensation in prune/compensate.h). Everything in double.
#include <cstdint>
#include <vector>

#include "kernels/gemm_bf16.h"
#include "model/model.h"

namespace llmprune {

// Per input channel: mean, variance and mean square, merged chunk by chunk (Welford/Chan in
// double: each chunk's own mean and squared deviations, then the parallel update), so a large
// calibration set loses no precision to a running sum of squares.
struct ChannelStats {
  int64_t count = 0;                 // rows (tokens) seen
  std::vector<double> mean, m2, sq;  // [cols]: mean, sum of squared deviations, sum of squares
  // x: [rows, cols] row-major.
  void add(const float* x, int64_t rows, int64_t cols);
  double variance(int64_t j) const { return count > 0 ? m2[size_t(j)] / double(count) : 0.0; }  // population
  double mean_square(int64_t j) const { return count > 0 ? sq[size_t(j)] / double(count) : 0.0; }
};

// X^T X of a projection's input, accumulated in double one block of rows at a time (a dsyrk of
// the block converted to double): [cols, cols], symmetric (both triangles filled by symmetrize()).
struct GramMatrix {
  int64_t n = 0, count = 0;
  std::vector<double> g;
  void add(const float* x, int64_t rows, int64_t cols);
  void symmetrize();  // copies the upper triangle dsyrk filled into the lower one
};

// The statistics of one layer's o_proj input ([N, H*D], attention output per query-head
// channel) and down_proj input ([N, F], silu(gate)*up per MLP channel).
struct LayerInputStats {
  ChannelStats o_in, down_in;
};

struct ActivationStatsOptions {
  int chunk_windows = 16;  // windows per layer forward: bounds the activations held at once
  // Precision of the forward's GEMMs (--compute); the statistics themselves accumulate in double.
  kernels::Compute compute = kernels::Compute::F32;
};

// One forward pass over tokens [S, T] (S windows of T tokens), layer by layer: the residual
// stream of every window is kept ([S*T, C] floats), each layer runs over chunk_windows windows at
// a time. Returns the statistics of every layer of m.
std::vector<LayerInputStats> collect_activation_stats(const Model& m, const std::vector<int32_t>& tokens, int S, int T,
                                                      const ActivationStatsOptions& opt = {});

}  // namespace llmprune
