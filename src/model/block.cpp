// The block-level kernel pairs (llm.c's shape): a decoder block's forward and backward, and the
// head's, side by side, so that each forward step's gradient sits next to the step. A family's
// behaviour comes from its ArchDesc: norm kind (RMS / LayerNorm with bias), MLP kind (SwiGLU /
// GELU-tanh), rotary (RopeTables), residual (pre-norm x + f(norm(x)), GLM v1's alpha *
// norm(x) + f(norm(x)), or GLM-4-0414's x + post_norm(f(norm(x)))), positions and mask (TokenLayout). Every arithmetic loop is a kernel.
#include <cstring>

#include "core/error.h"
#include "io/safetensors.h"
#include "kernels/ops.h"
#include "model/forward.h"

namespace llmprune {

namespace k = kernels;

// ---- gradient statistics -------------------------------------------------------------------

void GradStatsPolicy::linear(GradStats& st, const float* dout, const float* inp, int in_dim, int out_dim) const {
  const bool bf16 = compute_ == k::Compute::BF16;
  if (per_sample_) {
    // Blocked per-sample statistics: per-sample gradients never leave the cache.
    st.g.assign(size_t(in_dim) * out_dim, 0.0f);
    st.a.assign(size_t(in_dim) * out_dim, 0.0f);
    if (bf16) k::linear_weight_grad_stats_bf16(st.g.data(), st.a.data(), dout, inp, B_, T_, in_dim, out_dim, sample_scale_.data());
    else k::linear_weight_grad_stats(st.g.data(), st.a.data(), dout, inp, B_, T_, in_dim, out_dim, sample_scale_.data());
    return;
  }
  st.g.assign(size_t(in_dim) * out_dim, 0.0f);
  if (bf16) k::linear_backward_bf16(nullptr, st.g.data(), dout, inp, k::Weight{}, B_ * T_, in_dim, out_dim);
  else k::linear_backward(nullptr, st.g.data(), nullptr, dout, inp, nullptr, B_ * T_, in_dim, out_dim);
}

void GradStatsPolicy::rows(GradStats& st, size_t numel, const std::function<void(float*, int, int)>& add_rows) const {
  st.g.assign(numel, 0.0f);
  if (!per_sample_) {
    add_rows(st.g.data(), 0, B_ * T_);
    return;
  }
  st.a.assign(numel, 0.0f);
  std::vector<float> grad_j(numel);
  for (int j = 0; j < B_; j++) {
    std::fill(grad_j.begin(), grad_j.end(), 0.0f);
    add_rows(grad_j.data(), j * T_, T_);
    add_sample(st, j, grad_j.data());
  }
}

void GradStatsPolicy::add_sample(GradStats& st, int j, const float* grad_j) const {
  k::accumulate_sample_stats(st.g.data(), st.a.data(), grad_j, sample_scale_[size_t(j)], 1.0f / float(B_), st.g.size());
}

void HeadF32::load(const Model& m, k::Compute compute, bool need_fp32_lm_head) {
  norm = as_f32(m.final_norm(), norm_buf);
  norm_bias = as_f32(m.final_norm_bias(), bias_buf);  // LayerNorm families
  // bf16 compute reads a bf16 or fp32 lm_head as stored: its fp32 copy only when asked for.
  const Tensor& W = m.lm_head();
  const bool as_stored = compute == k::Compute::BF16 && (W.dtype == DType::BF16 || W.dtype == DType::F32);
  lm_head = !as_stored || need_fp32_lm_head ? as_f32(W, head_buf) : nullptr;
  lm_head_weight = as_stored ? k::Weight{W.data, W.dtype == DType::BF16} : k::Weight{lm_head, false};
}

// ---- positions -----------------------------------------------------------------------------

Runner::Positions Runner::positions(int B, int T, int pos0) {
  Positions p;
  if (const TokenLayout* layout = layout_for(B, T)) {
    p.pos = layout->pos.data();
    p.block_pos = layout->block_pos.empty() ? nullptr : layout->block_pos.data();
    p.prefix = layout->prefix.empty() ? nullptr : layout->prefix.data();
    return p;
  }
  pos_.resize(size_t(B) * T);
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) pos_[size_t(b) * T + t] = pos0 + t;
  p.pos = pos_.data();
  return p;
}

