// Activation statistics, FLAP scores and allocation, bias / least-squares compensation:
// statistics against a direct double computation and the torch oracle (tools/flap_reference.py),
// the compensation against closed-form optima solved here in double.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "graph/groups.h"
#include "importance/activation_stats.h"
#include "importance/flap.h"
#include "model/forward.h"
#include "model/gguf_model.h"
#include "model_factory.h"
#include "prune/allocation.h"
#include "prune/compensate.h"
#include "prune/plan.h"
#include "prune/summary.h"
#include "prune/surgery.h"
#include "report/report.h"
#include "test_util.h"

namespace llmprune {
namespace {

// Solves A x = b (n x n, row-major) by Gaussian elimination with partial pivoting, in double.
std::vector<double> solve(std::vector<double> A, std::vector<double> b, int n) {
  for (int c = 0; c < n; c++) {
    int p = c;
    for (int r = c + 1; r < n; r++)
      if (std::abs(A[size_t(r * n + c)]) > std::abs(A[size_t(p * n + c)])) p = r;
    for (int k = 0; k < n; k++) std::swap(A[size_t(c * n + k)], A[size_t(p * n + k)]);
    std::swap(b[size_t(c)], b[size_t(p)]);
    for (int r = c + 1; r < n; r++) {
      const double f = A[size_t(r * n + c)] / A[size_t(c * n + c)];
      for (int k = c; k < n; k++) A[size_t(r * n + k)] -= f * A[size_t(c * n + k)];
      b[size_t(r)] -= f * b[size_t(c)];
    }
  }
  std::vector<double> x(static_cast<size_t>(n));
  for (int r = n - 1; r >= 0; r--) {
    double s = b[size_t(r)];
    for (int k = r + 1; k < n; k++) s -= A[size_t(r * n + k)] * x[size_t(k)];
    x[size_t(r)] = s / A[size_t(r * n + r)];
  }
  return x;
}

TEST(FlapStats, WelfordGramAndMetricsMatchADirectComputation) {
  auto spec = test::RandomModelSpec::uniform(2, 4, 2, 24);
  Model m = test::make_random_model(spec);
  const int S = 5, T = 7, N = S * T, C = m.cfg.hidden;
  auto tokens = test::random_tokens(N, m.cfg.vocab, 3);
  ActivationStatsOptions opt;
  opt.chunk_windows = 2;  // 2 + 2 + 1 windows: the chunk merge is exercised
  auto stats = collect_activation_stats(m, tokens, S, T, opt);
  ASSERT_EQ(stats.size(), 2u);
  // Direct: all windows in one layer forward, activations kept, statistics in two passes.
  Runner r(m, T);
  std::vector<float> x(size_t(N) * C);
  r.embed(tokens.data(), N, x.data());
  LayerF32 w;
  for (int l = 0; l < 2; l++) {
    w.load(m, l);
    LayerActs acts;
    r.block_forward(l, w, x.data(), S, T, nullptr, &acts);
    const LayerConfig& lc = m.cfg.layers[size_t(l)];
    for (auto [act, cols, st] : {std::tuple{&acts.att, lc.n_head * lc.head_dim, &stats[size_t(l)].o_in},
                                 std::tuple{&acts.h, lc.d_ff, &stats[size_t(l)].down_in}}) {
      ASSERT_EQ(st->count, N);
      for (int j = 0; j < cols; j++) {
        double mean = 0, sq = 0, m2 = 0;
        for (int n = 0; n < N; n++) mean += (*act)[size_t(n * cols + j)], sq += std::pow((*act)[size_t(n * cols + j)], 2);
        mean /= N;
        for (int n = 0; n < N; n++) m2 += std::pow((*act)[size_t(n * cols + j)] - mean, 2);
        EXPECT_NEAR(st->mean[size_t(j)], mean, 1e-6 * (1 + std::abs(mean))) << "layer " << l << " channel " << j;
        EXPECT_NEAR(st->variance(j), m2 / N, 1e-6 * (1 + m2 / N));
        EXPECT_NEAR(st->mean_square(j), sq / N, 1e-6 * (1 + sq / N));
      }
      // Gram: blocks of 3 rows vs the triple loop.
      GramMatrix g;
      for (int n0 = 0; n0 < N; n0 += 3) g.add(act->data() + size_t(n0) * cols, std::min(3, N - n0), cols);
      g.symmetrize();
      for (int a = 0; a < cols; a++)
        for (int b = 0; b < cols; b++) {
          double s = 0;
          for (int n = 0; n < N; n++) s += double((*act)[size_t(n * cols + a)]) * (*act)[size_t(n * cols + b)];
          EXPECT_NEAR(g.g[size_t(a * cols + b)], s, 1e-9 * (1 + std::abs(s)));
        }
    }
    // Metrics from the definitions: WIFV Var·Σ_i W_ij², IFV Var, WIFN mean_i |W_ij|·sqrt(E[x²]).
    const Tensor& Wo = m.layers[size_t(l)][Role::O];
    const float* W = Wo.f32();
    const int64_t out = Wo.dim(0), in = Wo.dim(1);
    auto wifv = flap_channel_metric(FlapMetric::Wifv, stats[size_t(l)].o_in, W, out, in);
    auto ifv = flap_channel_metric(FlapMetric::Ifv, stats[size_t(l)].o_in, W, out, in);
    auto wifn = flap_channel_metric(FlapMetric::Wifn, stats[size_t(l)].o_in, W, out, in);
    for (int64_t j = 0; j < in; j++) {
      double s2 = 0, s1 = 0;
      for (int64_t i = 0; i < out; i++) s2 += double(W[i * in + j]) * W[i * in + j], s1 += std::abs(double(W[i * in + j]));
      const ChannelStats& st = stats[size_t(l)].o_in;
      EXPECT_DOUBLE_EQ(ifv[size_t(j)], st.variance(j));
      EXPECT_NEAR(wifv[size_t(j)], st.variance(j) * s2, 1e-12 * (1 + wifv[size_t(j)]));
      EXPECT_NEAR(wifn[size_t(j)], s1 / double(out) * std::sqrt(st.mean_square(j)), 1e-12 * (1 + wifn[size_t(j)]));
    }
  }
}

TEST(FlapScores, GqaKvGroupAggregatesAllItsQueryHeads) {
  auto spec = test::RandomModelSpec::uniform(2, 6, 2, 16);
  Model m = test::make_random_model(spec);
  auto tokens = test::random_tokens(4 * 9, m.cfg.vocab, 5);
  auto stats = collect_activation_stats(m, tokens, 4, 9);
  GroupOptions go;
  go.mlp = false;
  go.gqa_unit = GqaUnit::KvGroup;
  auto kv = discover_groups(m, go);
  go.gqa_unit = GqaUnit::Query;
  auto q = discover_groups(m, go);
  ASSERT_EQ(kv.size(), 4u);
  ASSERT_EQ(q.size(), 12u);
  FlapScores skv = flap_scores(m, kv, stats, FlapMetric::Wifv), sq = flap_scores(m, q, stats, FlapMetric::Wifv);
  for (size_t g = 0; g < kv.size(); g++) {
    ASSERT_EQ(kv[g].kind, UnitKind::KvGroup);
    double raw = 0, z = 0;
    for (size_t h = 0; h < q.size(); h++)
      if (q[h].layer == kv[g].layer && q[h].index / 3 == kv[g].index) raw += sq.raw[h], z += sq.standardized[h];
    EXPECT_NEAR(skv.raw[g], raw, 1e-9 * raw);            // all 3 query heads' o_proj columns
    EXPECT_NEAR(skv.standardized[g], z / 3, 1e-9);       // mean over the same channels
  }
}

// The torch oracle's selections (tools/flap_reference.py) on both fixtures.
void check_reference(const std::string& model) {
  std::ifstream in(test::source_dir() / "tests/golden" / ("flap_" + model + ".json"));
  ASSERT_TRUE(in) << "missing golden for " << model;
  auto g = nlohmann::json::parse(in);
  Model m = Model::load(test::fixture_model(model));
  const int S = g["windows"], T = g["seq"];
  std::vector<int32_t> ids = g["ids"].get<std::vector<int32_t>>();
  auto stats = collect_activation_stats(m, ids, S, T);
  for (size_t l = 0; l < stats.size(); l++) {
    const auto& ref = g["stats"][l];
    auto near = [&](const std::vector<double>& got, const char* key, bool var, bool sq) {
      std::vector<double> want = ref[key].get<std::vector<double>>();
      for (size_t j = 0; j < want.size(); j++) {
        (void)got;
        double v = var ? (key[0] == 'o' ? stats[l].o_in : stats[l].down_in).variance(int64_t(j))
                       : sq ? stats[l].down_in.mean_square(int64_t(j))
                            : (key[0] == 'o' ? stats[l].o_in : stats[l].down_in).mean[j];
        EXPECT_NEAR(v, want[j], 1e-4 * std::abs(want[j]) + 1e-6) << model << " layer " << l << " " << key << "[" << j << "]";
      }
    };
    near({}, "o_mean", false, false);
    near({}, "o_var", true, false);
    near({}, "down_mean", false, false);
    near({}, "down_var", true, false);
    near({}, "down_sq", false, true);
  }
  for (const auto& c : g["cases"]) {
    PlanOptions po;
    po.attn_ratio = po.mlp_ratio = c["ratio"].get<double>();
    po.gqa_unit = c["gqa_unit"] == "query" ? GqaUnit::Query : GqaUnit::KvGroup;
    auto groups = discover_groups(m, plan_group_options(po));
    FlapScores fs = flap_scores(m, groups, stats, parse_flap_metric(c["metric"]));
    AllocationOptions ao;
    ao.allocation = parse_allocation(c["allocation"]);
    ao.ratio = po.attn_ratio;
    KeepTargets t = allocation_keep_targets(m, po, ao, groups, &fs.standardized);
    auto pick = select_removals(m, groups, fs.raw, po, t, 1, 1);
    std::map<std::string, std::vector<int>> got;
    for (size_t i : pick) got[std::string(unit_kind_name(groups[i].kind)) + "/" + std::to_string(groups[i].layer)].push_back(groups[i].index);
    for (auto& [k, v] : got) std::sort(v.begin(), v.end());
    auto want = c["removed"].get<std::map<std::string, std::vector<int>>>();
    EXPECT_EQ(got, want) << model << " " << c["metric"] << " " << c["allocation"] << " " << c["ratio"] << " " << c["gqa_unit"];
  }
}

TEST(FlapSelection, MatchesTheTorchReferenceMha) { check_reference("kjv-llama-mha"); }
TEST(FlapSelection, MatchesTheTorchReferenceGqa) { check_reference("kjv-llama-gqa-tied"); }

TEST(FlapAllocation, LogIncreasingAndLayerRatios) {
  auto r = log_increasing_ratios(6, 0.2, 0.06);
  ASSERT_EQ(r.size(), 6u);
  EXPECT_DOUBLE_EQ(r[0], 0.06);
  double mean = 0;
  for (size_t l = 0; l < r.size(); l++) {
    mean += r[l] / 6;
    if (l > 0) EXPECT_GT(r[l], r[l - 1]);
  }
  EXPECT_NEAR(mean, 0.2, 1e-12);
  EXPECT_THROW(log_increasing_ratios(6, 0.9, 0.0), UserError);  // last layer would need >= 1
  EXPECT_EQ(parse_layer_ratios("0.1,0,0.5", 3), (std::vector<double>{0.1, 0, 0.5}));
  EXPECT_THROW(parse_layer_ratios("0.1,0.2", 3), UserError);
  EXPECT_THROW(parse_layer_ratios("0.1,1.0,0.2", 3), UserError);
  EXPECT_THROW(parse_layer_ratios("0.1,x,0.2", 3), UserError);
}

TEST(Compensation, BiasKeepsTheMeanOutput) {
  const int N = 300, in = 12, out = 5;
  auto X = test::random_vec(size_t(N * in), 7);
  for (int n = 0; n < N; n++)
    for (int j = 0; j < in; j++) X[size_t(n * in + j)] += 0.5f * float(j % 4);  // non-zero means
  auto W = test::random_vec(size_t(out * in), 8);
  std::vector<int64_t> kept = {0, 1, 4, 6, 7, 10};
  ChannelStats st;
  st.add(X.data(), 100, in), st.add(X.data() + 100 * in, 200, in);
  Refit r = refit_projection(W.data(), out, in, kept, st, nullptr, Compensation::Bias, 0.01, "test");
  for (int i = 0; i < out; i++) {
    double full = 0, pruned = 0;
    for (int n = 0; n < N; n++) {
      for (int j = 0; j < in; j++) full += double(W[size_t(i * in + j)]) * X[size_t(n * in + j)];
      for (size_t c = 0; c < kept.size(); c++) pruned += double(r.weight[i * kept.size() + c]) * X[size_t(n * in + kept[c])];
      pruned += r.bias[size_t(i)];
    }
    EXPECT_NEAR(pruned / N, full / N, 1e-5) << "output " << i;
  }
}

TEST(Compensation, LeastSquaresReachesTheNormalEquationsOptimum) {
  const int N = 60, in = 6, out = 3;
  auto X = test::random_vec(size_t(N * in), 11);
  for (int n = 0; n < N; n++) X[size_t(n * in + 2)] += 1.5f;  // a mean for the centred variant
  auto W = test::random_vec(size_t(out * in), 12);
  const std::vector<int64_t> K = {0, 2, 3, 5};
  const int k = 4;
  ChannelStats st;
  GramMatrix g;
  st.add(X.data(), N, in);
  g.add(X.data(), N, in);
  g.symmetrize();
  auto Xd = [&](int n, int64_t j) { return double(X[size_t(n * in + j)]); };
  // lstsq: (X_K^T X_K + λI) w' = X_K^T X w for each output row; λ = d · mean diag(X_K^T X_K).
  const double d = 1e-3;
  Refit r = refit_projection(W.data(), out, in, K, st, &g, Compensation::Lstsq, d, "test");
  std::vector<double> A(size_t(k * k));
  double md = 0;
  for (int a = 0; a < k; a++)
    for (int b = 0; b < k; b++)
      for (int n = 0; n < N; n++) A[size_t(a * k + b)] += Xd(n, K[size_t(a)]) * Xd(n, K[size_t(b)]);
  for (int a = 0; a < k; a++) md += A[size_t(a * k + a)] / k;
  for (int a = 0; a < k; a++) A[size_t(a * k + a)] += d * md;
  for (int i = 0; i < out; i++) {
    std::vector<double> rhs(size_t(k), 0.0);
    for (int a = 0; a < k; a++)
      for (int n = 0; n < N; n++) {
        double y = 0;
        for (int j = 0; j < in; j++) y += double(W[size_t(i * in + j)]) * Xd(n, j);
        rhs[size_t(a)] += Xd(n, K[size_t(a)]) * y;
      }
    auto w = solve(A, rhs, k);
    for (int a = 0; a < k; a++) EXPECT_NEAR(r.weight[size_t(i * k + a)], w[size_t(a)], 1e-5 * (1 + std::abs(w[size_t(a)])));
    EXPECT_EQ(r.bias[size_t(i)], 0.0);
  }
  // bias+lstsq at negligible damping: ordinary least squares with an intercept, [X_K 1].
  Refit rb = refit_projection(W.data(), out, in, K, st, &g, Compensation::BiasLstsq, 1e-12, "test");
  const int k1 = k + 1;
  std::vector<double> A1(size_t(k1 * k1), 0.0);
  auto xa = [&](int n, int a) { return a < k ? Xd(n, K[size_t(a)]) : 1.0; };
  for (int a = 0; a < k1; a++)
    for (int b = 0; b < k1; b++)
      for (int n = 0; n < N; n++) A1[size_t(a * k1 + b)] += xa(n, a) * xa(n, b);
  for (int i = 0; i < out; i++) {
    std::vector<double> rhs(size_t(k1), 0.0);
    for (int n = 0; n < N; n++) {
      double y = 0;
      for (int j = 0; j < in; j++) y += double(W[size_t(i * in + j)]) * Xd(n, j);
      for (int a = 0; a < k1; a++) rhs[size_t(a)] += xa(n, a) * y;
    }
    auto w = solve(A1, rhs, k1);
    for (int a = 0; a < k; a++) EXPECT_NEAR(rb.weight[size_t(i * k + a)], w[size_t(a)], 1e-4 * (1 + std::abs(w[size_t(a)])));
    EXPECT_NEAR(rb.bias[size_t(i)], w[size_t(k)], 1e-4 * (1 + std::abs(w[size_t(k)])));
  }
}

TEST(Compensation, PipelineLowersEveryPrunedModulesError) {
  auto spec = test::RandomModelSpec::uniform(2, 4, 2, 24);
  Model m = test::make_random_model(spec);
  auto tokens = test::random_tokens(8 * 16, m.cfg.vocab, 21);
  PlanOptions po;
  po.attn_ratio = po.mlp_ratio = 0.5;
  auto groups = discover_groups(m, plan_group_options(po));
  std::vector<Group> removed;
  for (const Group& g : groups)
    if ((g.kind == UnitKind::KvGroup && g.index == 1) || (g.kind == UnitKind::Mlp && g.index % 3 == 0)) removed.push_back(g);
  for (Compensation mode : {Compensation::Bias, Compensation::Lstsq, Compensation::BiasLstsq}) {
    CompensationOptions co;
    co.mode = mode;
    co.chunk_windows = 3;
    CompensatedModel cm = compensate_pruned(m, removed, tokens, 8, 16, co);
    Model plain = remove_groups(m, removed);
    for (int l = 0; l < 2; l++) {
      for (const ModuleFit* f : {&cm.layers[size_t(l)].o, &cm.layers[size_t(l)].down}) {
        ASSERT_TRUE(f->pruned);
        EXPECT_LT(f->err_refit, f->err_plain) << compensation_name(mode) << " layer " << l;
        EXPECT_GT(f->energy, f->err_plain);
      }
      EXPECT_EQ(cm.model.layers[size_t(l)][Role::O].shape, plain.layers[size_t(l)][Role::O].shape);
      EXPECT_EQ(cm.o_bias[size_t(l)].empty(), !compensation_has_bias(mode));
    }
  }
  CompensationOptions bad;
  bad.damping = 0;
  EXPECT_THROW(compensate_pruned(m, removed, tokens, 8, 16, bad), UserError);
}

}  // namespace
}  // namespace llmprune

