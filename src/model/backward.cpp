#include "model/backward.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "kernels/ops.h"

namespace llmprune {

namespace k = kernels;

namespace {

// Targets of the calibration loss [B*T]: the caller's (position t predicts targets[t]; < 0 = not
// scored) or the next token inside each sequence.
std::vector<int32_t> loss_targets(const int32_t* tokens, const int32_t* given, int B, int T, int V) {
  const int N = B * T;
  std::vector<int32_t> targets(size_t(N), -1);
  if (given) {
    for (int n = 0; n < N; n++) {
      const int32_t tg = given[n];
      if (tg >= V) throw RuntimeError("target id " + std::to_string(tg) + " at position " + std::to_string(n) + " is outside the vocabulary");
      targets[size_t(n)] = tg < 0 ? -1 : tg;
    }
    return targets;
  }
  for (int b = 0; b < B; b++)
    for (int t = 0; t + 1 < T; t++) targets[size_t(b) * T + t] = tokens[size_t(b) * T + t + 1];
  return targets;
}

// The loss and how its gradient is scaled: the mean NLL over all scored targets, each sample's
// mean, dlogits_scale = 1/count (the gradient of the overall mean), and sample_scale[b] =
// count / count_b, which turns sample b's share of the overall gradient into the gradient of its
// own mean loss (= B when every sample scores T-1 targets).
struct LossTerms {
  BackwardResult result;
  float dlogits_scale = 0;
  std::vector<float> sample_scale;
};

LossTerms mean_nll(const float* logits, const std::vector<int32_t>& targets, int B, int T, int V) {
  const int N = B * T;
  std::vector<float> losses(static_cast<size_t>(N));
  k::cross_entropy_forward(losses.data(), logits, targets.data(), N, V);
  LossTerms out;
  BackwardResult& res = out.result;
  res.sample_loss.assign(size_t(B), 0.0);
  std::vector<int64_t> sample_count(static_cast<size_t>(B), 0);
  double total = 0;
  int64_t count = 0;
  for (int b = 0; b < B; b++) {
    double s = 0;
    for (int t = 0; t < T; t++)
      if (targets[size_t(b) * T + t] >= 0) {
        s += losses[size_t(b) * T + t];
        sample_count[size_t(b)]++;
      }
    res.sample_loss[size_t(b)] = sample_count[size_t(b)] ? s / double(sample_count[size_t(b)]) : 0.0;
    total += s;
    count += sample_count[size_t(b)];
  }
  res.loss = count ? total / double(count) : 0.0;
  res.scored = count;
  res.finite = std::isfinite(res.loss);
  out.dlogits_scale = count ? 1.0f / float(count) : 0.0f;
  out.sample_scale.assign(size_t(B), 0.0f);
  for (int b = 0; b < B; b++)
    if (sample_count[size_t(b)]) out.sample_scale[size_t(b)] = float(double(count) / double(sample_count[size_t(b)]));
  return out;
}

}  // namespace

// Orchestration: forward keeping each layer's input, the head and the loss, then the blocks top
// to bottom (Runner::block_backward), handing each layer's statistics to the sink, and last the
// global tensors. The arithmetic is in the block-level pairs (model/block.cpp) and kernels/.
BackwardResult compute_gradients(const Model& m, const int32_t* tokens, int B, int T, const GradOptions& opt, GradSink& sink) {
  const ModelConfig& cfg = m.cfg;
  const int C = cfg.hidden, V = cfg.vocab, N = B * T, L = cfg.n_layer;
  Runner runner(m, T);
  runner.set_hook(opt.hook);
  runner.set_compute(opt.compute);

  auto wants = [&](int l) { return opt.layer_grads.empty() || (size_t(l) < opt.layer_grads.size() && opt.layer_grads[size_t(l)]); };
  int lowest = 0;  // nothing below this layer needs the activation gradient
  if (!opt.global_grads && !opt.hook) {
    lowest = L;
    for (int l = 0; l < L; l++)
      if (wants(l)) {
        lowest = l;
        break;
      }
  }
  const std::vector<int32_t> targets = loss_targets(tokens, opt.targets, B, T, V);

  // ---- forward, keeping each layer's input (and with keep_activations its activations) ----
  std::vector<std::vector<float>> layer_in(static_cast<size_t>(L));
  std::vector<LayerActs> kept(opt.keep_activations ? size_t(L) : 0);
  std::vector<float> x(size_t(N) * C);
  runner.embed(tokens, N, x.data());
  // GLM v1: positions, block positions and the prefix mask from sop / [gMASK] (forward.h).
  if (m.arch->positions != PositionKind::Causal) runner.set_layout(token_layout(m, tokens, B, T, nullptr), B, T);
  LayerF32 w;
  for (int l = 0; l < L; l++) {
    const bool keep = opt.keep_activations && l >= lowest;
    if (l >= lowest) layer_in[size_t(l)] = x;
    w.load(m, l, matrix_load_for(opt.compute, false));
    runner.block_forward(l, w, x.data(), B, T, nullptr, keep ? &kept[size_t(l)] : nullptr);
  }
  std::vector<float> xn(size_t(N) * C), mean(static_cast<size_t>(N)), rstd(static_cast<size_t>(N)), logits(size_t(N) * V);
  runner.head_forward(x.data(), N, xn.data(), mean.data(), rstd.data(), logits.data());

  // ---- loss ----
  LossTerms loss = mean_nll(logits.data(), targets, B, T, V);
  if (!loss.result.finite) return loss.result;
  std::vector<float>& dlogits = logits;  // overwritten in place: logits are not needed any more
  k::cross_entropy_backward(dlogits.data(), logits.data(), targets.data(), N, V, loss.dlogits_scale);
  const GradStatsPolicy stats(B, T, opt.per_sample, loss.sample_scale, opt.compute);

  // ---- head ----
  HeadF32 head;
  head.load(m, opt.compute, opt.global_grads);
  GlobalGrads gstats;
  std::vector<float> dx(size_t(N) * C, 0.0f), work;
  // Tied and per sample: the embedding's statistics need each sample's whole gradient (lm_head
  // and embedding parts together), computed below.
  runner.head_backward(head, x.data(), xn.data(), mean.data(), rstd.data(), dlogits.data(), dx.data(), N,
                       opt.global_grads ? &stats : nullptr, !(cfg.tied && opt.per_sample), gstats, work);
  std::vector<float>().swap(logits);
  std::vector<float>().swap(work);

  // ---- blocks, top to bottom ----
  LayerActs recomputed;
  BlockGradBuffers buf;
  // Gradient buffers live across layers: a fresh 7B-layer set (~0.8 GB) per layer would be
  // page-faulted and zeroed by the kernel every time (measured: ~10% of a 7B importance pass).
  // clear() keeps the capacity; a role left empty in a layer was not computed there.
  LayerGrads gs;
  std::vector<float> xcur;
  for (int l = L - 1; l >= lowest; l--) {
    w.load(m, l, matrix_load_for(opt.compute, wants(l) && sink.needs_f32_weights()));
    LayerActs& acts = opt.keep_activations ? kept[size_t(l)] : recomputed;
    if (!opt.keep_activations) {
      xcur = layer_in[size_t(l)];
      runner.block_forward(l, w, xcur.data(), B, T, nullptr, &acts);  // recompute activations
    }
    for (auto& st : gs) st.g.clear(), st.a.clear();
    const bool weight_grads = opt.weight_grads && wants(l);
    runner.block_backward(l, w, layer_in[size_t(l)].data(), acts, dx.data(), B, T, weight_grads ? &stats : nullptr, gs, buf);
    for (const auto& st : gs)
      if (!k::all_finite(st.g.data(), st.g.size())) throw RuntimeError("non-finite gradient in layer " + std::to_string(l));
    if (wants(l)) sink.on_layer(l, w, gs);
    std::vector<float>().swap(layer_in[size_t(l)]);
    if (opt.keep_activations) kept[size_t(l)] = LayerActs{};
  }
  gs = {};  // release before the embedding gradient
  buf = {};

  // ---- embedding ----
  if (opt.global_grads) {
    std::vector<float> embed_scratch;
    const float* embed_w = as_f32(m.embed(), embed_scratch);
    GradStats& es = gstats[size_t(GlobalRole::Embed)];
    if (!cfg.tied) {
      stats.rows(es, size_t(V) * C, [&](float* dst, int r0, int rows) {
        k::embedding_backward(dst, dx.data() + size_t(r0) * C, tokens + r0, rows, C);
      });
    } else if (!opt.per_sample) {
      k::embedding_backward(es.g.data(), dx.data(), tokens, N, C);  // onto the lm_head part
    } else {
      // Tied: g_j = lm_head part + embedding part of sample j; the lm_head part is recomputed
      // per sample (its dlogits were freed) so the Fisher term sees each sample's whole gradient.
      es.g.assign(size_t(V) * C, 0.0f);
      es.a.assign(size_t(V) * C, 0.0f);
      std::vector<float> grad_j(size_t(V) * C), lg(size_t(T) * V), dl(size_t(T) * V);
      for (int b = 0; b < B; b++) {
        std::fill(grad_j.begin(), grad_j.end(), 0.0f);
        linear_any_dtype(lg.data(), V, xn.data() + size_t(b) * T * C, m.lm_head(), T, 0, opt.compute);
        k::cross_entropy_backward(dl.data(), lg.data(), targets.data() + size_t(b) * T, T, V, loss.dlogits_scale);
        k::linear_backward(nullptr, grad_j.data(), nullptr, dl.data(), xn.data() + size_t(b) * T * C, head.lm_head, T, C, V);
        k::embedding_backward(grad_j.data(), dx.data() + size_t(b) * T * C, tokens + size_t(b) * T, T, C);
        stats.add_sample(es, b, grad_j.data());
      }
    }
    std::array<const float*, kNumGlobalRoles> gw{embed_w, head.norm, cfg.tied ? nullptr : head.lm_head, head.norm_bias};
    sink.on_global(gw, gstats);
  }
  return loss.result;
}

}  // namespace llmprune