// ---- decoder block -------------------------------------------------------------------------

void Runner::block_forward(int l, const LayerF32& w, float* x, int B, int T, KVCache* cache, LayerActs* acts) {
  const LayerConfig& lc = m_.cfg.layers[size_t(l)];
  const int C = m_.cfg.hidden, H = lc.n_head, KVH = lc.n_kv_head, D = lc.head_dim, F = lc.d_ff;
  const int N = B * T, QD = H * D, KD = KVH * D;
  const size_t NC = size_t(N) * C;
  const int pos0 = cache ? cache->len : 0;
  LayerActs& a = acts ? *acts : scratch_;
  auto sz = [](std::vector<float>& v, size_t n) { if (v.size() < n) v.resize(n); };
  sz(a.xn1, NC); sz(a.rstd1, size_t(N));
  sz(a.q, size_t(N) * QD); sz(a.k, size_t(N) * KD); sz(a.v, size_t(N) * KD);
  sz(a.att, size_t(N) * QD); sz(a.xn2, NC); sz(a.rstd2, size_t(N));
  sz(a.gate, size_t(N) * F); sz(a.up, size_t(N) * F); sz(a.h, size_t(N) * F);
  if (acts) { sz(a.probs, size_t(B) * H * T * T); sz(a.x_mid, NC); }

  const Positions p = positions(B, T, pos0);
  const ArchDesc& arch = *m_.arch;
  const bool layer_norm = arch.norm == NormKind::LayerNorm;
  if (layer_norm) { sz(a.mean1, size_t(N)); sz(a.mean2, size_t(N)); }
  // Normalised residual (GLM v1): out = scale * normalised input + sub-block output.
  const bool normed_residual = arch.residual.from_normed;
  const float res_scale = float(arch.residual.scale);
  auto add_residual = [&](const float* xn, const float* y) {
    if (normed_residual) k::residual_from_normed(x, xn, res_scale, y, NC);
    else k::residual_add(x, y, NC);
  };

  const float eps = float(m_.cfg.rms_eps);
  // Post-norm (GLM-4-0414): the sub-block's output y [N,C] is kept (acts) and RMS-normalised
  // into yn before the residual add.
  const bool post_norm = arch.residual.post_norm;
  if (post_norm) { sz(a.attn_out, NC); sz(a.mlp_out, NC); sz(a.post_rstd1, size_t(N)); sz(a.post_rstd2, size_t(N)); }
  auto add_output = [&](const float* xn, const float* y, Role norm, float* rstd, float* yn) {
    if (!post_norm) return add_residual(xn, y);
    k::rmsnorm_forward(yn, rstd, y, w[norm], N, C, eps);
    add_residual(xn, yn);
  };
  // A removed sub-block (0 heads / 0 MLP width, or masked by skip_sublayers) adds nothing to
  // the residual stream: BlockPruner's MaskedLlamaDecoderLayer skips the norm with it.
  if (has_attention(l)) {
    if (layer_norm) k::layernorm_forward(a.xn1.data(), a.mean1.data(), a.rstd1.data(), x, w[Role::AttnNorm], w[Role::AttnNormBias], N, C, eps);
    else k::rmsnorm_forward(a.xn1.data(), a.rstd1.data(), x, w[Role::AttnNorm], N, C, eps);
    project(w, Role::Q, Role::QBias, a.q.data(), a.xn1.data(), N, C, QD);
    project(w, Role::K, Role::KBias, a.k.data(), a.xn1.data(), N, C, KD);
    project(w, Role::V, Role::VBias, a.v.data(), a.xn1.data(), N, C, KD);
    if (hook_) {
      hook_->forward(l, Role::Q, a.xn1.data(), a.q.data(), N, C, QD);
      hook_->forward(l, Role::K, a.xn1.data(), a.k.data(), N, C, KD);
      hook_->forward(l, Role::V, a.xn1.data(), a.v.data(), N, C, KD);
    }
    rope_.apply(a.q.data(), p.pos, N, H, false, p.block_pos);
    rope_.apply(a.k.data(), p.pos, N, KVH, false, p.block_pos);
    if (cache) {
      // Append this step's K/V at positions pos0.., then attend over the whole cache.
      float* ck = cache->k[size_t(l)].data();
      float* cv = cache->v[size_t(l)].data();
      for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
          size_t dst = (size_t(b) * cache->max_T + pos0 + t) * KD, src = (size_t(b) * T + t) * KD;
          std::memcpy(ck + dst, a.k.data() + src, sizeof(float) * KD);
          std::memcpy(cv + dst, a.v.data() + src, sizeof(float) * KD);
        }
      // k/v rows of sequence b start at b*max_T; view them as [B, max_T, KD] with Tk = pos0+T.
      // attention_forward indexes sequences with stride Tk*kv_stride, so run per sequence.
      for (int b = 0; b < B; b++)
        k::attention_forward(a.att.data() + size_t(b) * T * QD, nullptr, a.q.data() + size_t(b) * T * QD,
                             ck + size_t(b) * cache->max_T * KD, cv + size_t(b) * cache->max_T * KD, 1, T, pos0 + T, pos0,
                             H, KVH, D, KD, p.prefix ? p.prefix + b : nullptr);
    } else {
      k::attention_forward(a.att.data(), acts ? a.probs.data() : nullptr, a.q.data(), a.k.data(), a.v.data(), B, T, T, 0,
                           H, KVH, D, KD, p.prefix);
    }
    // o_proj's output goes into xn2, which is recomputed below (post-norm: into attn_out, kept,
    // and its normalised value into xn2).
    std::vector<float>& proj = post_norm ? a.attn_out : a.xn2;
    project(w, Role::O, Role::OBias, proj.data(), a.att.data(), N, QD, C);
    if (hook_) hook_->forward(l, Role::O, a.att.data(), proj.data(), N, QD, C);
    add_output(a.xn1.data(), proj.data(), Role::PostAttnNorm, a.post_rstd1.data(), a.xn2.data());
  }
  if (acts) std::memcpy(a.x_mid.data(), x, sizeof(float) * NC);
  if (!has_mlp(l)) return;

  if (layer_norm) k::layernorm_forward(a.xn2.data(), a.mean2.data(), a.rstd2.data(), x, w[Role::MlpNorm], w[Role::MlpNormBias], N, C, eps);
  else k::rmsnorm_forward(a.xn2.data(), a.rstd2.data(), x, w[Role::MlpNorm], N, C, eps);
  const bool gated = arch.mlp == MlpKind::SwiGLU;
  if (gated) project(w, Role::Gate, Role::GateBias, a.gate.data(), a.xn2.data(), N, C, F);
  project(w, Role::Up, Role::UpBias, a.up.data(), a.xn2.data(), N, C, F);
  if (hook_) {
    if (gated) hook_->forward(l, Role::Gate, a.xn2.data(), a.gate.data(), N, C, F);
    hook_->forward(l, Role::Up, a.xn2.data(), a.up.data(), N, C, F);
  }
  if (gated) k::swiglu_forward(a.h.data(), a.gate.data(), a.up.data(), size_t(N) * F);
  else k::gelu_tanh_forward(a.h.data(), a.up.data(), size_t(N) * F);
  // The MLP output goes into a scratch row block (post-norm: into mlp_out, kept, and its
  // normalised value into the scratch), then the residual add.
  std::vector<float>& normed_out = scratch_.x_mid;
  sz(normed_out, NC);
  std::vector<float>& out = post_norm ? a.mlp_out : normed_out;
  project(w, Role::Down, Role::DownBias, out.data(), a.h.data(), N, F, C);
  if (hook_) hook_->forward(l, Role::Down, a.h.data(), out.data(), N, F, C);
  add_output(a.xn2.data(), out.data(), Role::PostMlpNorm, a.post_rstd2.data(), normed_out.data());
}

