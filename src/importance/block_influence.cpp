#include "importance/block_influence.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "model/forward.h"

namespace llmprune {

void add_cosines(const float* a, const float* b, int64_t N, int64_t C, double& sum) {
  double s = 0;
#pragma omp parallel for reduction(+ : s) if (N * C > 65536)
  for (int64_t n = 0; n < N; n++) {
    const float* x = a + n * C;
    const float* y = b + n * C;
    double xy = 0, xx = 0, yy = 0;
    for (int64_t c = 0; c < C; c++) {
      xy += double(x[c]) * y[c];
      xx += double(x[c]) * x[c];
      yy += double(y[c]) * y[c];
    }
    s += (xx > 0 && yy > 0) ? xy / std::sqrt(xx * yy) : 1.0;
  }
  sum += s;
}

BlockInfluence block_influence(const Model& m, const std::vector<int32_t>& tokens, int S, int T,
                               const BlockInfluenceOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  if (int64_t(tokens.size()) != int64_t(S) * T) throw RuntimeError("internal: calibration tokens are not S x T");
  const int C = m.cfg.hidden, L = int(m.layers.size());
  const int chunk = std::max(1, opt.chunk_windows);
  const int64_t rows = int64_t(S) * T;
  Runner runner(m, T);
  runner.skip_sublayers(opt.skip_attn, opt.skip_mlp);
  std::vector<float> x(size_t(rows) * C);  // the residual stream of every window: [S*T, C]
  runner.embed(tokens.data(), int(rows), x.data());
  BlockInfluence bi;
  bi.layer.assign(size_t(L), 0.0);
  bi.attn.assign(size_t(L), 0.0);
  bi.mlp.assign(size_t(L), 0.0);
  LayerF32 w;
  LayerActs acts;  // x_mid: the residual between the attention and the MLP
  std::vector<float> x_in;
  for (int l = 0; l < L; l++) {
    w.load(m, l);
    double cos_layer = 0, cos_attn = 0, cos_mlp = 0;
    for (int s0 = 0; s0 < S; s0 += chunk) {
      const int b = std::min(chunk, S - s0);
      const int64_t n = int64_t(b) * T;
      float* xc = x.data() + size_t(s0) * T * C;
      x_in.assign(xc, xc + n * C);
      runner.block_forward(l, w, xc, b, T, nullptr, &acts);
      add_cosines(x_in.data(), xc, n, C, cos_layer);
      add_cosines(x_in.data(), acts.x_mid.data(), n, C, cos_attn);
      add_cosines(acts.x_mid.data(), xc, n, C, cos_mlp);
    }
    bi.layer[size_t(l)] = 1.0 - cos_layer / double(rows);
    bi.attn[size_t(l)] = runner.has_attention(l) ? 1.0 - cos_attn / double(rows) : 0.0;
    bi.mlp[size_t(l)] = runner.has_mlp(l) ? 1.0 - cos_mlp / double(rows) : 0.0;
  }
  bi.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return bi;
}

}  // namespace llmprune
