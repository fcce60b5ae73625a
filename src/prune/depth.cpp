#include "prune/depth.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/progress.h"
#include "importance/block_influence.h"
#include "kernels/ops.h"
#include "model/forward.h"

namespace llmprune {

const char* sublayer_kind_name(bool attention) { return attention ? "attn" : "mlp"; }

int64_t sublayer_params(const Model& m, const Sublayer& s) {
  int64_t n = 0;
  for (int r = 0; r < kNumLayerRoles; r++)
    if (const Tensor& t = m.layers.at(size_t(s.layer)).w[size_t(r)]; !t.empty() && is_attention_role(Role(r)) == s.attention)
      n += t.numel();
  return n;
}

Model remove_sublayers(const Model& m, const std::vector<Sublayer>& gone, std::vector<int>* kept_layers) {
  Model out = m;
  for (const Sublayer& s : gone) {
    if (s.layer < 0 || s.layer >= int(out.layers.size())) throw RuntimeError("internal: sub-block of layer " + std::to_string(s.layer));
    for (int r = 0; r < kNumLayerRoles; r++)
      if (is_attention_role(Role(r)) == s.attention) out.layers[size_t(s.layer)].w[size_t(r)] = Tensor{};
  }
  std::vector<LayerWeights> layers;
  std::vector<int> kept;
  for (size_t l = 0; l < out.layers.size(); l++) {
    bool any = false;
    for (const Tensor& t : out.layers[l].w) any |= !t.empty();
    if (!any) continue;  // neither attention nor MLP left: the identity
    layers.push_back(out.layers[l]);
    kept.push_back(int(l));
  }
  if (layers.empty()) throw UserError("the plan would remove every sub-block of the model");
  out.layers = std::move(layers);
  out.cfg.n_layer = int(out.layers.size());
  // Sizes from the remaining tensors; config.json's stale per-layer list must not decide what
  // the in-memory model lacks (to_json writes a fresh one).
  out.cfg.raw.erase("llmprune_layers");
  out.validate_and_derive_sizes("depth-pruned model");
  if (kept_layers) *kept_layers = kept;
  return out;
}

namespace {

struct Nll {
  double sum = 0;
  int64_t count = 0;
  double ppl() const { return count ? std::exp(sum / double(count)) : 0.0; }
};

// Layers [from, L) of the runner's model over x [S*T, C] in place, chunk windows at a time.
void run_layers(Runner& r, LayerF32& w, float* x, int from, int S, int T, int chunk) {
  const Model& m = r.model();
  const int C = m.cfg.hidden;
  for (int l = from; l < int(m.layers.size()); l++) {
    w.load(m, l);
    for (int s0 = 0; s0 < S; s0 += chunk)
      r.block_forward(l, w, x + size_t(s0) * T * C, std::min(chunk, S - s0), T, nullptr, nullptr);
  }
}

// Final norm, lm_head and the NLL of each window's next tokens (position t predicts t+1).
Nll head_nll(Runner& r, const float* x, const int32_t* tokens, int S, int T, int chunk) {
  const Model& m = r.model();
  const int C = m.cfg.hidden, V = m.cfg.vocab;
  Nll out;
  std::vector<float> xn, logits, losses;
  std::vector<int32_t> targets;
  for (int s0 = 0; s0 < S; s0 += chunk) {
    const int b = std::min(chunk, S - s0), n = b * T;
    xn.resize(size_t(n) * C);
    logits.resize(size_t(n) * V);
    losses.resize(size_t(n));
    targets.assign(size_t(n), -1);
    for (int i = 0; i < b; i++)
      for (int t = 0; t + 1 < T; t++) targets[size_t(i) * T + t] = tokens[(size_t(s0) + i) * T + t + 1];
    r.head_forward(x + size_t(s0) * T * C, n, xn.data(), nullptr, nullptr, logits.data());
    kernels::cross_entropy_forward(losses.data(), logits.data(), targets.data(), n, V);
    for (int i = 0; i < n; i++)
      if (targets[size_t(i)] >= 0) out.sum += losses[size_t(i)], out.count++;
  }
  return out;
}

}  // namespace

double masked_perplexity(const Model& m, const std::vector<int32_t>& tokens, int S, int T,
                         const std::vector<uint8_t>& skip_attn, const std::vector<uint8_t>& skip_mlp, int chunk_windows) {
  Runner r(m, T);
  r.skip_sublayers(skip_attn, skip_mlp);
  std::vector<float> x(size_t(S) * T * m.cfg.hidden);
  r.embed(tokens.data(), S * T, x.data());
  LayerF32 w;
  const int chunk = std::max(1, chunk_windows);
  run_layers(r, w, x.data(), 0, S, T, chunk);
  return head_nll(r, x.data(), tokens.data(), S, T, chunk).ppl();
}

SublayerSearch search_sublayers(const Model& m, const std::vector<int32_t>& tokens, int S, int T,
                                const SublayerSearchOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  if (int64_t(tokens.size()) != int64_t(S) * T) throw RuntimeError("internal: calibration tokens are not S x T");
  const int L = int(m.layers.size()), C = m.cfg.hidden;
  const int chunk = std::max(1, opt.chunk_windows);
  const int64_t total = count_params(m).total;
  std::vector<uint8_t> skip_attn(size_t(L), 0), skip_mlp(size_t(L), 0);
  auto skipped = [&](const Sublayer& s) -> uint8_t& { return (s.attention ? skip_attn : skip_mlp)[size_t(s.layer)]; };
  // Candidates in the reference's order: attention blocks by layer, then MLP blocks by layer.
  auto candidates = [&] {
    std::vector<Sublayer> c;
    for (bool attention : {true, false})
      for (int l = 0; l < L; l++) {
        const Sublayer s{l, attention};
        const LayerConfig& lc = m.cfg.layers[size_t(l)];
        if (!(attention ? lc.has_attention() : lc.has_mlp()) || skipped(s)) continue;
        if (!opt.candidate_layers.empty() && !opt.candidate_layers[size_t(l)]) continue;
        c.push_back(s);
      }
    return c;
  };
  SublayerSearch res;
  auto done = [&] {
    if (opt.remove >= 0) return int(res.steps.size()) >= opt.remove;
    return double(res.params_removed) >= opt.param_ratio * double(total) - 1e-9;
  };
  res.base_ppl = masked_perplexity(m, tokens, S, T, skip_attn, skip_mlp, chunk);
  std::vector<double> one_shot_bi;  // BI criterion: the original model's, once
  std::vector<Sublayer> bi_order;
  if (opt.criterion == SublayerCriterion::BlockInfluence) {
    BlockInfluenceOptions bo;
    bo.chunk_windows = chunk;
    BlockInfluence bi = block_influence(m, tokens, S, T, bo);
    bi_order = candidates();
    auto bi_of = [&](const Sublayer& s) { return (s.attention ? bi.attn : bi.mlp)[size_t(s.layer)]; };
    std::stable_sort(bi_order.begin(), bi_order.end(), [&](const Sublayer& a, const Sublayer& b) { return bi_of(a) < bi_of(b); });
    for (const Sublayer& s : bi_order) one_shot_bi.push_back(bi_of(s));
  }
  Runner runner(m, T);
  LayerF32 w;
  std::vector<float> x0(size_t(S) * T * C), x, y;
  runner.embed(tokens.data(), S * T, x0.data());
  Progress prog("sub-blocks", opt.remove >= 0 ? opt.remove : 0, "step");
  while (!done()) {
    std::vector<Sublayer> cand = candidates();
    // Never the last sub-block of the model.
    int present = 0;
    for (int l = 0; l < L; l++)
      present += (m.cfg.layers[size_t(l)].has_attention() && !skip_attn[size_t(l)]) + (m.cfg.layers[size_t(l)].has_mlp() && !skip_mlp[size_t(l)]);
    if (cand.empty() || present <= 1)
      throw UserError("cannot remove more sub-blocks: " + std::to_string(res.steps.size()) + " removed, " +
                      std::to_string(double(res.params_removed) / double(total) * 100) + "% of the parameters, and no candidate is left");
    SublayerStep step;
    if (opt.criterion == SublayerCriterion::BlockInfluence) {
      const size_t k = res.steps.size();
      if (k >= bi_order.size()) throw UserError("cannot remove more sub-blocks: every candidate is gone");
      step.removed = bi_order[k];
      step.bi = one_shot_bi[k];
      skipped(step.removed) = 1;
      step.calib_ppl = masked_perplexity(m, tokens, S, T, skip_attn, skip_mlp, chunk);
    } else {
      std::vector<double> cand_bi(cand.size(), 0.0);
      if (opt.shortlist > 0 && int(cand.size()) > opt.shortlist) {
        // BI shortlist under the current removals: only the K lowest are scored by perplexity.
        BlockInfluenceOptions bo;
        bo.chunk_windows = chunk;
        bo.skip_attn = skip_attn;
        bo.skip_mlp = skip_mlp;
        BlockInfluence bi = block_influence(m, tokens, S, T, bo);
        std::vector<size_t> order(cand.size());
        for (size_t i = 0; i < order.size(); i++) order[i] = i;
        auto bi_of = [&](const Sublayer& s) { return (s.attention ? bi.attn : bi.mlp)[size_t(s.layer)]; };
        std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return bi_of(cand[a]) < bi_of(cand[b]); });
        std::vector<Sublayer> kept;
        order.resize(size_t(opt.shortlist));
        std::sort(order.begin(), order.end());
        for (size_t i : order) kept.push_back(cand[i]), cand_bi[kept.size() - 1] = bi_of(cand[i]);
        cand = kept;
        cand_bi.resize(cand.size());
      }
      // The residual stream at each layer's input is shared by all candidates of that layer and
      // the ones after it: advance one copy layer by layer, branch off a copy per candidate.
      std::vector<double> ppl(cand.size(), 0.0);
      int last = 0;
      for (const Sublayer& s : cand) last = std::max(last, s.layer);
      x = x0;
      runner.skip_sublayers(skip_attn, skip_mlp);
      for (int l = 0; l <= last; l++) {
        for (size_t i = 0; i < cand.size(); i++) {
          if (cand[i].layer != l) continue;
          y = x;
          skipped(cand[i]) = 1;
          runner.skip_sublayers(skip_attn, skip_mlp);
          run_layers(runner, w, y.data(), l, S, T, chunk);
          ppl[i] = head_nll(runner, y.data(), tokens.data(), S, T, chunk).ppl();
          skipped(cand[i]) = 0;
          runner.skip_sublayers(skip_attn, skip_mlp);
        }
        w.load(m, l);
        for (int s0 = 0; s0 < S; s0 += chunk)
          runner.block_forward(l, w, x.data() + size_t(s0) * T * C, std::min(chunk, S - s0), T, nullptr, nullptr);
      }
      size_t best = 0;
      for (size_t i = 1; i < cand.size(); i++)
        if (ppl[i] < ppl[best]) best = i;  // strict: the earlier candidate wins a tie
      step.removed = cand[best];
      step.calib_ppl = ppl[best];
      step.bi = cand_bi[best];
      step.evaluated = int(cand.size());
      for (size_t i = 0; i < cand.size(); i++) step.candidates.push_back({cand[i], ppl[i]});
      skipped(step.removed) = 1;
    }
    res.params_removed += sublayer_params(m, step.removed);
    res.steps.push_back(step);
    prog.add(1);
  }
  prog.finish();
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace llmprune
