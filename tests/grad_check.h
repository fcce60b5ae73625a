#pragma once
// Gradient checks shared by the model tests (model_golden, chatglm, chatglm_v1): a sink that keeps
// every weight gradient by tensor name, and layer 0's analytic gradients against central finite
// differences of the mean next-token loss.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "arch/arch.h"
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