void Runner::block_backward(int l, const LayerF32& w, const float* x_in, const LayerActs& acts, float* dx, int B, int T,
                            const GradStatsPolicy* stats, LayerGrads& grads, BlockGradBuffers& buf) {
  const LayerConfig& lc = m_.cfg.layers[size_t(l)];
  const int C = m_.cfg.hidden, H = lc.n_head, KVH = lc.n_kv_head, D = lc.head_dim, F = lc.d_ff;
  const int N = B * T, QD = H * D, KD = KVH * D;
  const size_t NC = size_t(N) * C;
  const ArchDesc& arch = *m_.arch;
  const bool gated = arch.mlp == MlpKind::SwiGLU;
  const bool normed_residual = arch.residual.from_normed;
  const float res_scale = float(arch.residual.scale);
  const bool bf16 = compute_ == k::Compute::BF16;
  // The kernels accumulate into their gradient outputs: every buffer starts at zero.
  auto zeroed = [](std::vector<float>& v, size_t n) {
    v.assign(n, 0.0f);
    return v.data();
  };

  // Weight gradient of one projection; a hook (LoRA) also adds its branch's input gradient
  // into dinp here, before dinp flows further down.
  auto weight_grad = [&](Role r, const float* dout, const float* inp, int in_dim, int out_dim, float* dinp) {
    if (hook_) hook_->backward(l, r, inp, dout, dinp, N, in_dim, out_dim);
    if (stats) stats->linear(grads[size_t(r)], dout, inp, in_dim, out_dim);
  };
  // dinp[N, in] += dout[N, out] . W_r
  auto input_grad = [&](float* dinp, Role r, const float* dout, int in_dim, int out_dim) {
    if (bf16) k::linear_backward_bf16(dinp, nullptr, dout, nullptr, w.weight(r), N, in_dim, out_dim);
    else k::linear_backward(dinp, nullptr, nullptr, dout, nullptr, w[r], N, in_dim, out_dim);
  };
  auto bias_grad = [&](Role r, const float* dout, int out_dim) {
    if (!w[r] || !stats) return;
    stats->rows(grads[size_t(r)], size_t(out_dim), [&](float* dst, int r0, int rows) {
      k::bias_backward(dst, dout + size_t(r0) * out_dim, rows, out_dim);
    });
  };
  // A norm's input gradient into dinp and its weight (and LayerNorm bias) gradients, from the
  // gradient dxn of its output; xin is its input, mean/rstd its row statistics. bias ==
  // Role::Count: an RMSNorm whatever the family's norm (the post-norms).
  auto norm_grad = [&](float* dinp, Role norm, Role bias, const float* dxn, const float* xin, const float* mean,
                       const float* rs) {
    const bool layer_norm = arch.norm == NormKind::LayerNorm && bias != Role::Count;
    if (layer_norm) k::layernorm_backward(dinp, nullptr, nullptr, dxn, xin, w[norm], mean, rs, N, C);
    else k::rmsnorm_backward(dinp, nullptr, dxn, xin, w[norm], rs, N, C);
    if (!stats) return;
    for (Role r : {norm, bias}) {
      if (r == bias && !layer_norm) continue;
      stats->rows(grads[size_t(r)], size_t(C), [&](float* dst, int r0, int rows) {
        const size_t o = size_t(r0) * C;
        if (!layer_norm) k::rmsnorm_backward(nullptr, dst, dxn + o, xin + o, w[norm], rs + r0, rows, C);
        else k::layernorm_backward(nullptr, r == norm ? dst : nullptr, r == bias ? dst : nullptr, dxn + o, xin + o, w[norm],
                                   mean + r0, rs + r0, rows, C);
      });
    }
  };

  // Post-norm (GLM-4-0414): the gradient dy of a sub-block's output y from that of its
  // normalised value, which is the residual's gradient; without post-norm it is that gradient.
  const bool post_norm = arch.residual.post_norm;
  auto sub_block_grad = [&](const float* dres, Role norm, const float* y, const float* rs) -> const float* {
    if (!post_norm) return dres;
    float* dy = zeroed(buf.dsub, NC);
    norm_grad(dy, norm, Role::Count, dres, y, nullptr, rs);
    return dy;
  };

  // MLP: x_out = x_mid + down(act(xn2)), xn2 = norm(x_mid) (GLM v1: x_out = scale * xn2 + ...;
  // GLM-4-0414: x_out = x_mid + post_norm(down(...))).
  // dmid = the gradient of x_mid; a removed sub-block passes the gradient straight through.
  if (buf.dmid.size() < NC) buf.dmid.resize(NC);
  float* dmid = buf.dmid.data();
  std::memcpy(dmid, dx, sizeof(float) * NC);
  if (has_mlp(l)) {
    const float* dout = sub_block_grad(dx, Role::PostMlpNorm, acts.mlp_out.data(), acts.post_rstd2.data());
    float* dh = zeroed(buf.dh, size_t(N) * F);
    input_grad(dh, Role::Down, dout, F, C);
    weight_grad(Role::Down, dout, acts.h.data(), F, C, dh);
    bias_grad(Role::DownBias, dout, C);
    float* dup = zeroed(buf.dup, size_t(N) * F);
    float* dgate = gated ? zeroed(buf.dgate, size_t(N) * F) : nullptr;
    if (gated) k::swiglu_backward(dgate, dup, dh, acts.gate.data(), acts.up.data(), size_t(N) * F);
    else k::gelu_tanh_backward(dup, dh, acts.up.data(), size_t(N) * F);
    float* dxn2 = zeroed(buf.dxn2, NC);
    if (gated) input_grad(dxn2, Role::Gate, dgate, C, F);
    input_grad(dxn2, Role::Up, dup, C, F);
    if (gated) weight_grad(Role::Gate, dgate, acts.xn2.data(), C, F, dxn2);
    weight_grad(Role::Up, dup, acts.xn2.data(), C, F, dxn2);
    if (gated) bias_grad(Role::GateBias, dgate, F);
    bias_grad(Role::UpBias, dup, F);
    if (normed_residual) {  // the residual flows through the norm
      k::add_scaled(dxn2, dx, res_scale, NC);
      std::memset(dmid, 0, sizeof(float) * NC);
    }
    norm_grad(dmid, Role::MlpNorm, Role::MlpNormBias, dxn2, acts.x_mid.data(), acts.mean2.data(), acts.rstd2.data());
  }
  // Attention: x_mid = x_in + o(attn(rope(q(xn1)), rope(k(xn1)), v(xn1))), xn1 = norm(x_in).
  std::memcpy(dx, dmid, sizeof(float) * NC);
  if (!has_attention(l)) return;
  const float* dproj = sub_block_grad(dmid, Role::PostAttnNorm, acts.attn_out.data(), acts.post_rstd1.data());
  float* datt = zeroed(buf.datt, size_t(N) * QD);
  input_grad(datt, Role::O, dproj, QD, C);
  weight_grad(Role::O, dproj, acts.att.data(), QD, C, datt);
  bias_grad(Role::OBias, dproj, C);
  float* dq = zeroed(buf.dq, size_t(N) * QD);
  float* dk = zeroed(buf.dk, size_t(N) * KD);
  float* dv = zeroed(buf.dv, size_t(N) * KD);
  const Positions p = positions(B, T, 0);
  k::attention_backward(dq, dk, dv, datt, acts.q.data(), acts.k.data(), acts.v.data(), acts.probs.data(), B, T, H, KVH, D,
                        p.prefix);
  rope_.apply(dq, p.pos, N, H, true, p.block_pos);
  rope_.apply(dk, p.pos, N, KVH, true, p.block_pos);
  float* dxn1 = zeroed(buf.dxn1, NC);
  input_grad(dxn1, Role::Q, dq, C, QD);
  input_grad(dxn1, Role::K, dk, C, KD);
  input_grad(dxn1, Role::V, dv, C, KD);
  weight_grad(Role::Q, dq, acts.xn1.data(), C, QD, dxn1);
  weight_grad(Role::K, dk, acts.xn1.data(), C, KD, dxn1);
  weight_grad(Role::V, dv, acts.xn1.data(), C, KD, dxn1);
  bias_grad(Role::QBias, dq, QD);
  bias_grad(Role::KBias, dk, KD);
  bias_grad(Role::VBias, dv, KD);
  if (normed_residual) {
    k::add_scaled(dxn1, dmid, res_scale, NC);
    std::memset(dx, 0, sizeof(float) * NC);
  }
  norm_grad(dx, Role::AttnNorm, Role::AttnNormBias, dxn1, x_in, acts.mean1.data(), acts.rstd1.data());
}

