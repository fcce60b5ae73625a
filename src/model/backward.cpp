#include "model/backward.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "kernels/gemm_bf16.h"
#include "kernels/ops.h"

namespace llmprune {

namespace k = kernels;

namespace {

// Accumulates one tensor's weight gradient, either batched or per sample.
// `compute(dst, row0, rows)` must ADD the gradient restricted to rows [row0, row0+rows) into dst.
template <typename F>
void accumulate_grad(GradStats& st, size_t numel, int B, int T, bool per_sample, const std::vector<float>& sample_scale, F compute) {
  st.g.assign(numel, 0.0f);
  if (!per_sample) {
    compute(st.g.data(), 0, B * T);
    return;
  }
  st.a.assign(numel, 0.0f);
  std::vector<float> tmp(numel);
  const float invB = 1.0f / float(B);
  for (int b = 0; b < B; b++) {
    std::fill(tmp.begin(), tmp.end(), 0.0f);
    compute(tmp.data(), b * T, T);
    // The upstream gradient of sample b carries 1/(B*count_b); rescale to its own mean loss.
    const float s = sample_scale[size_t(b)];
    float* g = st.g.data();
    float* a = st.a.data();
#pragma omp parallel for if (numel > 65536)
    for (size_t i = 0; i < numel; i++) {
      float gj = tmp[i] * s;
      g[i] += gj * invB;
      a[i] += gj * gj * invB;
    }
  }
}

}  // namespace

BackwardResult compute_gradients(const Model& m, const int32_t* tokens, int B, int T, const GradOptions& opt, GradSink& sink) {
  const ModelConfig& cfg = m.cfg;
  const int C = cfg.hidden, V = cfg.vocab, N = B * T, L = cfg.n_layer;
  Runner runner(m, T);
  runner.set_hook(opt.hook);
  runner.set_compute(opt.compute);
  const bool bf16 = opt.compute == k::Compute::BF16;
  LinearHook* hook = opt.hook;
  const RopeTables& rope = runner.rope();

  auto wants = [&](int l) { return opt.layer_grads.empty() || (size_t(l) < opt.layer_grads.size() && opt.layer_grads[size_t(l)]); };
  int lowest = 0;  // nothing below this layer needs the activation gradient
  if (!opt.global_grads && !hook) {
    lowest = L;
    for (int l = 0; l < L; l++)
      if (wants(l)) {
        lowest = l;
        break;
      }
  }

  // ---- forward, keeping each layer's input (and with keep_activations its activations) ----
  std::vector<std::vector<float>> layer_in(static_cast<size_t>(L));
  std::vector<LayerActs> kept(opt.keep_activations ? size_t(L) : 0);
  std::vector<float> x(size_t(N) * C);
  runner.embed(tokens, N, x.data());
  // GLM v1: positions, block positions and the prefix mask from sop / [gMASK] (forward.h).
  const TokenLayout layout = token_layout(m, tokens, B, T, nullptr);
  if (m.arch->positions != PositionKind::Causal) runner.set_layout(layout, B, T);
  const bool layer_norm = m.arch->norm == NormKind::LayerNorm;
  const bool gated = m.arch->mlp == MlpKind::SwiGLU;
  const bool normed_residual = m.arch->residual.from_normed;
  const float res_scale = float(m.arch->residual.scale);
  LayerF32 w;
  for (int l = 0; l < L; l++) {
    const bool keep = opt.keep_activations && l >= lowest;
    if (l >= lowest) layer_in[size_t(l)] = x;
    w.load(m, l, matrix_load_for(opt.compute, false));
    runner.layer_forward(l, w, x.data(), B, T, nullptr, keep ? &kept[size_t(l)] : nullptr);
  }
  // ---- head: final norm, lm_head, cross-entropy ----
  std::vector<float> xn(size_t(N) * C), rstd(static_cast<size_t>(N)), logits(size_t(N) * V);
  runner.head(x.data(), N, xn.data(), rstd.data(), logits.data());
  std::vector<int32_t> targets(size_t(N), -1);
  if (opt.targets) {
    for (int n = 0; n < N; n++) {
      const int32_t tg = opt.targets[n];
      if (tg >= V) throw RuntimeError("target id " + std::to_string(tg) + " at position " + std::to_string(n) + " is outside the vocabulary");
      targets[size_t(n)] = tg < 0 ? -1 : tg;
    }
  } else {
    for (int b = 0; b < B; b++)
      for (int t = 0; t + 1 < T; t++) targets[size_t(b) * T + t] = tokens[size_t(b) * T + t + 1];
  }
  std::vector<float> losses(static_cast<size_t>(N));
  k::cross_entropy_forward(losses.data(), logits.data(), targets.data(), N, V);
  BackwardResult res;
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
  if (!std::isfinite(res.loss)) {
    res.finite = false;
    return res;
  }
  // dlogits of the overall mean loss (over scored targets); sample_scale[b] = count / count_b
  // turns sample b's share of the overall gradient into g_b, the gradient of its own mean loss
  // (= B when every sample scores T-1 targets).
  const float scale = count ? 1.0f / float(count) : 0.0f;
  std::vector<float> sample_scale(static_cast<size_t>(B), 0.0f);
  for (int b = 0; b < B; b++)
    if (sample_count[size_t(b)]) sample_scale[size_t(b)] = float(double(count) / double(sample_count[size_t(b)]));
  std::vector<float>& dlogits = logits;  // overwritten in place: logits are not needed any more
  k::cross_entropy_backward(dlogits.data(), logits.data(), targets.data(), N, V, scale);

  std::vector<float> nw_scratch, nb_scratch;
  const float* final_norm_w = as_f32(m.final_norm(), nw_scratch);
  const float* final_norm_b = as_f32(m.final_norm_bias(), nb_scratch);  // LayerNorm families
  std::vector<float> final_mean;
  if (layer_norm) {  // head() keeps rstd only: the LayerNorm's row means again
    std::vector<float> tmp(size_t(N) * C);
    final_mean.resize(size_t(N));
    k::layernorm_forward(tmp.data(), final_mean.data(), rstd.data(), x.data(), final_norm_w, final_norm_b, N, C,
                         float(cfg.rms_eps));
  }
  std::vector<float> head_scratch;
  const float* head_w = nullptr;
  std::array<GradStats, kNumGlobalRoles> gstats;
  // dxn = dlogits . W_head  [N, C]; lm_head gradient = dlogits^T xn
  std::vector<float> dxn(size_t(N) * C, 0.0f);
  {
    // bf16 compute reads a bf16 or fp32 lm_head as stored: its fp32 copy only for the sink.
    const Tensor& HW = m.lm_head();
    const bool head_as_stored = bf16 && (HW.dtype == DType::BF16 || HW.dtype == DType::F32);
    if (!head_as_stored || opt.global_grads) head_w = as_f32(HW, head_scratch);
    const k::Weight head_weight = head_as_stored ? k::Weight{HW.data, HW.dtype == DType::BF16} : k::Weight{head_w, false};
    if (bf16) k::linear_backward_bf16(dxn.data(), nullptr, dlogits.data(), nullptr, head_weight, N, C, V);
    else k::linear_backward(dxn.data(), nullptr, nullptr, dlogits.data(), xn.data(), head_w, N, C, V);
    if (opt.global_grads && !(cfg.tied && opt.per_sample)) {
      GradStats& hs = gstats[size_t(cfg.tied ? GlobalRole::Embed : GlobalRole::LmHead)];
      accumulate_grad(hs, size_t(V) * C, B, T, opt.per_sample, sample_scale, [&](float* dst, int r0, int rows) {
        const float* dl = dlogits.data() + size_t(r0) * V;
        const float* xr = xn.data() + size_t(r0) * C;
        if (bf16) k::linear_backward_bf16(nullptr, dst, dl, xr, head_weight, rows, C, V);
        else k::linear_backward(nullptr, dst, nullptr, dl, xr, head_w, rows, C, V);
      });
    }
  }
  std::vector<float>().swap(logits);
  std::vector<float> dx(size_t(N) * C, 0.0f);
  if (layer_norm) {
    k::layernorm_backward(dx.data(), nullptr, nullptr, dxn.data(), x.data(), final_norm_w, final_mean.data(), rstd.data(), N, C);
    if (opt.global_grads)
      for (GlobalRole gr : {GlobalRole::FinalNorm, GlobalRole::FinalNormBias})
        accumulate_grad(gstats[size_t(gr)], size_t(C), B, T, opt.per_sample, sample_scale, [&](float* dst, int r0, int rows) {
          k::layernorm_backward(nullptr, gr == GlobalRole::FinalNorm ? dst : nullptr, gr == GlobalRole::FinalNorm ? nullptr : dst,
                                dxn.data() + size_t(r0) * C, x.data() + size_t(r0) * C, final_norm_w, final_mean.data() + r0,
                                rstd.data() + r0, rows, C);
        });
  } else {
    k::rmsnorm_backward(dx.data(), nullptr, dxn.data(), x.data(), final_norm_w, rstd.data(), N, C);
    if (opt.global_grads)
      accumulate_grad(gstats[size_t(GlobalRole::FinalNorm)], size_t(C), B, T, opt.per_sample, sample_scale, [&](float* dst, int r0, int rows) {
        k::rmsnorm_backward(nullptr, dst, dxn.data() + size_t(r0) * C, x.data() + size_t(r0) * C, final_norm_w, rstd.data() + r0, rows, C);
      });
  }

  // ---- layers, top to bottom ----
  LayerActs recomputed;
  // Gradient buffers live across layers: a fresh 7B-layer set (~0.8 GB) per layer would be
  // page-faulted and zeroed by the kernel every time (measured: ~10% of a 7B importance pass).
  // clear() keeps the capacity; a role left empty in a layer was not computed there.
  std::array<GradStats, kNumLayerRoles> gs;
  std::vector<float> dmid, dh, dgate, dup, dxn2, datt, dq, dk, dv, dxn1, xcur;
  for (int l = L - 1; l >= lowest; l--) {
    const LayerConfig& lc = cfg.layers[size_t(l)];
    const bool wg = opt.weight_grads && wants(l);
    const int H = lc.n_head, KVH = lc.n_kv_head, D = lc.head_dim, F = lc.d_ff, QD = H * D, KD = KVH * D;
    w.load(m, l, matrix_load_for(opt.compute, wants(l) && sink.needs_f32_weights()));
    LayerActs& acts = opt.keep_activations ? kept[size_t(l)] : recomputed;
    if (!opt.keep_activations) {
      xcur = layer_in[size_t(l)];
      runner.layer_forward(l, w, xcur.data(), B, T, nullptr, &acts);  // recompute activations
    }
    const float* x_in = layer_in[size_t(l)].data();
    for (auto& st : gs) st.g.clear(), st.a.clear();
    // Weight gradient of one projection; a hook (LoRA) also adds its branch's input gradient
    // into dinp here, before dinp flows further down.
    auto lin_grad = [&](Role r, const float* dout, const float* inp, int in_dim, int out_dim, float* dinp) {
      if (hook) hook->backward(l, r, inp, dout, dinp, N, in_dim, out_dim);
      if (!wg) return;
      if (opt.per_sample) {
        // Blocked per-sample statistics: per-sample gradients never leave the cache.
        GradStats& st = gs[size_t(r)];
        st.g.assign(size_t(in_dim) * out_dim, 0.0f);
        st.a.assign(size_t(in_dim) * out_dim, 0.0f);
        if (bf16) k::linear_weight_grad_stats_bf16(st.g.data(), st.a.data(), dout, inp, B, T, in_dim, out_dim, sample_scale.data());
        else k::linear_weight_grad_stats(st.g.data(), st.a.data(), dout, inp, B, T, in_dim, out_dim, sample_scale.data());
        return;
      }
      accumulate_grad(gs[size_t(r)], size_t(in_dim) * out_dim, B, T, opt.per_sample, sample_scale, [&](float* dst, int r0, int rows) {
        const float* dr = dout + size_t(r0) * out_dim;
        const float* xr = inp + size_t(r0) * in_dim;
        if (bf16) k::linear_backward_bf16(nullptr, dst, dr, xr, k::Weight{}, rows, in_dim, out_dim);
        else k::linear_backward(nullptr, dst, nullptr, dr, xr, nullptr, rows, in_dim, out_dim);
      });
    };
    // dinp[N, in] += dout[N, out] . W_r
    auto input_grad = [&](float* dinp, Role r, const float* dout, int in_dim, int out_dim) {
      if (bf16) k::linear_backward_bf16(dinp, nullptr, dout, nullptr, w.weight(r), N, in_dim, out_dim);
      else k::linear_backward(dinp, nullptr, nullptr, dout, nullptr, w[r], N, in_dim, out_dim);
    };
    auto bias_grad = [&](Role r, const float* dout, int out_dim) {
      if (!w[r] || !wg) return;
      accumulate_grad(gs[size_t(r)], size_t(out_dim), B, T, opt.per_sample, sample_scale, [&](float* dst, int r0, int rows) {
        k::bias_backward(dst, dout + size_t(r0) * out_dim, rows, out_dim);
      });
    };
    // A norm's input gradient into dinp and its weight (and LayerNorm bias) gradients, from the
    // gradient dxn of its output; xin is its input, mean/rstd its row statistics.
    auto norm_grad = [&](float* dinp, Role norm, Role bias, const float* dxn, const float* xin, const float* mean,
                         const float* rs) {
      if (layer_norm) k::layernorm_backward(dinp, nullptr, nullptr, dxn, xin, w[norm], mean, rs, N, C);
      else k::rmsnorm_backward(dinp, nullptr, dxn, xin, w[norm], rs, N, C);
      if (!wg) return;
      for (Role r : {norm, bias}) {
        if (r == bias && !layer_norm) continue;
        accumulate_grad(gs[size_t(r)], size_t(C), B, T, opt.per_sample, sample_scale, [&](float* dst, int r0, int rows) {
          const size_t o = size_t(r0) * C;
          if (!layer_norm) k::rmsnorm_backward(nullptr, dst, dxn + o, xin + o, w[norm], rs + r0, rows, C);
          else k::layernorm_backward(nullptr, r == norm ? dst : nullptr, r == bias ? dst : nullptr, dxn + o, xin + o, w[norm],
                                     mean + r0, rs + r0, rows, C);
        });
      }
    };
    // MLP: x_out = x_mid + down(silu(gate(xn2)) * up(xn2))
    dmid = dx;
    // A removed sub-block (depth pruning) passes the gradient straight through.
    if (runner.has_mlp(l)) {
      dh.assign(size_t(N) * F, 0.0f);
      input_grad(dh.data(), Role::Down, dx.data(), F, C);
      lin_grad(Role::Down, dx.data(), acts.h.data(), F, C, dh.data());
      bias_grad(Role::DownBias, dx.data(), C);
      dup.assign(size_t(N) * F, 0.0f);
      if (gated) {
        dgate.assign(size_t(N) * F, 0.0f);
        k::swiglu_backward(dgate.data(), dup.data(), dh.data(), acts.gate.data(), acts.up.data(), size_t(N) * F);
      } else {
        k::gelu_tanh_backward(dup.data(), dh.data(), acts.up.data(), size_t(N) * F);
      }
      dxn2.assign(size_t(N) * C, 0.0f);
      if (gated) input_grad(dxn2.data(), Role::Gate, dgate.data(), C, F);
      input_grad(dxn2.data(), Role::Up, dup.data(), C, F);
      if (gated) lin_grad(Role::Gate, dgate.data(), acts.xn2.data(), C, F, dxn2.data());
      lin_grad(Role::Up, dup.data(), acts.xn2.data(), C, F, dxn2.data());
      if (gated) bias_grad(Role::GateBias, dgate.data(), F);
      bias_grad(Role::UpBias, dup.data(), F);
      if (normed_residual) {  // x_out = scale * xn2 + mlp(xn2): the residual flows through the norm
        for (size_t i = 0; i < size_t(N) * C; i++) dxn2[i] += res_scale * dx[i];
        std::fill(dmid.begin(), dmid.end(), 0.0f);
      }
      norm_grad(dmid.data(), Role::MlpNorm, Role::MlpNormBias, dxn2.data(), acts.x_mid.data(), acts.mean2.data(),
                acts.rstd2.data());
    }
    if (runner.has_attention(l)) {
      // Attention: x_mid = x_in + o(attn(rope(q(xn1)), rope(k(xn1)), v(xn1)))
      datt.assign(size_t(N) * QD, 0.0f);
      input_grad(datt.data(), Role::O, dmid.data(), QD, C);
      lin_grad(Role::O, dmid.data(), acts.att.data(), QD, C, datt.data());
      bias_grad(Role::OBias, dmid.data(), C);
      dq.assign(size_t(N) * QD, 0.0f);
      dk.assign(size_t(N) * KD, 0.0f);
      dv.assign(size_t(N) * KD, 0.0f);
      const int32_t* prefix = layout.prefix.empty() ? nullptr : layout.prefix.data();
      k::attention_backward(dq.data(), dk.data(), dv.data(), datt.data(), acts.q.data(), acts.k.data(), acts.v.data(),
                            acts.probs.data(), B, T, H, KVH, D, prefix);
      // positions 0..T-1 in every sequence (GLM v1: its layout's positions and block positions)
      rope.apply(dq.data(), layout.pos.data(), N, H, true, layout.block_pos.data());
      rope.apply(dk.data(), layout.pos.data(), N, KVH, true, layout.block_pos.data());
      dxn1.assign(size_t(N) * C, 0.0f);
      input_grad(dxn1.data(), Role::Q, dq.data(), C, QD);
      input_grad(dxn1.data(), Role::K, dk.data(), C, KD);
      input_grad(dxn1.data(), Role::V, dv.data(), C, KD);
      lin_grad(Role::Q, dq.data(), acts.xn1.data(), C, QD, dxn1.data());
      lin_grad(Role::K, dk.data(), acts.xn1.data(), C, KD, dxn1.data());
      lin_grad(Role::V, dv.data(), acts.xn1.data(), C, KD, dxn1.data());
      bias_grad(Role::QBias, dq.data(), QD);
      bias_grad(Role::KBias, dk.data(), KD);
      bias_grad(Role::VBias, dv.data(), KD);
      dx = dmid;
      if (normed_residual) {  // x_mid = scale * xn1 + attn(xn1)
        for (size_t i = 0; i < size_t(N) * C; i++) dxn1[i] += res_scale * dmid[i];
        std::fill(dx.begin(), dx.end(), 0.0f);
      }
      norm_grad(dx.data(), Role::AttnNorm, Role::AttnNormBias, dxn1.data(), x_in, acts.mean1.data(), acts.rstd1.data());
    } else {
      dx = dmid;
    }
    for (auto& st : gs) {
      // Inf / NaN have an all-ones exponent; an integer OR over the bits vectorises.
      uint32_t bad = 0;
      const float* g = st.g.data();
      const size_t n = st.g.size();
#pragma omp parallel for reduction(| : bad) if (n > 65536)
      for (size_t i = 0; i < n; i++) {
        uint32_t u;
        std::memcpy(&u, g + i, 4);
        bad |= uint32_t((u & 0x7f800000u) == 0x7f800000u);
      }
      if (bad) throw RuntimeError("non-finite gradient in layer " + std::to_string(l));
    }
    if (wants(l)) sink.on_layer(l, w, gs);
    std::vector<float>().swap(layer_in[size_t(l)]);
    if (opt.keep_activations) kept[size_t(l)] = LayerActs{};
  }

  gs = {};  // release before the embedding gradient

  // ---- embedding ----
  if (opt.global_grads) {
    std::vector<float> embed_scratch;
    const float* embed_w = as_f32(m.embed(), embed_scratch);
    GradStats& es = gstats[size_t(GlobalRole::Embed)];
    if (!cfg.tied) {
      accumulate_grad(es, size_t(V) * C, B, T, opt.per_sample, sample_scale, [&](float* dst, int r0, int rows) {
        k::embedding_backward(dst, dx.data() + size_t(r0) * C, tokens + r0, rows, C);
      });
    } else if (!opt.per_sample) {
      k::embedding_backward(es.g.data(), dx.data(), tokens, N, C);
    } else {
      // Tied: g_j = lm_head part + embedding part of sample j; recompute the lm_head part per
      // sample so the Fisher term sees each sample's whole gradient.
      es.g.assign(size_t(V) * C, 0.0f);
      es.a.assign(size_t(V) * C, 0.0f);
      std::vector<float> tmp(size_t(V) * C);
      std::vector<float> dl(size_t(T) * V);
      for (int b = 0; b < B; b++) {
        std::fill(tmp.begin(), tmp.end(), 0.0f);
        // dlogits of sample b were freed; recompute them for this sample
        std::vector<float> lg(size_t(T) * V);
        linear_any_dtype(lg.data(), V, xn.data() + size_t(b) * T * C, m.lm_head(), T, 0, opt.compute);
        k::cross_entropy_backward(dl.data(), lg.data(), targets.data() + size_t(b) * T, T, V, scale);
        k::linear_backward(nullptr, tmp.data(), nullptr, dl.data(), xn.data() + size_t(b) * T * C, head_w, T, C, V);
        k::embedding_backward(tmp.data(), dx.data() + size_t(b) * T * C, tokens + size_t(b) * T, T, C);
        const float s = sample_scale[size_t(b)], invB = 1.0f / float(B);
        for (size_t i = 0; i < tmp.size(); i++) {
          float gj = tmp[i] * s;
          es.g[i] += gj * invB;
          es.a[i] += gj * gj * invB;
        }
      }
    }
    std::array<const float*, kNumGlobalRoles> gw{embed_w, final_norm_w, cfg.tied ? nullptr : head_w, final_norm_b};
    sink.on_global(gw, gstats);
  }
  return res;
}

}  // namespace llmprune
