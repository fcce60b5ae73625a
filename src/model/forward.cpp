#include "model/forward.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "io/safetensors.h"
#include "kernels/ops.h"

namespace llmprune {

namespace k = kernels;

const float* as_f32(const Tensor& t, std::vector<float>& scratch) {
  if (t.empty()) return nullptr;
  if (t.dtype == DType::F32) return t.f32();
  scratch.resize(size_t(t.numel()));
  to_f32(t.dtype, t.data, scratch.data(), scratch.size());
  return scratch.data();
}

void linear_any_dtype(float* out, int ldo, const float* inp, const Tensor& W, int N, int small_m_max,
                      k::Compute compute) {
  const int V = int(W.dim(0)), C = int(W.dim(1));
  if (N <= small_m_max) {
    k::linear_small_m(out, ldo, inp, W.data, W.dtype, nullptr, N, C, V);
    return;
  }
  if (compute == k::Compute::BF16 && (W.dtype == DType::F32 || W.dtype == DType::BF16)) {
    k::gemm_bf16(N, V, C, k::f32_operand(inp, C), k::Operand{W.data, W.dtype == DType::BF16, C, true}, 0.0f, out, ldo);
    return;
  }
  if (W.dtype == DType::F32 && ldo == V) {
    k::linear_forward(out, inp, W.f32(), nullptr, N, C, V);
    return;
  }
  const int block = 4096;
  std::vector<float> buf;
  for (int r0 = 0; r0 < V; r0 += block) {
    int rows = std::min(block, V - r0);
    const float* wb;
    if (W.dtype == DType::F32) {
      wb = W.f32() + size_t(r0) * C;
    } else {
      buf.resize(size_t(rows) * C);
      to_f32(W.dtype, static_cast<const uint8_t*>(W.data) + size_t(r0) * C * dtype_size(W.dtype), buf.data(), buf.size());
      wb = buf.data();
    }
    // out[:, r0:r0+rows] = inp . wb^T
    if (compute == k::Compute::BF16)
      k::gemm_bf16(N, rows, C, k::f32_operand(inp, C), k::f32_operand(wb, C, true), 0.0f, out + r0, ldo);
    else
      k::gemm_nt(N, rows, C, inp, C, wb, C, out + r0, ldo);
  }
}

MatrixLoad matrix_load_for(k::Compute compute, bool need_fp32) {
  if (compute == k::Compute::F32) return MatrixLoad::Fp32;
  return need_fp32 ? MatrixLoad::Bf16AndFp32 : MatrixLoad::Bf16;
}

void LayerF32::load(const Model& m, int layer, MatrixLoad how) {
  if (m.release_pages && loaded_model == &m && loaded_layer >= 0 && loaded_layer != layer &&
      loaded_layer < int(m.layers.size()))
    for (int r = 0; r < kNumLayerRoles; r++)
      if (in_place[size_t(r)]) release_mapped_pages(m.layers[size_t(loaded_layer)].w[size_t(r)]);
  const LayerWeights& L = m.layers[size_t(layer)];
  matrices = how;
  const bool bf16_gemms = how == MatrixLoad::Bf16 || how == MatrixLoad::Bf16AndFp32;
  for (int r = 0; r < kNumLayerRoles; r++) {
    const Tensor& t = L.w[size_t(r)];
    stored[size_t(r)] = t.empty() ? nullptr : &t;
    const bool matrix = is_matrix_role(Role(r));
    // The bf16 GEMMs read bf16 matrices as stored; the small-M kernels read every matrix so.
    const bool read_stored = matrix && (how == MatrixLoad::AsStored || (bf16_gemms && t.dtype == DType::BF16));
    in_place[size_t(r)] = t.dtype == DType::F32 || read_stored;
    if (read_stored && how != MatrixLoad::Bf16AndFp32) {
      ptr[size_t(r)] = t.dtype == DType::F32 ? t.f32() : nullptr;
      continue;
    }
    ptr[size_t(r)] = as_f32(t, buf[size_t(r)]);  // Bf16AndFp32: the bf16 data stays readable too
    if (m.release_pages && !in_place[size_t(r)]) release_mapped_pages(t);
  }
  loaded_model = &m;
  loaded_layer = layer;
}

void RopeTables::build(const ModelConfig& c, const RotaryDesc& rotary, int D, int maxp) {
  head_dim = D;
  rot_dim = rotary.table_dims(D);
  pairing = rotary.pairing;
  max_pos = maxp;
  int half = rot_dim / 2;
  std::vector<float> inv = rope_inv_freq(c, rot_dim);
  if (rotary.inv_freq_fp16) {  // THUDM v1 keeps inv_freq as fp16 (.half()), even in an fp32 model
    std::vector<uint16_t> h(inv.size());
    from_f32(DType::F16, inv.data(), h.data(), inv.size());
    to_f32(DType::F16, h.data(), inv.data(), inv.size());
  }
  cos.resize(size_t(maxp) * half);
  sin.resize(size_t(maxp) * half);
  for (int p = 0; p < maxp; p++)
    for (int i = 0; i < half; i++) {
      // fp32 angle as HF computes it (positions * inv_freq in float32), then cos/sin
      float ang = float(p) * inv[size_t(i)];
      cos[size_t(p) * half + i] = std::cos(ang);
      sin[size_t(p) * half + i] = std::sin(ang);
    }
}

void RopeTables::apply(float* x, const int32_t* pos, int N, int n_heads, bool inverse, const int32_t* block_pos) const {
  if (pairing == RotaryPairing::Glm2D) {
    std::vector<int32_t> zeros;
    if (!block_pos) {
      zeros.assign(size_t(N), 0);
      block_pos = zeros.data();
    }
    if (inverse) k::rope_2d_backward(x, pos, block_pos, cos.data(), sin.data(), N, n_heads, head_dim);
    else k::rope_2d_forward(x, pos, block_pos, cos.data(), sin.data(), N, n_heads, head_dim);
    return;
  }
  if (pairing == RotaryPairing::ConsecutivePairs) {
    if (inverse) k::rope_pairs_backward(x, pos, cos.data(), sin.data(), N, n_heads, head_dim, rot_dim);
    else k::rope_pairs_forward(x, pos, cos.data(), sin.data(), N, n_heads, head_dim, rot_dim);
    return;
  }
  if (rot_dim != head_dim) throw RuntimeError("rotate-half RoPE on part of a head is not implemented");
  if (inverse) k::rope_backward(x, pos, cos.data(), sin.data(), N, n_heads, head_dim);
  else k::rope_forward(x, pos, cos.data(), sin.data(), N, n_heads, head_dim);
}

TokenLayout token_layout(const Model& m, const int32_t* tokens, int B, int T, KVCache* cache) {
  TokenLayout out;
  const int pos0 = cache ? cache->len : 0;
  out.pos.resize(size_t(B) * T);
  out.block_pos.assign(size_t(B) * T, 0);
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) out.pos[size_t(b) * T + t] = pos0 + t;
  if (m.arch->positions == PositionKind::Causal) return out;
  // GlmBlocks: c = index of sop, m = first [gMASK] (else [MASK]); CHATGLM.md §1.5.
  const ModelConfig& c = m.cfg;
  out.prefix.assign(size_t(B), 0);
  for (int b = 0; b < B; b++) {
    int32_t sop = -1, gmask = -1, mask = -1;
    if (cache && size_t(b) < cache->glm_sop.size()) {
      sop = cache->glm_sop[size_t(b)];
      gmask = cache->glm_gmask[size_t(b)];
      mask = cache->glm_mask[size_t(b)];
    }
    const int32_t* seq = tokens + size_t(b) * T;
    for (int t = 0; t < T; t++) {
      const int32_t id = seq[t], at = pos0 + t;
      if (sop < 0 && id == c.prefix_end_id) sop = at;
      if (gmask < 0 && !c.mask_ids.empty() && id == c.mask_ids[0]) gmask = at;
      if (mask < 0 && c.mask_ids.size() > 1 && id == c.mask_ids[1]) mask = at;
    }
    if (cache) {
      cache->glm_sop.resize(size_t(cache->B), -1);
      cache->glm_gmask.resize(size_t(cache->B), -1);
      cache->glm_mask.resize(size_t(cache->B), -1);
      cache->glm_sop[size_t(b)] = sop;
      cache->glm_gmask[size_t(b)] = gmask;
      cache->glm_mask[size_t(b)] = mask;
    }
    if (sop < 0) continue;  // no sop: a causal LM, p_t = t, b_t = 0
    // No mask token before sop (text that starts with the tokenizer's BOS, which v1's config
    // names sop): THUDM's code refuses it; llmprune scores it as generated from sop's position.
    const int32_t mpos = gmask >= 0 ? gmask : mask >= 0 ? mask : sop;
    out.prefix[size_t(b)] = sop;
    for (int t = 0; t < T; t++) {
      const int32_t at = pos0 + t;
      if (at < sop) continue;
      out.pos[size_t(b) * T + t] = mpos;
      out.block_pos[size_t(b) * T + t] = at - sop + 1;
    }
  }
  return out;
}

