#pragma once
// Compensation of what pruning removed, for any criterion: the projections that write the
// residual stream (o_proj, down_proj) are refitted on calibration activations so that the
// pruned layer's output stays close to the unpruned one's on the same input.
//   bias  (FLAP): W' = W[:,K], b += W[:,P]·x̄_P (the removed channels' mean contribution);
//   lstsq (SlimGPT/GPTQ-style): W' = argmin ‖W X - W' X_K‖² = W G[:,K] (G_KK + λI)^-1 with
//         G = X^T X and λ = damping · mean(diag G_KK);
//   bias+lstsq: the same on centred inputs (covariance Σ instead of G), b = W x̄ - W' x̄_K:
//         the bias absorbs the mean, the update the rest.
// Layer by layer in order, each layer fitted on the activations of the model pruned and
// compensated so far (its own input differs from the unpruned model's).
#include <cstdint>
#include <string>
#include <vector>

#include "graph/groups.h"
#include "importance/activation_stats.h"
#include "model/model.h"

namespace llmprune {

enum class Compensation { None, Bias, Lstsq, BiasLstsq };
Compensation parse_compensation(const std::string& s);  // none | bias | lstsq | bias+lstsq
std::string compensation_name(Compensation c);
bool compensation_has_bias(Compensation c);
bool compensation_has_lstsq(Compensation c);

// The refitted projection: weight [out, kept.size()] row-major and the bias to add [out].
struct Refit {
  std::vector<float> weight;
  std::vector<double> bias;
};

// W: [out, in] row-major; kept: ascending input channels that stay; st: mean of the inputs
// (bias modes); gram: X^T X over the same st.count rows, symmetric (lstsq modes; else null).
// Throws RuntimeError when the damped matrix is not positive definite (names `what`).
Refit refit_projection(const float* W, int64_t out, int64_t in, const std::vector<int64_t>& kept, const ChannelStats& st,
                       const GramMatrix* gram, Compensation mode, double damping, const std::string& what);

// Output error of one module over the calibration set: Σ‖y - y'‖² with y the unpruned
// projection's output on the pruned model's input, y' the pruned one's (plain W[:,K], or refitted).
struct ModuleFit {
  bool pruned = false;
  double energy = 0, err_plain = 0, err_refit = 0;  // Σ‖y‖², Σ‖y - x_K W[:,K]^T‖², Σ‖y - y'‖²
};
struct LayerCompensation {
  ModuleFit o, down;
};

struct CompensationOptions {
  Compensation mode = Compensation::Lstsq;
  double damping = 0.01;
  int chunk_windows = 16;
  // Precision of the forward's GEMMs (--compute); the refit itself (Gram matrix, solve) is
  // double / fp32 on fp32 copies of the weights.
  kernels::Compute compute = kernels::Compute::F32;
  // Also build CompensatedModel::model (remove_groups of the whole model, in memory). prune::run
  // leaves it off and streams the result with save_pruned + CompensatedModel::apply: on a 7B model
  // the materialised pruned layers alone are ~10 GB.
  bool materialize = true;
};

// A tensor of the pruned model that the compensation rewrote: a refitted o_proj / down_proj
// (storage dtype, [C, kept]) or a bias (F32, [C]).
struct RefittedTensor {
  int layer = 0;
  Role role = Role::O;
  Tensor tensor;
};

struct CompensatedModel {
  Model model;  // pruned, o_proj/down_proj refitted (storage dtype); empty unless opt.materialize
  std::vector<RefittedTensor> refitted;               // what apply() puts into a pruned model
  bool complete_biases = false;                       // bias modes: zero biases where none was computed
  std::vector<std::vector<float>> o_bias, down_bias;  // [layer][C], empty where none was computed
  std::vector<LayerCompensation> layers;
  double seconds = 0;
  // Puts the refitted tensors into `pruned` (remove_groups' result, or save_pruned's skeleton of
  // the same removal) and, in bias modes, adds zero biases where the family's switch (attention_bias,
  // mlp_bias) needs one in every layer.
  void apply(Model& pruned) const;
};

// The refit of every layer's pruned o_proj / down_proj (heads, KV groups, MLP channels removed)
// over tokens [S, T], layer by layer; with opt.materialize also remove_groups(original, removed)
// with the refit applied. Memory without it: the residual stream [S*T, C], one layer in fp32, one
// Gram matrix, and the refitted tensors.
CompensatedModel compensate_pruned(const Model& original, const std::vector<Group>& removed,
                                   const std::vector<int32_t>& tokens, int S, int T, const CompensationOptions& opt);

}  // namespace llmprune