namespace llmprune {
namespace {

// Mean over the calibration tokens of one projection's output [out], recorded by a hook.
class MeanOutput : public LinearHook {
 public:
  MeanOutput(int layer, Role role) : layer_(layer), role_(role) {}
  std::vector<double> sum;
  int64_t rows = 0;
  void forward(int layer, Role r, const float*, float* y, int N, int, int out) override {
    if (layer != layer_ || r != role_) return;
    sum.resize(size_t(out));
    for (int n = 0; n < N; n++)
      for (int i = 0; i < out; i++) sum[size_t(i)] += y[size_t(n) * out + i];
    rows += N;
  }
  void backward(int, Role, const float*, const float*, float*, int, int, int) override {}
  std::vector<double> mean() const {
    std::vector<double> m = sum;
    for (double& x : m) x /= double(rows);
    return m;
  }

 private:
  int layer_;
  Role role_;
};

std::vector<double> mean_output(const Model& m, Role role, const std::vector<int32_t>& tokens, int S, int T) {
  MeanOutput hook(0, role);
  Runner r(m, T);
  r.set_hook(&hook);
  std::vector<float> logits(size_t(S) * T * m.cfg.vocab);
  r.forward(tokens.data(), S, T, logits.data());
  return hook.mean();
}

// --compensate bias on a model that already has biases (attention_bias + mlp_bias): the pruned
// projection's mean output over the calibration set equals the unpruned one's (layer 0, whose
// input pruning does not change), its own bias kept; q/k/v/gate/up biases untouched. On a model
// without biases the switches are completed with zeros, so the saved attention_bias / mlp_bias
// describe every tensor; it reloads, and exports to GGUF, with the same logits. Qwen2's o_proj
// has no bias in its format: refused.
TEST(Compensation, BiasModeKeepsTheMeanOutputOnTheModel) {
  auto spec = test::RandomModelSpec::uniform(2, 4, 2, 24);
  spec.attention_bias = spec.mlp_bias = true;
  Model m = test::make_random_model(spec);
  const int S = 6, T = 16;
  auto tokens = test::random_tokens(S * T, m.cfg.vocab, 5);
  auto groups = discover_groups(m, GroupOptions{});
  for (auto [kind, role] : {std::pair{UnitKind::KvGroup, Role::O}, std::pair{UnitKind::Mlp, Role::Down}}) {
    std::vector<Group> removed;
    for (const Group& g : groups)
      if (g.layer == 0 && g.kind == kind && (kind == UnitKind::KvGroup ? g.index == 1 : g.index % 3 == 0)) removed.push_back(g);
    ASSERT_FALSE(removed.empty());
    CompensationOptions co;
    co.mode = Compensation::Bias;
    CompensatedModel cm = compensate_pruned(m, removed, tokens, S, T, co);
    const auto want = mean_output(m, role, tokens, S, T), got = mean_output(cm.model, role, tokens, S, T);
    const auto plain = mean_output(remove_groups(m, removed), role, tokens, S, T);
    double moved = 0;
    for (size_t i = 0; i < want.size(); i++) {
      EXPECT_NEAR(got[i], want[i], 1e-5 * (1 + std::abs(want[i]))) << role_desc(*m.arch, role).name << " " << i;
      moved = std::max(moved, std::abs(plain[i] - want[i]));
    }
    EXPECT_GT(moved, 1e-3);  // without the bias the mean does move
    for (Role b : {Role::QBias, Role::KBias, Role::VBias, Role::GateBias, Role::UpBias})
      if (kind == UnitKind::Mlp || (b != Role::QBias && b != Role::KBias && b != Role::VBias))
        EXPECT_EQ(cm.model.layers[1][b].shape, m.layers[1][b].shape);
  }

  spec.attention_bias = spec.mlp_bias = false;
  Model plain = test::make_random_model(spec);
  std::vector<Group> removed;
  for (const Group& g : discover_groups(plain, GroupOptions{}))
    if ((g.kind == UnitKind::KvGroup && g.layer == 1 && g.index == 0) || (g.kind == UnitKind::Mlp && g.layer == 0 && g.index < 4))
      removed.push_back(g);
  CompensationOptions co;
  co.mode = Compensation::BiasLstsq;
  CompensatedModel cm = compensate_pruned(plain, removed, tokens, S, T, co);
  for (const LayerWeights& L : cm.model.layers)
    for (Role b : {Role::QBias, Role::KBias, Role::VBias, Role::OBias, Role::GateBias, Role::UpBias, Role::DownBias})
      EXPECT_FALSE(L[b].empty()) << role_desc(*plain.arch, b).name;
  const std::vector<float> zeros(cm.model.layers[0][Role::QBias].numel(), 0.0f);
  EXPECT_EQ(std::vector<float>(cm.model.layers[0][Role::QBias].f32(), cm.model.layers[0][Role::QBias].f32() + zeros.size()), zeros);
  auto dir = test::temp_dir("saved");
  save_model_files(cm.model, dir, DType::F32, "");
  std::ifstream in(dir / "config.json");
  auto cfg = nlohmann::json::parse(in);
  EXPECT_EQ(cfg["attention_bias"], true);
  EXPECT_EQ(cfg["mlp_bias"], true);
  auto ids = test::random_tokens(12, plain.cfg.vocab, 9);
  auto logits = [&](const Model& x) {
    std::vector<float> out(ids.size() * size_t(x.cfg.vocab));
    Runner(x).forward(ids.data(), 1, int(ids.size()), out.data());
    return out;
  };
  EXPECT_EQ(logits(Model::load(dir)), logits(cm.model));
  // prune::run's path: no materialised model, the refitted tensors put into save_pruned's
  // streaming skeleton. The same files' worth: same logits, same bias switches.
  CompensationOptions lean = co;
  lean.materialize = false;
  CompensatedModel streamed = compensate_pruned(plain, removed, tokens, S, T, lean);
  EXPECT_TRUE(streamed.model.layers.empty());
  EXPECT_EQ(streamed.refitted.size(), 4u);  // o_proj + its bias in layer 1, down_proj + its bias in layer 0
  const auto sdir = test::temp_dir("streamed");
  save_pruned(plain, removed, sdir, DType::F32, "", [&](Model& skeleton) { streamed.apply(skeleton); });
  EXPECT_EQ(nlohmann::json::parse(std::ifstream(sdir / "config.json")), cfg);
  EXPECT_EQ(logits(Model::load(sdir)), logits(cm.model));
  const auto gguf = test::temp_dir("gguf") / "c.gguf";
  export_gguf(cm.model, nullptr, gguf, DType::F32);
  EXPECT_EQ(logits(Model::load(gguf)), logits(cm.model));

  auto qspec = test::RandomModelSpec::uniform(2, 4, 2, 24);
  qspec.model_type = "qwen2";
  qspec.qkv_bias = true;
  Model qwen = test::make_random_model(qspec);
  std::vector<Group> qremoved;
  for (const Group& g : discover_groups(qwen, GroupOptions{}))
    if (g.kind == UnitKind::Mlp && g.layer == 0 && g.index == 0) qremoved.push_back(g);
  try {
    compensate_pruned(qwen, qremoved, tokens, S, T, co);
    ADD_FAILURE() << "qwen2 bias compensation accepted";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("use --compensate lstsq"), std::string::npos) << e.what();
  }
}

TEST(FlapCli, AdaptiveWithLeastSquaresEndToEndAndErrors) {
  const std::string model = test::fixture_model("kjv-llama-gqa-tied").string();
  const std::string text = test::fixture_text("kjv.valid.txt").string();
  auto out = test::temp_dir("out");
  const std::string base = "prune " + model + " --out " + (out / "m").string() + " --importance flap --calib " + text + " ";
  auto r = test::run_cli(base + "--stat-samples 8 --stat-seq-len 64 --allocation adaptive --ratio 0.3 --compensate lstsq --damping 0.05 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto pj = nlohmann::json::parse(r.out);
  EXPECT_EQ(pj["settings"]["allocation"], "adaptive");
  EXPECT_EQ(pj["settings"]["compensate"], "lstsq");
  EXPECT_EQ(pj["settings"]["damping"], 0.05);
  EXPECT_EQ(pj["settings"]["stat_samples"], 8);
  ASSERT_EQ(pj["compensation"].size(), 6u);
  bool refitted = false;
  for (const auto& row : pj["compensation"])
    for (const char* mod : {"o_proj", "down_proj"})
      if (row.contains(mod)) {
        refitted = true;
        EXPECT_LT(row[mod]["rel_error_compensated"].get<double>(), row[mod]["rel_error_plain"].get<double>());
      }
  EXPECT_TRUE(refitted);
  double removed_fraction = 0;
  for (const auto& row : pj["layers"]) removed_fraction += row["mlp_ratio"].get<double>();
  EXPECT_GT(removed_fraction, 0);
  // The estimate is the statistics / compensation passes' (no gradient pass ran), above the peak.
  const auto& terms = pj["memory_estimate"]["terms"];
  EXPECT_TRUE(terms.contains("residual stream of every window S*T*C*4")) << terms.dump();
  EXPECT_TRUE(terms.contains("refit of one module (Gram matrix and solve, double)")) << terms.dump();
  EXPECT_GE(pj["memory_estimate"]["total_bytes"].get<double>(), pj["peak_rss_bytes"].get<double>());
  Model pruned = Model::load(out / "m");  // loads: a standard HF directory
  EXPECT_EQ(pruned.n_params(), pj["params_after"].get<int64_t>());
  // pruning.json is PruneSummary::to_json: it reads back to the same JSON, and the report shows
  // the per-layer ratios and the compensation table from it.
  const PruneSummary sum = PruneSummary::read((out / "m" / "pruning.json").string());
  EXPECT_EQ(sum.to_json(), nlohmann::json::parse(std::ifstream(out / "m" / "pruning.json")));
  EXPECT_EQ(sum.compensation.size(), 6u);
  const std::string html = render_report({load_report_run((out / "m").string())});
  EXPECT_NE(html.find("adaptive per-layer allocation, compensation lstsq (damping 0.05)"), std::string::npos);
  EXPECT_NE(html.find("<table class=\"compensation\">"), std::string::npos);
  EXPECT_NE(html.find("MLP ratio</th>"), std::string::npos);

  // One-line errors for bad values.
  auto err = [&](const std::string& extra, const std::string& want) {
    auto e = test::run_cli(base + extra + (extra.find("--stat-samples") == std::string::npos ? " --stat-samples 8" : "") +
                           " --force");
    EXPECT_EQ(e.exit_code, 2) << extra;
    EXPECT_NE(e.err.find(want), std::string::npos) << extra << ": " << e.err;
    EXPECT_EQ(std::count(e.err.begin(), e.err.end(), '\n'), 1) << e.err;
  };
  err("--ratio 1.2", "--ratio must be in [0, 1)");
  err("--ratio 0.2 --compensate lstsq --damping 0", "--damping must be > 0");
  err("--ratio 0.2 --stat-samples 100000", "fewer than --stat-samples x --stat-seq-len");
  err("--ratio 0.2 --compensate lstsq --max-memory 200M", "lower --stat-samples / --stat-seq-len or raise the budget");
  err("--ratio 0.2 --flap-metric foo", "--flap-metric 'foo' is not one of wifv, ifv, wifn");
  err("--ratio 0.2 --allocation foo", "--allocation 'foo' is not one of");
  err("--ratio 0.2 --layer-ratios 0.1,0.2", "--layer-ratios has 2 values; the model has 6 layers");
  err("--ratio 0.2 --strategy channel", "use --strategy block");
  auto taylor = test::run_cli("prune " + model + " --out " + (out / "t").string() + " --calib " + text +
                              " --ratio 0.2 --allocation adaptive");
  EXPECT_EQ(taylor.exit_code, 2);
  EXPECT_NE(taylor.err.find("--allocation adaptive needs --importance flap"), std::string::npos) << taylor.err;
}

}  // namespace
}  // namespace llmprune
