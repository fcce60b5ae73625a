#include "importance/activation_stats.h"

#include <cblas.h>

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "model/forward.h"

namespace llmprune {

void ChannelStats::add(const float* x, int64_t rows, int64_t cols) {
  if (rows <= 0) return;
  if (mean.empty()) mean.assign(size_t(cols), 0.0), m2.assign(size_t(cols), 0.0), sq.assign(size_t(cols), 0.0);
  if (int64_t(mean.size()) != cols) throw RuntimeError("internal: ChannelStats width changed");
  std::vector<double> bmean(size_t(cols), 0.0), bm2(size_t(cols), 0.0), bsq(size_t(cols), 0.0);
  // The block's own mean, then its squared deviations from it (two passes over the block).
  for (int64_t r = 0; r < rows; r++) {
    const float* row = x + r * cols;
    for (int64_t j = 0; j < cols; j++) {
      const double v = row[j];
      bmean[size_t(j)] += v;
      bsq[size_t(j)] += v * v;
    }
  }
  for (double& v : bmean) v /= double(rows);
  for (int64_t r = 0; r < rows; r++) {
    const float* row = x + r * cols;
    for (int64_t j = 0; j < cols; j++) {
      const double d = double(row[j]) - bmean[size_t(j)];
      bm2[size_t(j)] += d * d;
    }
  }
  // Chan et al.'s parallel update: merge (count, mean, m2) with the block's.
  const double na = double(count), nb = double(rows), n = na + nb;
  for (int64_t j = 0; j < cols; j++) {
    const double delta = bmean[size_t(j)] - mean[size_t(j)];
    mean[size_t(j)] += delta * nb / n;
    m2[size_t(j)] += bm2[size_t(j)] + delta * delta * na * nb / n;
    sq[size_t(j)] += bsq[size_t(j)];
  }
  count += rows;
}

void GramMatrix::add(const float* x, int64_t rows, int64_t cols) {
  if (rows <= 0) return;
  if (g.empty()) n = cols, g.assign(size_t(cols * cols), 0.0);
  if (n != cols) throw RuntimeError("internal: GramMatrix width changed");
  const int64_t block = 256;  // rows converted to double at a time
  std::vector<double> xd(size_t(std::min(block, rows) * cols));
  for (int64_t r0 = 0; r0 < rows; r0 += block) {
    const int64_t nr = std::min(block, rows - r0);
    for (int64_t i = 0; i < nr * cols; i++) xd[size_t(i)] = x[r0 * cols + i];
    // g (upper) += xd^T xd, xd: [nr, cols] row-major
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, int(cols), int(nr), 1.0, xd.data(), int(cols), 1.0, g.data(),
                int(cols));
  }
  count += rows;
}

void GramMatrix::symmetrize() {
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < i; j++) g[size_t(i * n + j)] = g[size_t(j * n + i)];
}

namespace {

// Records the inputs of o_proj and down_proj of the layer being run; changes no output.
class StatsHook : public LinearHook {
 public:
  explicit StatsHook(LayerInputStats& s) : s_(s) {}
  void forward(int, Role r, const float* x, float*, int N, int in, int) override {
    if (r == Role::O) s_.o_in.add(x, N, in);
    if (r == Role::Down) s_.down_in.add(x, N, in);
  }
  void backward(int, Role, const float*, const float*, float*, int, int, int) override {
    throw RuntimeError("internal: the statistics hook has no backward");
  }

 private:
  LayerInputStats& s_;
};

}  // namespace

std::vector<LayerInputStats> collect_activation_stats(const Model& m, const std::vector<int32_t>& tokens, int S, int T,
                                                      const ActivationStatsOptions& opt) {
  if (int64_t(tokens.size()) != int64_t(S) * T) throw RuntimeError("internal: calibration tokens are not S x T");
  const int C = m.cfg.hidden, L = int(m.layers.size());
  const int chunk = std::max(1, opt.chunk_windows);
  std::vector<LayerInputStats> out(static_cast<size_t>(L));
  Runner runner(m, T);
  runner.set_compute(opt.compute);
  std::vector<float> x(size_t(S) * T * C);  // the residual stream of every window: [S*T, C]
  runner.embed(tokens.data(), S * T, x.data());
  LayerF32 w;
  for (int l = 0; l < L; l++) {
    w.load(m, l, matrix_load_for(opt.compute, false));
    StatsHook hook(out[size_t(l)]);
    runner.set_hook(&hook);
    for (int s0 = 0; s0 < S; s0 += chunk) {
      const int b = std::min(chunk, S - s0);
      runner.block_forward(l, w, x.data() + size_t(s0) * T * C, b, T, nullptr, nullptr);
    }
    runner.set_hook(nullptr);
  }
  return out;
}

}  // namespace llmprune