KVCache::KVCache(const Model& m, int b, int maxT) : B(b), max_T(maxT) {
  for (auto& lc : m.cfg.layers) {
    k.emplace_back(size_t(B) * maxT * lc.kv_dim());
    v.emplace_back(size_t(B) * maxT * lc.kv_dim());
  }
}

Runner::Runner(const Model& m, int max_pos) : m_(m) {
  rope_.build(m.cfg, m.arch->rotary, m.cfg.head_dim, std::max(max_pos, m.cfg.max_pos));
}

void Runner::embed(const int32_t* tokens, int N, float* x) const {
  const Tensor& E = m_.embed();
  const int C = m_.cfg.hidden;
  const size_t es = dtype_size(E.dtype);
#pragma omp parallel for if (size_t(N) * C > (1 << 15))
  for (int n = 0; n < N; n++)
    to_f32(E.dtype, static_cast<const uint8_t*>(E.data) + size_t(tokens[n]) * C * es, x + size_t(n) * C, size_t(C));
}

void Runner::project(const LayerF32& w, Role r, Role bias, float* out, const float* inp, int N, int C, int O) const {
  const float* b = bias == Role::Count ? nullptr : w[bias];
  switch (w.matrices) {
    case MatrixLoad::AsStored: {
      const Tensor* W = w.stored[size_t(r)];  // every projection role is present (validated at load)
      k::linear_small_m(out, O, inp, W->data, W->dtype, b, N, C, O);
      return;
    }
    case MatrixLoad::Bf16:
    case MatrixLoad::Bf16AndFp32: k::linear_forward_bf16(out, inp, w.weight(r), b, N, C, O); return;
    case MatrixLoad::Fp32: k::linear_forward(out, inp, w[r], b, N, C, O); return;
  }
}

