#pragma once
// Resource figures of a prune run, known before any work is done: the peak-memory estimate that
// `prune --max-memory` checks (and the report prints), and the FLOP count of the gradient pass
// (for the achieved GFLOP/s). docs/scale.md derives every term.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "importance/importance.h"
#include "model/model.h"

namespace llmprune {

struct MemoryTerm {
  std::string what;
  double bytes = 0;
};

struct MemoryEstimate {
  std::vector<MemoryTerm> terms;  // what adds up to `total` (alternatives already resolved)
  double total = 0;
  // "12.3 GB (weights fp32 of one layer 810 MB, ...)"
  std::string describe() const;
  nlohmann::json to_json() const;
  // The inverse of to_json (terms in the JSON's key order); anything else is an empty estimate.
  static MemoryEstimate from_json(const nlohmann::json& j);
};

struct PruneShape {
  Criterion criterion = Criterion::Element1;
  int B = 10, T = 64;          // calibration windows x tokens
  bool global_grads = false;   // some group has members outside the layers (hidden channels)
  size_t n_groups = 0;         // prunable units scored (bookkeeping per unit)
  std::vector<uint8_t> layer_grads;  // layers whose weight gradients are needed (empty = all)
  bool keep_activations = false;     // GradOptions::keep_activations
  kernels::Compute compute = kernels::Compute::F32;  // GradOptions::compute
};

// Peak resident memory of `llmprune prune` on m (mapped weights are counted only as far as they
// are touched at once: m.release_pages drops each layer after use). The larger of the gradient
// pass and the streaming save.
MemoryEstimate estimate_prune_memory(const Model& m, const PruneShape& s);

// Peak resident memory of the activation-statistics passes (FLAP / Block Influence scores,
// --compensate; importance/activation_stats.h, prune/compensate.h) over S windows of T tokens,
// chunk_windows at a time: the residual stream of every window, one layer in fp32 and its
// mapped pages, one chunk's activations; with compensation also the refit of the widest module
// (its Gram matrix and the solve's double buffers, as if every input channel stayed) and the
// refitted o_proj / down_proj of every layer (upper bound: their unpruned size).
MemoryEstimate estimate_statistics_memory(const Model& m, int S, int T, int chunk_windows, bool compensate);

// Peak resident memory of the sub-block search (`--strategy sublayer`, prune/depth.h) over S
// windows of T tokens: the statistics pass's terms plus the search's three residual streams
// (the unpruned stream, the current model's, a candidate's) and the masked-perplexity pass's
// own, and one chunk's normed input and logits (with the lm_head's converted row block).
MemoryEstimate estimate_sublayer_search_memory(const Model& m, int S, int T, int chunk_windows);

// Multiply-add FLOPs (2 per MAC) of compute_gradients on B x T tokens: the forward, the head
// backward, and per layer the recomputed forward, the input-gradient and the weight-gradient
// GEMMs and the attention backward (full T x T products, as computed). layer_grads as in
// GradOptions: layers that want no weight gradients skip those GEMMs, and (without
// global_grads) layers below the lowest wanted one are not back-propagated at all.
double gradient_flops(const Model& m, int B, int T, bool global_grads, const std::vector<uint8_t>& layer_grads = {},
                      bool keep_activations = false);

// The lowest layer the backward reaches (GradOptions::layer_grads; 0 with global gradients).
int lowest_backward_layer(const Model& m, bool global_grads, const std::vector<uint8_t>& layer_grads);

// Physical memory of this machine in bytes.
double physical_memory_bytes();

// "16G", "16GB", "16GiB", "1.5g", "512M", "4096" (bytes); K/M/G/T are powers of 1024.
// UserError naming `flag` otherwise.
double parse_byte_size(const std::string& s, const std::string& flag);

}  // namespace llmprune
