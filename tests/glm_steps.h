#pragma once
// The stepping loop of THUDM's official-output fixtures (fixtures/chatglm/*.data, chatglm.cpp's
// tests): a prefill of the first ids, then two cached decode steps, each returning the final-norm
// hidden states [T, hidden] the fixture holds. Shared by chatglm_test (v2/v3/GLM-4) and
// chatglm_v1_test (v1, with GLM's position/block/prefix layout).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "model/forward.h"
#include "model/model.h"

namespace llmprune::test {

// steps[s]: the ids fed at step s. glm_layout: set token_layout's positions, block positions and
// prefix (ChatGLM-6B v1); false runs plain causal positions.
inline std::vector<std::vector<float>> run_glm_steps(const Model& m, const std::vector<std::vector<int32_t>>& steps,
                                                     bool glm_layout) {
  Runner r(m);
  KVCache cache(m, 1, 8);
  LayerF32 w;
  std::vector<std::vector<float>> out;
  const int C = m.cfg.hidden;
  for (const std::vector<int32_t>& ids : steps) {
    const int T = int(ids.size());
    std::vector<float> x(size_t(T) * C), xn(size_t(T) * C), logits(size_t(T) * m.cfg.vocab);
    if (glm_layout) r.set_layout(token_layout(m, ids.data(), 1, T, &cache), 1, T);
    r.embed(ids.data(), T, x.data());
    for (int l = 0; l < m.cfg.n_layer; l++) {
      w.load(m, l);
      r.block_forward(l, w, x.data(), 1, T, &cache, nullptr);
    }
    cache.len += T;
    r.head_forward(x.data(), T, xn.data(), nullptr, nullptr, logits.data());
    out.push_back(xn);
  }
  return out;
}

inline double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double d = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); i++) d = std::max(d, double(std::fabs(a[i] - b[i])));
  return d;
}

}  // namespace llmprune::test