bool Runner::has_attention(int l) const {
  return m_.cfg.layers[size_t(l)].has_attention() && !(size_t(l) < skip_attn_.size() && skip_attn_[size_t(l)]);
}

bool Runner::has_mlp(int l) const {
  return m_.cfg.layers[size_t(l)].has_mlp() && !(size_t(l) < skip_mlp_.size() && skip_mlp_[size_t(l)]);
}

void Runner::forward(const int32_t* tokens, int B, int T, float* logits, KVCache* cache, bool last_only) {
  const int C = m_.cfg.hidden, N = B * T;
  std::vector<float> x(size_t(N) * C);
  embed(tokens, N, x.data());
  if (m_.arch->positions != PositionKind::Causal) set_layout(token_layout(m_, tokens, B, T, cache), B, T);
  const bool as_stored = N <= small_m_max_;  // a few rows: stream the weights, convert nothing
  for (int l = 0; l < m_.cfg.n_layer; l++) {
    w_.load(m_, l, as_stored ? MatrixLoad::AsStored : matrix_load_for(compute_, false));
    block_forward(l, w_, x.data(), B, T, cache, nullptr);
  }
  if (cache) cache->len += T;
  clear_layout();
  if (last_only) {
    std::vector<float> xl(size_t(B) * C), xn(size_t(B) * C);
    for (int b = 0; b < B; b++) std::memcpy(xl.data() + size_t(b) * C, x.data() + (size_t(b) * T + T - 1) * C, sizeof(float) * C);
    head_forward(xl.data(), B, xn.data(), nullptr, nullptr, logits);
  } else {
    std::vector<float> xn(size_t(N) * C);
    head_forward(x.data(), N, xn.data(), nullptr, nullptr, logits);
  }
}

NllResult sequence_nll(Runner& r, const int32_t* tokens, int B, int T, const int* score_from) {
  const int V = r.model().cfg.vocab;
  std::vector<float> logits(size_t(B) * T * V);
  r.forward(tokens, B, T, logits.data());
  std::vector<int32_t> targets(size_t(B) * T, -1);
  for (int b = 0; b < B; b++)
    for (int t = 0; t + 1 < T; t++)
      if (!score_from || t + 1 >= score_from[b]) targets[size_t(b) * T + t] = tokens[size_t(b) * T + t + 1];
  std::vector<float> losses(size_t(B) * T);
  kernels::cross_entropy_forward(losses.data(), logits.data(), targets.data(), B * T, V);
  NllResult res;
  for (size_t i = 0; i < losses.size(); i++)
    if (targets[i] >= 0) {
      res.nll_sum += losses[i];
      res.count++;
    }
  return res;
}

}  // namespace llmprune
