#include "prune/budget.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>

#include "core/error.h"
#include "core/fs.h"

namespace llmprune {

std::string MemoryEstimate::describe() const {
  std::string s = human_bytes(total) + " (";
  bool first = true;
  for (auto& t : terms) {
    if (t.bytes <= 0) continue;
    s += (first ? "" : ", ") + t.what + " " + human_bytes(t.bytes);
    first = false;
  }
  return s + ")";
}

nlohmann::json MemoryEstimate::to_json() const {
  nlohmann::json terms_j = nlohmann::json::object();
  for (auto& t : terms) terms_j[t.what] = int64_t(std::llround(t.bytes));
  return {{"total_bytes", int64_t(std::llround(total))}, {"terms", terms_j}};
}

MemoryEstimate MemoryEstimate::from_json(const nlohmann::json& j) {
  MemoryEstimate e;
  if (!j.is_object()) return e;
  if (j.contains("total_bytes") && j["total_bytes"].is_number()) e.total = j["total_bytes"].get<double>();
  if (j.contains("terms") && j["terms"].is_object())
    for (auto& [what, bytes] : j["terms"].items())
      if (bytes.is_number()) e.terms.push_back({what, bytes.get<double>()});
  return e;
}

int lowest_backward_layer(const Model& m, bool global_grads, const std::vector<uint8_t>& layer_grads) {
  if (global_grads || layer_grads.empty()) return 0;
  const int L = int(m.cfg.layers.size());
  for (int l = 0; l < L; l++)
    if (size_t(l) < layer_grads.size() && layer_grads[size_t(l)]) return l;
  return L;
}

MemoryEstimate estimate_prune_memory(const Model& m, const PruneShape& s) {
  const double f = 4;  // fp32
  const double dt = double(dtype_size(m.storage_dtype()));
  const bool f32_storage = m.storage_dtype() == DType::F32;
  const double N = double(s.B) * s.T, C = m.cfg.hidden, V = m.cfg.vocab;
  const int lowest = lowest_backward_layer(m, s.global_grads, s.layer_grads);
  // The largest layer (parameters), its largest tensor, and the largest tensor of the model.
  double layer_big = 0, layer_tensor_big = 0;
  double work_big = 0, kept_all = 0, saved_inputs = 0;
  for (size_t l = 0; l < m.layers.size(); l++) {
    double n = 0;
    for (const Tensor& t : m.layers[l].w) {
      if (t.empty()) continue;  // a role this model does not have
      n += double(t.numel());
      layer_tensor_big = std::max(layer_tensor_big, double(t.numel()));
    }
    layer_big = std::max(layer_big, n);
    const LayerConfig& lc = m.cfg.layers[l];
    const double QD = lc.q_dim(), KD = lc.kv_dim(), F = lc.d_ff;
    // LayerActs of one layer: xn1 xn2 x_mid, q att, k v, gate up h, rstd1 rstd2, probs; with
    // post-norms (GLM-4-0414) also attn_out mlp_out and their rstd.
    const double post = m.arch->residual.post_norm ? 2 * N * C + 2 * N : 0;
    const double acts = f * (3 * N * C + 2 * N * QD + 2 * N * KD + 3 * N * F + 2 * N + post + double(s.B) * lc.n_head * double(s.T) * s.T);
    // The backward's temporaries (dmid dx dxn1 dxn2 xcur, dh dgate dup, datt dq, dk dv; post-norm:
    // dsub), the head's x xn dxn and the Runner's MLP output row block.
    const double dsub = m.arch->residual.post_norm ? N * C : 0;
    const double bwd = f * (5 * N * C + 3 * N * F + 2 * N * QD + 2 * N * KD + 3 * N * C + N * C + dsub);
    // Recomputing: the Runner's scratch (forward) and the recomputed LayerActs, one layer each.
    work_big = std::max(work_big, bwd + (s.keep_activations ? 0 : 2 * acts));
    if (int(l) >= lowest) {
      saved_inputs += f * N * C;
      if (s.keep_activations) kept_all += acts;
    }
  }
  const double tensor_big = std::max({layer_tensor_big, double(m.embed().numel()), double(m.lm_head().numel())});
  const double head_numel = double(m.lm_head().numel());

  MemoryEstimate e;
  auto add = [&](const std::string& what, double bytes) { e.terms.push_back({what, bytes}); };
  // Process baseline (code, OpenBLAS thread buffers, tokenizer, calibration tokens) and the
  // per-unit bookkeeping (groups, scores, the JSON of every unit).
  const double fixed = 256.0 * (1 << 20) + 1024.0 * double(s.n_groups);
  add("runtime and unit bookkeeping", fixed);

  double importance = 0;
  if (needs_gradients(s.criterion)) {
    const bool ps = needs_fisher(s.criterion);
    std::vector<MemoryTerm> t;
    t.push_back({"fp32 weights of one layer", f32_storage ? 0 : f * layer_big});
    // Touched file pages: the layer being converted (F32 storage: it and the previous one, whose
    // pages are dropped at the next load), the whole lm_head (the head reads all of it), the
    // embedding rows looked up.
    // bf16 compute reads bf16 weights in place, so their pages too stay until the next load.
    const bool bf16 = s.compute == kernels::Compute::BF16;
    const bool in_place = f32_storage || (bf16 && m.storage_dtype() == DType::BF16);
    const double layer_pages = in_place ? 2 * dt * layer_big : dt * layer_big;
    t.push_back({"mapped pages (one layer, lm_head)", layer_pages + dt * head_numel + dt * N * C});
    // bf16 compute reads a bf16 lm_head as stored; the fp32 copy is then only for its gradient.
    const bool head_f32 = !f32_storage && (!bf16 || m.lm_head().dtype != DType::BF16 || s.global_grads);
    t.push_back({"fp32 lm_head (head backward)", head_f32 ? f * head_numel : 0});
    if (bf16) {
      // The packed bf16 copy of a GEMM's left operand (the largest: dlogits [N, V] or an MLP
      // activation [N, F]; Fisher: every sample's layer input) and each thread's B blocks.
      double f_max = 0;
      for (const LayerConfig& lc : m.cfg.layers) f_max = std::max(f_max, double(lc.d_ff));
      const double packed = 2 * N * std::max({V, f_max, C}) + (needs_fisher(s.criterion) ? 2 * N * C : 0);
      t.push_back({"bf16 GEMM packing buffers", packed + 128.0 * 1024 * omp_get_max_threads()});
    }
    t.push_back({"saved layer inputs B*T*C*4 per layer", saved_inputs});
    if (s.keep_activations) t.push_back({"kept activations of every layer (incl. probs B*H*T*T*4)", kept_all});
    t.push_back({s.keep_activations ? "backward temporaries of one layer" : "activations of one layer (incl. probs B*H*T*T*4)", work_big});
    // Alternatives that never coexist: the logits (head phase) vs one layer's gradients.
    const double logits = f * N * V + f * N;
    const double grads = f * layer_big * (ps ? 2 : 1) + (ps ? f * layer_tensor_big : 0);
    if (logits >= grads) t.push_back({"logits B*T*V*4", logits});
    else t.push_back({ps ? "gradients + Fisher of one layer (+ per-sample scratch)" : "gradients of one layer", grads});
    if (s.global_grads) {
      // embed and lm_head statistics live from the head to the end (tied: one tensor).
      const double per = f * head_numel * (ps ? 2 : 1);
      t.push_back({"embedding / lm_head gradients", (m.cfg.tied ? 1 : 2) * per + (ps ? f * head_numel : 0)});
    }
    for (auto& x : t) importance += x.bytes;
    for (auto& x : t) e.terms.push_back(x);
  } else if (s.criterion != Criterion::Random) {
    e.terms.push_back({"fp32 weights of one layer", f32_storage ? 0 : f * layer_big});
    e.terms.push_back({"mapped pages (one layer)", (f32_storage ? 2 * f : dt) * layer_big});
    importance = e.terms[e.terms.size() - 2].bytes + e.terms.back().bytes;
    if (s.global_grads) {
      const double g = (f32_storage ? 0 : f * (double(m.embed().numel()) + (m.cfg.tied ? 0 : head_numel)));
      e.terms.push_back({"fp32 embedding / lm_head", g});
      importance += g;
    }
  }
  // Streaming save: the writer's buffer of the largest tensor and its source pages.
  const double save = tensor_big * dt * 2;
  if (save > importance) {
    e.terms.clear();
    add("runtime and unit bookkeeping", fixed);
    add("save: largest tensor buffered + its mapped pages", save);
  }
  e.total = fixed + std::max(importance, save);
  return e;
}

MemoryEstimate estimate_statistics_memory(const Model& m, int S, int T, int chunk_windows, bool compensate) {
  const double f = 4, dt = double(dtype_size(m.storage_dtype()));
  const bool f32_storage = m.storage_dtype() == DType::F32;
  const double C = m.cfg.hidden, N = double(std::min(S, std::max(1, chunk_windows))) * T;
  double layer_big = 0, acts = 0, refit = 0, refitted = 0;
  for (size_t l = 0; l < m.layers.size(); l++) {
    double n = 0;
    for (const Tensor& t : m.layers[l].w) n += t.empty() ? 0 : double(t.numel());
    layer_big = std::max(layer_big, n);
    const LayerConfig& lc = m.cfg.layers[l];
    const double QD = lc.q_dim(), KD = lc.kv_dim(), F = lc.d_ff;
    // One chunk through the layer (the Runner's scratch): normed input, q/att, k/v, gate/up/h,
    // probs; post-norm families also the sub-block outputs before their norms.
    const double post = m.arch->residual.post_norm ? 2 * N * C + 2 * N : 0;
    acts = std::max(acts, f * (3 * N * C + 2 * N * QD + 2 * N * KD + 3 * N * F + post + N * lc.n_head * double(T)));
    if (!compensate) continue;
    for (double in : {QD, F}) {
      // refit_projection in double: the Gram matrix [in, in], the kept block [k, k], W [C, in],
      // W·G[:, K] [C, k] and G[:, K] [in, k] with k <= in; the hook's chunk buffers.
      refit = std::max(refit, 8 * (3 * in * in + 2 * C * in) + f * 3 * N * std::max(in, C));
      refitted += dt * C * in + f * C;  // the refitted weight (storage dtype) and bias (fp32)
    }
  }
  MemoryEstimate e;
  auto add = [&](const std::string& what, double bytes) {
    e.terms.push_back({what, bytes});
    e.total += bytes;
  };
  add("runtime", 256.0 * (1 << 20));
  add("residual stream of every window S*T*C*4", f * double(S) * T * C);
  add("fp32 weights of one layer", f32_storage ? 0 : f * layer_big);
  add("mapped pages (one layer)", (f32_storage ? 2 : 1) * dt * layer_big);
  add("activations of one chunk of windows", acts);
  if (compensate) {
    add("refit of one module (Gram matrix and solve, double)", refit);
    add("refitted o_proj / down_proj of every layer", refitted);
  }
  return e;
}

MemoryEstimate estimate_sublayer_search_memory(const Model& m, int S, int T, int chunk_windows) {
  MemoryEstimate e = estimate_statistics_memory(m, S, T, chunk_windows, false);
  const double f = 4, C = m.cfg.hidden, V = m.cfg.vocab, N = double(std::min(S, std::max(1, chunk_windows))) * T;
  auto add = [&](const std::string& what, double bytes) {
    e.terms.push_back({what, bytes});
    e.total += bytes;
  };
  add("three more residual streams S*T*C*4 (search copies, masked pass)", 3 * f * double(S) * T * C);
  add("normed input and logits of one chunk", f * N * (C + V));
  // linear_any_dtype converts a non-fp32 lm_head 4096 rows at a time.
  if (m.lm_head().dtype != DType::F32) add("lm_head row block in fp32", f * std::min(4096.0, V) * C);
  return e;
}

double gradient_flops(const Model& m, int B, int T, bool global_grads, const std::vector<uint8_t>& layer_grads,
                      bool keep_activations) {
  const double N = double(B) * T, C = m.cfg.hidden, V = m.cfg.vocab;
  const int L = int(m.cfg.layers.size());
  auto wants = [&](int l) { return layer_grads.empty() || (size_t(l) < layer_grads.size() && layer_grads[size_t(l)]); };
  const int lowest = lowest_backward_layer(m, global_grads, layer_grads);
  double f = 0;
  for (int l = 0; l < L; l++) {
    const LayerConfig& lc = m.cfg.layers[size_t(l)];
    // Every projection of the layer is one GEMM of N rows; a bias is N adds forward and N adds
    // (its gradient, the sum over rows) backward.
    double macs = 0, bias_len = 0;
    for (int r = 0; r < kNumLayerRoles; r++) {
      const Tensor& t = m.layers[size_t(l)].w[size_t(r)];
      if (t.empty()) continue;
      if (role_desc(*m.arch, Role(r)).is_bias) bias_len += double(t.numel());
      else if (is_matrix_role(Role(r))) macs += double(t.numel());
    }
    const double mm = 2 * N * macs, bias = N * bias_len;
    const double att_fwd = 4.0 * B * double(T) * T * lc.head_dim * lc.n_head;  // QK^T, PV
    const double att_bwd = 8.0 * B * double(T) * T * lc.head_dim * lc.n_head;  // dV, dP, dQ, dK
    f += mm + bias + att_fwd;                                // forward
    if (l < lowest) continue;
    if (!keep_activations) f += mm + bias + att_fwd;         // recompute
    f += mm + att_bwd;                                       // input gradients
    if (wants(l)) f += mm + bias;                            // weight (and bias) gradients
  }
  f += 2 * N * C * V;                                        // lm_head forward
  f += 2 * N * C * V * (global_grads ? 2 : 1);               // dxn (+ lm_head weight gradient)
  return f;
}

double physical_memory_bytes() { return double(::sysconf(_SC_PHYS_PAGES)) * double(::sysconf(_SC_PAGE_SIZE)); }

double parse_byte_size(const std::string& s, const std::string& flag) {
  auto bad = [&] { return UserError(flag + " '" + s + "' is not a size (e.g. 16G, 512M, 20GiB, or bytes)"); };
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) i++;
  if (i == 0) throw bad();
  double v = 0;
  try {
    size_t used = 0;
    v = std::stod(s.substr(0, i), &used);
    if (used != i) throw bad();
  } catch (const std::logic_error&) {
    throw bad();
  }
  std::string unit;
  for (size_t j = i; j < s.size(); j++) unit += char(std::toupper(static_cast<unsigned char>(s[j])));
  double mul = 1;
  if (unit.empty() || unit == "B") mul = 1;
  else if (unit == "K" || unit == "KB" || unit == "KIB") mul = 1024.0;
  else if (unit == "M" || unit == "MB" || unit == "MIB") mul = 1024.0 * 1024;
  else if (unit == "G" || unit == "GB" || unit == "GIB") mul = 1024.0 * 1024 * 1024;
  else if (unit == "T" || unit == "TB" || unit == "TIB") mul = 1024.0 * 1024 * 1024 * 1024;
  else throw bad();
  if (!(v > 0) || !std::isfinite(v)) throw bad();
  return v * mul;
}

}  // namespace llmprune
