#pragma once
// The whole `prune` pipeline as one library call: load, calibration windows, importance (Taylor
// gradients, magnitude, random, or FLAP's activation statistics), allocation and selection
// (iterative if asked), surgery or compensation, atomic save of the model + pruning.json +
// importance.json. The CLI parses flags into a PruneSpec, calls prune::run and prints the
// returned summary.
#include <cmath>
#include <cstdint>
#include <string>

#include "prune/summary.h"

namespace llmprune {

// Flag values as given (docs: README `prune`); checked by prune::run (UserError on bad values).
struct PruneSpec {
  std::string model, out, strategy = "block", importance = "taylor", taylor = "element1", reduction = "sum";
  // NaN = not given (any number given, -1 included, is checked against [0, 1)).
  double ratio = std::nan(""), attn_ratio = std::nan(""), mlp_ratio = std::nan("");
  std::string attn_layers, mlp_layers, layers;
  bool global = false, force = false;
  int iterative_steps = 1, round_to = 1, drop_layers = -1, drop_sublayers = -1, shortlist = 0;
  std::string gqa_unit = "kv-group";
  std::string calib, calib_sampling = "random", save_importance;
  int calib_samples = 10, calib_seq_len = 64;
  uint64_t seed = 0;
  std::string max_memory, activations = "auto";
  std::string compute = "fp32";  // fp32 | bf16: precision of the gradient passes' GEMMs (kernels/gemm_bf16.h)
  // Activation statistics (FLAP scores, compensation): their own, larger calibration set.
  std::string flap_metric = "wifv", allocation = "uniform", layer_ratios, compensate = "none", stat_calib;
  double min_ratio = std::nan(""), damping = 0.01;
  int stat_samples = 1024, stat_seq_len = 128;
};

namespace prune {
// Runs the pipeline and writes spec.out (atomically; nothing is left on failure).
PruneSummary run(const PruneSpec& spec);
}  // namespace prune

}  // namespace llmprune