// ---- head ----------------------------------------------------------------------------------

void Runner::head_forward(const float* x, int N, float* xn, float* mean, float* rstd, float* logits) {
  std::vector<float> nscratch, bscratch, mean_scratch;
  const float* nw = as_f32(m_.final_norm(), nscratch);
  if (m_.arch->norm == NormKind::LayerNorm) {
    if (!mean) {
      mean_scratch.resize(size_t(N));
      mean = mean_scratch.data();
    }
    k::layernorm_forward(xn, mean, rstd, x, nw, as_f32(m_.final_norm_bias(), bscratch), N, m_.cfg.hidden,
                         float(m_.cfg.rms_eps));
  } else {
    k::rmsnorm_forward(xn, rstd, x, nw, N, m_.cfg.hidden, float(m_.cfg.rms_eps));
  }
  linear_any_dtype(logits, m_.cfg.vocab, xn, m_.lm_head(), N, small_m_max_, compute_);
  if (m_.release_pages) release_mapped_pages(m_.lm_head());
}

void Runner::head_backward(const HeadF32& w, const float* x, const float* xn, const float* mean, const float* rstd,
                           const float* dlogits, float* dx, int N, const GradStatsPolicy* stats, bool lm_head_grad,
                           GlobalGrads& grads, std::vector<float>& dxn_buf) {
  const int C = m_.cfg.hidden, V = m_.cfg.vocab;
  const bool bf16 = compute_ == k::Compute::BF16;
  // dxn = dlogits . W_head  [N, C]; lm_head gradient = dlogits^T xn
  dxn_buf.assign(size_t(N) * C, 0.0f);
  float* dxn = dxn_buf.data();
  if (bf16) k::linear_backward_bf16(dxn, nullptr, dlogits, nullptr, w.lm_head_weight, N, C, V);
  else k::linear_backward(dxn, nullptr, nullptr, dlogits, xn, w.lm_head, N, C, V);
  if (stats && lm_head_grad) {
    GradStats& hs = grads[size_t(m_.cfg.tied ? GlobalRole::Embed : GlobalRole::LmHead)];
    stats->rows(hs, size_t(V) * C, [&](float* dst, int r0, int rows) {
      const float* dl = dlogits + size_t(r0) * V;
      const float* xr = xn + size_t(r0) * C;
      if (bf16) k::linear_backward_bf16(nullptr, dst, dl, xr, w.lm_head_weight, rows, C, V);
      else k::linear_backward(nullptr, dst, nullptr, dl, xr, w.lm_head, rows, C, V);
    });
  }
  if (m_.arch->norm == NormKind::LayerNorm) {
    k::layernorm_backward(dx, nullptr, nullptr, dxn, x, w.norm, mean, rstd, N, C);
    if (stats)
      for (GlobalRole gr : {GlobalRole::FinalNorm, GlobalRole::FinalNormBias})
        stats->rows(grads[size_t(gr)], size_t(C), [&](float* dst, int r0, int rows) {
          k::layernorm_backward(nullptr, gr == GlobalRole::FinalNorm ? dst : nullptr, gr == GlobalRole::FinalNorm ? nullptr : dst,
                                dxn + size_t(r0) * C, x + size_t(r0) * C, w.norm, mean + r0, rstd + r0, rows, C);
        });
  } else {
    k::rmsnorm_backward(dx, nullptr, dxn, x, w.norm, rstd, N, C);
    if (stats)
      stats->rows(grads[size_t(GlobalRole::FinalNorm)], size_t(C), [&](float* dst, int r0, int rows) {
        k::rmsnorm_backward(nullptr, dst, dxn + size_t(r0) * C, x + size_t(r0) * C, w.norm, rstd + r0, rows, C);
      });
  }
}

}  // namespace llmprune
