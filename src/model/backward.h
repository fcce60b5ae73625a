#pragma once
// Gradients of the calibration loss, layer by layer (METHOD.md §8 "Gradients").
// Memory is the weights plus one layer's worth of work: the forward keeps only each layer's
// input [N, C]; the backward recomputes the layer's activations from it, produces that layer's
// weight gradients, hands them to a sink, and frees them before moving down.
//
// Loss: mean next-token cross-entropy over all B*(T-1) predictions. With per_sample, the pass
// also yields the Fisher diagonal a = (1/B) sum_j g_j^2, g_j the gradient of sample j's own
// mean loss, from the same pass: activation gradients are batched; only the weight-gradient
// GEMMs are split per sample (same FLOPs as one batched GEMM).
#include <array>
#include <vector>

#include "model/forward.h"

namespace llmprune {

struct GradOptions {
  bool per_sample = false;     // also compute the Fisher diagonal
  bool global_grads = true;    // embed / final_norm / lm_head gradients (needed for hidden channels)
  bool weight_grads = true;    // base-weight gradients (off when only a LinearHook trains, e.g. LoRA)
  LinearHook* hook = nullptr;  // extra branches (LoRA) in the forward and backward
  // Optional targets [B*T]: position t predicts targets[t]; -1 = not scored. Default: the next
  // token inside each sequence. The loss is the mean over scored positions.
  const int32_t* targets = nullptr;
  // Per layer, whether its weight gradients are wanted (empty = every layer). A layer that
  // wants none only passes the activation gradient down and is not handed to the sink; without
  // global_grads and a hook the backward stops below the lowest layer that wants them.
  std::vector<uint8_t> layer_grads;
  // Keep every layer's activations from the forward instead of recomputing them in the backward:
  // a quarter fewer FLOPs for about (3C + 2H*D + 2KVH*D + 3F) * B*T * 4 + B*H*T*T*4 bytes per
  // layer (prune/budget.h). Same results.
  bool keep_activations = false;
  // Precision of the GEMMs (forward, input and weight gradients); the loss, softmax, norms and
  // the gradient statistics stay fp32.
  kernels::Compute compute = kernels::Compute::F32;
};

class GradSink {
 public:
  virtual ~GradSink() = default;
  // Called once per layer (that GradOptions::layer_grads wants), from the last layer down; w
  // holds the layer's fp32 weights.
  virtual void on_layer(int layer, const LayerF32& w, std::array<GradStats, kNumLayerRoles>& grads) = 0;
  // Whether on_layer reads the fp32 weights (with bf16 compute they are converted only then).
  virtual bool needs_f32_weights() const { return true; }
  // Called last, when global_grads: indexed by GlobalRole (LmHead empty when tied: the
  // embedding's statistics then include both uses). weights are fp32.
  virtual void on_global(std::array<const float*, kNumGlobalRoles> weights, std::array<GradStats, kNumGlobalRoles>& grads) {}
};

struct BackwardResult {
  double loss = 0;                   // mean NLL over all scored predictions
  std::vector<double> sample_loss;   // each sample's mean NLL (0 when it scores nothing)
  int64_t scored = 0;                // number of scored predictions
  bool finite = true;
};

// tokens [B, T]. Runs forward + backward, streaming gradients to sink.
BackwardResult compute_gradients(const Model& m, const int32_t* tokens, int B, int T, const GradOptions& opt, GradSink& sink);

}  // namespace llmprune
