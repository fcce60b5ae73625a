#pragma once
// Gradient checks shared by the model tests (model_golden, chatglm, chatglm_v1): a sink that keeps
// every weight gradient by tensor name, the same under the checkpoint's stored (fused) names, and
// layer 0's analytic gradients against central finite differences of the mean next-token loss.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "arch/arch.h"
#include "golden.h"
#include "model/backward.h"
#include "model/forward.h"
#include "model/model.h"

namespace llmprune::test {

// Keeps every gradient by tensor name (layer_tensor_name for layer roles, the pattern for globals).
struct CollectSink : GradSink {
  const Model& m;
  std::map<std::string, GradStats> grads;
  explicit CollectSink(const Model& mm) : m(mm) {}
  void on_layer(int l, const LayerF32&, std::array<GradStats, kNumLayerRoles>& g) override {
    for (int r = 0; r < kNumLayerRoles; r++)
      if (!g[size_t(r)].g.empty()) grads[layer_tensor_name(*m.arch, Role(r), l)] = std::move(g[size_t(r)]);
  }
  void on_global(std::array<const float*, kNumGlobalRoles>, std::array<GradStats, kNumGlobalRoles>& g) override {
    for (int r = 0; r < kNumGlobalRoles; r++)
      if (!g[size_t(r)].g.empty()) grads[m.arch->global[size_t(r)].pattern] = std::move(g[size_t(r)]);
  }
};

// A stored tensor's gradient and Fisher diagonal (double), as the goldens hold them.
struct StoredGrad {
  std::vector<double> g, a;
};

// Every gradient the sink kept, under the checkpoint's own tensor names: a fused tensor (ChatGLM's
// query_key_value and dense_h_to_4h, v1's per-head interleaved query_key_value) is reassembled from
// its role views with the arch's row mapping (fused_row); globals keep their names.
inline std::map<std::string, StoredGrad> stored_grads(const Model& m, const std::map<std::string, GradStats>& grads) {
  std::map<std::string, StoredGrad> out;
  auto find = [&](const std::string& name) -> const GradStats* {
    auto it = grads.find(name);
    EXPECT_TRUE(it != grads.end()) << "no gradient for " << name;
    return it == grads.end() ? nullptr : &it->second;
  };
  for (int l = 0; l < m.cfg.n_layer; l++)
    for (int r = 0; r < kNumLayerRoles; r++) {
      if (m.layers[size_t(l)][Role(r)].empty()) continue;
      const FusedTensor* f = fused_of(*m.arch, Role(r));
      if (!f) {
        const std::string name = layer_tensor_name(*m.arch, Role(r), l);
        if (const GradStats* gs = find(name)) out[name] = {{gs->g.begin(), gs->g.end()}, {gs->a.begin(), gs->a.end()}};
        continue;
      }
      if (f->parts.front() != Role(r)) continue;
      int64_t numel = 0;
      for (Role part : f->parts) numel += m.layers[size_t(l)][part].numel();
      StoredGrad fused{std::vector<double>(size_t(numel)), std::vector<double>(size_t(numel))};
      int64_t offset = 0;  // rows of the parts before this one
      for (size_t p = 0; p < f->parts.size(); p++) {
        const Tensor& t = m.layers[size_t(l)][f->parts[p]];
        const GradStats* gs = find(layer_tensor_name(*m.arch, f->parts[p], l));
        if (!gs) return out;
        const int64_t rows = t.dim(0), row_len = t.numel() / rows;
        for (int64_t i = 0; i < rows; i++)
          for (int64_t c = 0; c < row_len; c++) {
            const size_t to = size_t(fused_row(*f, int(p), i, offset, rows, m.cfg.head_dim) * row_len + c);
            fused.g.at(to) = gs->g[size_t(i * row_len + c)];
            if (!gs->a.empty()) fused.a.at(to) = gs->a[size_t(i * row_len + c)];
          }
        offset += rows;
      }
      out[fused_tensor_name(*f, l)] = std::move(fused);
    }
  for (int r = 0; r < kNumGlobalRoles; r++) {
    const char* pattern = m.arch->global[size_t(r)].pattern;
    if (!pattern) continue;
    auto it = grads.find(pattern);
    if (it != grads.end()) out[pattern] = {{it->second.g.begin(), it->second.g.end()}, {it->second.a.begin(), it->second.a.end()}};
  }
  return out;
}

// The logits and mean loss of the golden file's "fwd/ids" [B, T] against "fwd/logits" (within
// atol / rtol) and "fwd/loss" (1e-5).
inline void expect_golden_logits_and_loss(const Model& m, const golden::GoldenFile& g, double atol, double rtol) {
  const auto& gi = g.get("fwd/ids");
  std::vector<int32_t> ids(gi.values.begin(), gi.values.end());
  const int B = int(gi.shape[0]), T = int(gi.shape[1]);
  Runner r(m);
  std::vector<float> logits(size_t(B) * T * m.cfg.vocab);
  r.forward(ids.data(), B, T, logits.data());
  std::vector<double> got(logits.begin(), logits.end());
  EXPECT_TRUE(golden::allclose(got.data(), g.get("fwd/logits"), atol, rtol));
  NllResult n = sequence_nll(r, ids.data(), B, T);
  EXPECT_NEAR(n.nll_sum / double(n.count), g.get("fwd/loss").values[0], 1e-5);
}

// Every stored tensor's gradient and Fisher diagonal (a per-sample pass) against the golden file's
// "grad/<stored name>" and "fisher/<stored name>" entries (within 1e-4 of the entry's largest
// magnitude + 1e-3 relative, Fisher 2e-3); returns how many tensors were compared.
inline int expect_stored_grads_match_golden(const Model& m, const std::map<std::string, GradStats>& grads,
                                            const golden::GoldenFile& g) {
  int checked = 0;
  for (const auto& [name, st] : stored_grads(m, grads)) {
    for (int which = 0; which < 2; which++) {
      const auto& ref = g.get((which ? "fisher/" : "grad/") + name);
      const std::vector<double>& got = which ? st.a : st.g;
      if (got.size() != ref.values.size()) {
        ADD_FAILURE() << name << ": " << got.size() << " values, the golden has " << ref.values.size();
        continue;
      }
      double mx = 0;
      for (double v : ref.values) mx = std::max(mx, std::abs(v));
      EXPECT_TRUE(golden::allclose(got.data(), ref, 1e-4 * mx, which ? 2e-3 : 1e-3)) << (which ? "fisher " : "grad ") << name;
    }
    checked++;
  }
  return checked;
}

// For each role of layer 0 and each element index: the backward's gradient equals the central
// difference (step 1e-2 on an fp32 copy of the tensor) of the mean NLL of `ids` (one sequence)
// within 2e-3 + 2e-2 |fd|.
inline void expect_layer0_grads_match_fd(const Model& m, const std::vector<int32_t>& ids, const std::vector<Role>& roles,
                                         const std::vector<int64_t>& indices) {
  struct Layer0 : GradSink {
    std::array<GradStats, kNumLayerRoles> g;
    void on_layer(int l, const LayerF32&, std::array<GradStats, kNumLayerRoles>& grads) override {
      if (l == 0) g = grads;
    }
  } sink;
  GradOptions opt;
  compute_gradients(m, ids.data(), 1, int(ids.size()), opt, sink);
  auto loss = [&](const Model& mm) {
    Runner r(mm);
    NllResult n = sequence_nll(r, ids.data(), 1, int(ids.size()));
    return n.nll_sum / double(n.count);
  };
  for (Role role : roles) {
    for (int64_t i : indices) {
      Model mp = m, mm = m;
      Tensor& tp = mp.layers[0][role];
      tp = tp.converted(DType::F32);
      Tensor& tm = mm.layers[0][role];
      tm = tm.converted(DType::F32);
      const float h = 1e-2f;
      tp.f32_mut()[i] += h;
      tm.f32_mut()[i] -= h;
      const double fd = (loss(mp) - loss(mm)) / (2 * h);
      const double an = sink.g[size_t(role)].g.at(size_t(i));
      EXPECT_NEAR(an, fd, 2e-3 + 2e-2 * std::fabs(fd)) << role_desc(*m.arch, role).name << "[" << i << "]";
    }
  }
}

}  // namespace llmprune::test
