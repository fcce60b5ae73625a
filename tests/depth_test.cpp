// Depth pruning: layers without attention or without MLP as first-class models (forward,
// backward, KV cache, save/reload, pruning = masking), Block Influence against a direct
// computation in double, and BlockPruner's greedy choice against a brute force over physically
// pruned models.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "importance/block_influence.h"
#include "model/backward.h"
#include "model/forward.h"
#include "model/gguf_model.h"
#include "model_factory.h"
#include "prune/depth.h"
#include "test_util.h"

namespace llmprune {
namespace {

std::vector<float> logits_of(const Model& m, const std::vector<int32_t>& tokens, int B, int T) {
  Runner r(m);
  r.set_small_m_max(0);
  std::vector<float> out(size_t(B) * T * m.cfg.vocab);
  r.forward(tokens.data(), B, T, out.data());
  return out;
}

void expect_close(const std::vector<float>& a, const std::vector<float>& b, double tol) {
  ASSERT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size(); i++) worst = std::max(worst, double(std::abs(a[i] - b[i])) / (1.0 + std::abs(b[i])));
  EXPECT_LE(worst, tol);
}

// GQA, attention and MLP biases, untied: every optional part of a sub-block present.
test::RandomModelSpec spec4() {
  auto s = test::RandomModelSpec::uniform(4, 4, 2, 24);
  s.attention_bias = s.mlp_bias = true;
  return s;
}

// The same model with the sub-blocks' residual writers zeroed (o / down and their biases):
// what the removal must equal.
Model zeroed(const Model& m, const std::vector<Sublayer>& gone) {
  Model z = m;
  for (const Sublayer& s : gone)
    for (Role r : s.attention ? std::vector<Role>{Role::O, Role::OBias} : std::vector<Role>{Role::Down, Role::DownBias}) {
      Tensor& t = z.layers[size_t(s.layer)][r];
      if (!t.empty()) t = Tensor::zeros(t.dtype, t.shape);
    }
  return z;
}

TEST(DepthEngine, RemovedSublayersEqualZeroedOnes) {
  Model m = test::make_random_model(spec4());
  const std::vector<Sublayer> gone = {{1, true}, {2, false}, {3, true}, {3, false}};
  std::vector<int> kept;
  Model p = remove_sublayers(m, gone, &kept);
  ASSERT_EQ(p.layers.size(), 3u);  // layer 3 lost both: the identity, dropped
  EXPECT_EQ(kept, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(p.cfg.layers[1].n_head, 0);
  EXPECT_EQ(p.cfg.layers[1].n_kv_head, 0);
  EXPECT_EQ(p.cfg.layers[1].d_ff, 24);
  EXPECT_EQ(p.cfg.layers[2].d_ff, 0);
  EXPECT_EQ(p.cfg.layers[2].n_head, 4);
  EXPECT_FALSE(p.cfg.uniform());
  EXPECT_EQ(count_params(m).total - count_params(p).total,
            sublayer_params(m, {1, true}) + sublayer_params(m, {2, false}) + sublayer_params(m, {3, true}) +
                sublayer_params(m, {3, false}));
  const int B = 2, T = 9;
  auto tokens = test::random_tokens(B * T, m.cfg.vocab, 3);
  const auto want = logits_of(zeroed(m, gone), tokens, B, T);
  expect_close(logits_of(p, tokens, B, T), want, 2e-5);
  // The mask used by the search gives the same logits without any surgery.
  Runner masked(m);
  masked.set_small_m_max(0);
  masked.skip_sublayers({0, 1, 0, 1}, {0, 0, 1, 1});
  std::vector<float> got(want.size());
  masked.forward(tokens.data(), B, T, got.data());
  expect_close(got, want, 2e-5);
  // Decode with the KV cache (weights read as stored) equals the full forward, last position.
  Runner r(p);
  KVCache cache(p, 1, T);
  std::vector<float> step(size_t(p.cfg.vocab));
  for (int t = 0; t < T; t++) r.forward(tokens.data() + t, 1, 1, step.data(), &cache);
  std::vector<float> full_last(want.begin() + (T - 1) * p.cfg.vocab, want.begin() + T * p.cfg.vocab);
  expect_close(step, full_last, 2e-5);
}

// Gradients of every remaining weight of the pruned model equal the zeroed model's.
class CollectGrads : public GradSink {
 public:
  std::map<std::pair<int, int>, std::vector<float>> g;
  void on_layer(int layer, const LayerF32&, std::array<GradStats, kNumLayerRoles>& grads) override {
    for (int r = 0; r < kNumLayerRoles; r++)
      if (!grads[size_t(r)].g.empty()) g[{layer, r}] = grads[size_t(r)].g;
  }
};

TEST(DepthEngine, BackwardOfRemovedSublayersEqualsTheZeroedModel) {
  Model m = test::make_random_model(spec4());
  const std::vector<Sublayer> gone = {{0, false}, {2, true}};
  Model p = remove_sublayers(m, gone);
  const int B = 2, T = 7;
  auto tokens = test::random_tokens(B * T, m.cfg.vocab, 5);
  CollectGrads gp, gz;
  GradOptions o;
  auto rp = compute_gradients(p, tokens.data(), B, T, o, gp);
  auto rz = compute_gradients(zeroed(m, gone), tokens.data(), B, T, o, gz);
  EXPECT_NEAR(rp.loss, rz.loss, 1e-5);
  ASSERT_FALSE(gp.g.empty());
  for (auto& [key, gpv] : gp.g) {
    SCOPED_TRACE(layer_tensor_name(*m.arch, Role(key.second), key.first));
    ASSERT_TRUE(gz.g.count(key));
    expect_close(gpv, gz.g[key], 1e-4);
  }
  // The pruned model has no gradient for what it lacks.
  EXPECT_FALSE(gp.g.count({0, int(Role::Down)}));
  EXPECT_FALSE(gp.g.count({2, int(Role::Q)}));
}

TEST(DepthEngine, SaveReloadKeepsTheLogitsAndStatesTheRemovals) {
  for (DType dt : {DType::F32, DType::BF16}) {
    SCOPED_TRACE(dtype_name(dt));
    auto s = spec4();
    s.dtype = dt;
    Model p = remove_sublayers(test::make_random_model(s), {{0, true}, {3, false}});
    auto dir = test::temp_dir(std::string("save-") + dtype_name(dt));
    save_model_files(p, dir, dt, {});
    nlohmann::json cfg = nlohmann::json::parse(std::ifstream(dir / "config.json"));
    ASSERT_TRUE(cfg.contains("llmprune_layers"));
    EXPECT_EQ(cfg["llmprune_layers"][0]["num_attention_heads"], 0);
    EXPECT_EQ(cfg["llmprune_layers"][0]["num_key_value_heads"], 0);
    EXPECT_EQ(cfg["llmprune_layers"][3]["intermediate_size"], 0);
    EXPECT_EQ(cfg["llmprune_layers"][1]["num_attention_heads"], 4);
    EXPECT_TRUE(cfg.contains("auto_map"));  // transformers builds the removed sub-blocks as no-ops
    // Every sub-block present has its biases: the switches stay true (no bias for what is gone).
    EXPECT_EQ(cfg["attention_bias"], true);
    EXPECT_EQ(cfg["mlp_bias"], true);
    EXPECT_EQ(complete_bias_switches(p), 0);
    Model r = Model::load(dir);
    EXPECT_EQ(r.cfg.layers, p.cfg.layers);
    auto tokens = test::random_tokens(2 * 6, p.cfg.vocab, 7);
    EXPECT_EQ(logits_of(r, tokens, 2, 6), logits_of(p, tokens, 2, 6));  // identical
  }
}

TEST(DepthEngine, LoaderAcceptsAbsentSublayersOnlyWhereConfigSaysSo) {
  Model p = remove_sublayers(test::make_random_model(spec4()), {{1, true}});
  auto dir = test::temp_dir("partial");
  save_model_files(p, dir, DType::F32, {});
  // Without the per-layer list the absent q_proj is a missing tensor.
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(dir / "config.json"));
  nlohmann::json no_list = cfg;
  no_list.erase("llmprune_layers");
  std::ofstream(dir / "config.json") << no_list.dump();
  try {
    Model::load(dir);
    FAIL() << "loaded";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("missing tensor 'model.layers.1.input_layernorm.weight'"), std::string::npos) << e.what();
  }
  // Half a sub-block (k_proj and its norm kept, the rest gone) is refused even when listed as removed.
  Model half = test::make_random_model(spec4());
  for (Role r : {Role::Q, Role::QBias, Role::V, Role::VBias, Role::O, Role::OBias}) half.layers[1][r] = Tensor{};
  try {
    half.validate_and_derive_sizes("half");
    FAIL() << "accepted";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("missing tensor 'model.layers.1.self_attn.q_proj.weight'"), std::string::npos) << e.what();
  }
}

TEST(BlockInfluence, MatchesADirectComputationInDouble) {
  Model m = test::make_random_model(test::RandomModelSpec::uniform(3, 4, 2, 24));
  const int S = 3, T = 6, C = m.cfg.hidden;
  auto tokens = test::random_tokens(S * T, m.cfg.vocab, 11);
  BlockInfluenceOptions o;
  o.chunk_windows = 2;  // chunks of unequal size
  BlockInfluence bi = block_influence(m, tokens, S, T, o);
  // Direct: one window at a time; x_mid from a forward of the layer with its MLP masked.
  std::vector<double> layer(3, 0.0), attn(3, 0.0), mlp(3, 0.0);
  for (int s = 0; s < S; s++) {
    Runner r(m), r_no_mlp(m);
    r_no_mlp.skip_sublayers({}, {1, 1, 1});
    std::vector<float> x(size_t(T) * C);
    r.embed(tokens.data() + s * T, T, x.data());
    LayerF32 w;
    for (int l = 0; l < 3; l++) {
      w.load(m, l);
      std::vector<float> in = x, mid = x;
      r_no_mlp.block_forward(l, w, mid.data(), 1, T, nullptr, nullptr);
      r.block_forward(l, w, x.data(), 1, T, nullptr, nullptr);
      auto cos = [&](const std::vector<float>& a, const std::vector<float>& b, int t) {
        long double ab = 0, aa = 0, bb = 0;
        for (int c = 0; c < C; c++) {
          ab += (long double)a[size_t(t * C + c)] * b[size_t(t * C + c)];
          aa += (long double)a[size_t(t * C + c)] * a[size_t(t * C + c)];
          bb += (long double)b[size_t(t * C + c)] * b[size_t(t * C + c)];
        }
        return double(ab / std::sqrt(aa * bb));
      };
      for (int t = 0; t < T; t++) {
        layer[size_t(l)] += 1 - cos(in, x, t);
        attn[size_t(l)] += 1 - cos(in, mid, t);
        mlp[size_t(l)] += 1 - cos(mid, x, t);
      }
    }
  }
  for (int l = 0; l < 3; l++) {
    SCOPED_TRACE(l);
    EXPECT_NEAR(bi.layer[size_t(l)], layer[size_t(l)] / (S * T), 1e-6);
    EXPECT_NEAR(bi.attn[size_t(l)], attn[size_t(l)] / (S * T), 1e-6);
    EXPECT_NEAR(bi.mlp[size_t(l)], mlp[size_t(l)] / (S * T), 1e-6);
    EXPECT_GT(bi.layer[size_t(l)], 0.0);
  }
  // A masked sub-block is the identity: BI 0, and the layer's BI is the other sub-block's.
  o.skip_attn = {0, 1, 0};
  BlockInfluence masked = block_influence(m, tokens, S, T, o);
  EXPECT_EQ(masked.attn[1], 0.0);
  EXPECT_NEAR(masked.layer[1], masked.mlp[1], 1e-12);
  EXPECT_EQ(masked.layer[0], bi.layer[0]);
}

// Perplexity of a physically pruned model, computed with the plain evaluation path.
double ppl_of(const Model& m, const std::vector<int32_t>& tokens, int S, int T) {
  Runner r(m);
  NllResult n = sequence_nll(r, tokens.data(), S, T);
  return std::exp(n.nll_sum / double(n.count));
}

TEST(BlockPruner, GreedyChoiceEqualsABruteForceOverPrunedModels) {
  auto spec = test::RandomModelSpec::uniform(3, 4, 2, 24);
  spec.scale = 0.5f;  // sub-blocks that matter, so perplexities differ clearly
  Model m = test::make_random_model(spec);
  const int S = 3, T = 8;
  auto tokens = test::random_tokens(S * T, m.cfg.vocab, 13);
  SublayerSearchOptions o;
  o.remove = 3;
  o.chunk_windows = 2;
  SublayerSearch got = search_sublayers(m, tokens, S, T, o);
  ASSERT_EQ(got.steps.size(), 3u);
  EXPECT_NEAR(got.base_ppl, ppl_of(m, tokens, S, T), 1e-4 * got.base_ppl);
  std::vector<Sublayer> chosen;
  for (int k = 0; k < 3; k++) {
    SCOPED_TRACE(k);
    Sublayer best;
    double best_ppl = INFINITY;
    int n = 0;
    for (bool attention : {true, false})
      for (int l = 0; l < 3; l++) {
        const Sublayer s{l, attention};
        if (std::find(chosen.begin(), chosen.end(), s) != chosen.end()) continue;
        auto trial = chosen;
        trial.push_back(s);
        const double p = ppl_of(remove_sublayers(m, trial), tokens, S, T);
        n++;
        if (p < best_ppl) best_ppl = p, best = s;
      }
    EXPECT_EQ(got.steps[size_t(k)].removed, best);
    EXPECT_NEAR(got.steps[size_t(k)].calib_ppl, best_ppl, 1e-4 * best_ppl);
    EXPECT_EQ(got.steps[size_t(k)].evaluated, n);
    chosen.push_back(best);
  }
  int64_t removed = 0;
  for (const Sublayer& s : chosen) removed += sublayer_params(m, s);
  EXPECT_EQ(got.params_removed, removed);
}

TEST(BlockPruner, ShortlistScoresOnlyTheLowestBlockInfluence) {
  Model m = test::make_random_model(test::RandomModelSpec::uniform(3, 4, 2, 24));
  const int S = 2, T = 8;
  auto tokens = test::random_tokens(S * T, m.cfg.vocab, 17);
  SublayerSearchOptions o;
  o.remove = 1;
  o.shortlist = 2;
  SublayerSearch got = search_sublayers(m, tokens, S, T, o);
  ASSERT_EQ(got.steps.size(), 1u);
  EXPECT_EQ(got.steps[0].evaluated, 2);
  BlockInfluence bi = block_influence(m, tokens, S, T);
  std::vector<std::pair<double, Sublayer>> all;
  for (int l = 0; l < 3; l++) all.push_back({bi.attn[size_t(l)], {l, true}}), all.push_back({bi.mlp[size_t(l)], {l, false}});
  std::sort(all.begin(), all.end(), [](auto& a, auto& b) { return a.first < b.first; });
  const Sublayer a = all[0].second, b = all[1].second;
  const double pa = ppl_of(remove_sublayers(m, {a}), tokens, S, T), pb = ppl_of(remove_sublayers(m, {b}), tokens, S, T);
  EXPECT_EQ(got.steps[0].removed, pa <= pb ? a : b);
}

TEST(BlockPruner, ParameterRatioStopsAtTheFirstCountReachingIt) {
  Model m = test::make_random_model(test::RandomModelSpec::uniform(3, 4, 2, 24));
  const int S = 2, T = 6;
  auto tokens = test::random_tokens(S * T, m.cfg.vocab, 19);
  const int64_t total = count_params(m).total;
  SublayerSearchOptions o;
  o.criterion = SublayerCriterion::BlockInfluence;
  o.param_ratio = 0.2;
  SublayerSearch got = search_sublayers(m, tokens, S, T, o);
  ASSERT_FALSE(got.steps.empty());
  EXPECT_GE(double(got.params_removed), 0.2 * double(total));
  EXPECT_LT(double(got.params_removed - sublayer_params(m, got.steps.back().removed)), 0.2 * double(total));
  for (size_t k = 1; k < got.steps.size(); k++) EXPECT_LE(got.steps[k - 1].bi, got.steps[k].bi);
}

TEST(DepthEngine, GgufKeepsAttentionFreeLayersAndPadsMlpFreeOnes) {
  Model m = test::make_random_model(spec4());
  Model p = remove_sublayers(m, {{1, true}, {3, true}, {2, false}});
  auto dir = test::temp_dir("gguf");
  export_gguf(p, nullptr, dir / "p.gguf", DType::F32);
  Model g = Model::load(dir / "p.gguf");
  // Attention-free layers as they are; the MLP-free layer 2 (which keeps its attention) carries
  // a one-channel zero MLP, because llama.cpp's deci graph runs feed_forward_length 0 as the
  // identity (dropping the attention output too): same logits.
  for (int l : {0, 1, 3}) EXPECT_EQ(g.cfg.layers[size_t(l)], p.cfg.layers[size_t(l)]) << l;
  EXPECT_EQ(g.cfg.layers[2].n_head, 4);
  EXPECT_EQ(g.cfg.layers[2].d_ff, 1);
  auto tokens = test::random_tokens(2 * 6, p.cfg.vocab, 23);
  expect_close(logits_of(g, tokens, 2, 6), logits_of(p, tokens, 2, 6), 1e-6);
}

TEST(DepthCli, ShortGptAndBlockPrunerEndToEnd) {
  const std::string model = test::fixture_model("kjv-llama-gqa-tied").string();
  const std::string text = test::fixture_text("kjv.valid.txt").string();
  const auto out = test::temp_dir("runs");
  const std::string base = "prune " + model + " --calib " + text + " --stat-samples 4 --stat-seq-len 32 ";
  // ShortGPT: the layer of lowest Block Influence goes.
  auto r = test::run_cli(base + "--out " + (out / "sg").string() + " --strategy layer --importance bi --drop-layers 2 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto pj = nlohmann::json::parse(r.out);
  ASSERT_EQ(pj["removed"].size(), 2u);
  EXPECT_EQ(pj["settings"]["criterion"], "bi");
  auto imp = nlohmann::json::parse(std::ifstream(out / "sg/importance.json"));
  std::vector<double> scores;
  for (auto& u : imp) scores.push_back(u["score"].get<double>());
  std::vector<double> sorted = scores;
  std::sort(sorted.begin(), sorted.end());
  for (auto& u : pj["removed"]) EXPECT_LE(u["score"].get<double>(), sorted[1]);
  EXPECT_EQ(Model::load(out / "sg").cfg.n_layer, 4);
  // BlockPruner: greedy sub-blocks to 10% of the parameters, with a BI shortlist of 3.
  r = test::run_cli(base + "--out " + (out / "bp").string() + " --strategy sublayer --importance ppl --ratio 0.1 --shortlist 3 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  pj = nlohmann::json::parse(r.out);
  EXPECT_GE(pj["fraction_removed"].get<double>(), 0.1);
  ASSERT_FALSE(pj["removed"].empty());
  for (auto& u : pj["removed"]) EXPECT_LE(u["candidates_scored"].get<int>(), 3);
  Model bp = Model::load(out / "bp");
  EXPECT_EQ(bp.n_params(), pj["params_after"].get<int64_t>());
  // The saved model's perplexity on the windows is the search's last figure.
  EXPECT_GT(pj["calib_ppl_after"].get<double>(), pj["calib_ppl_before"].get<double>() * 0.5);
  // The search's memory estimate is recorded and bounds what the run used.
  const double estimate = pj["memory_estimate"]["total_bytes"].get<double>();
  EXPECT_GE(estimate, pj["peak_rss_bytes"].get<double>());

  auto err = [&](const std::string& extra, const std::string& want) {
    auto e = test::run_cli(base + "--out " + (out / "e").string() + " " + extra);
    EXPECT_EQ(e.exit_code, 2) << extra;
    EXPECT_NE(e.err.find(want), std::string::npos) << extra << ": " << e.err;
    EXPECT_EQ(std::count(e.err.begin(), e.err.end(), '\n'), 1) << e.err;
  };
  err("--strategy sublayer --importance taylor --ratio 0.2", "--strategy sublayer takes --importance ppl (BlockPruner) or bi");
  err("--strategy block --importance ppl --ratio 0.2", "--importance ppl (BlockPruner's search) removes sub-blocks");
  err("--strategy block --importance bi --ratio 0.2", "--importance bi (Block Influence) scores layers or sub-blocks");
  err("--strategy sublayer --importance ppl", "nothing to prune");
  err("--strategy sublayer --importance ppl --ratio 0.2 --drop-sublayers 2", "give either --ratio or --drop-sublayers");
  err("--strategy sublayer --importance bi --ratio 0.2 --shortlist 2", "--shortlist narrows the perplexity search");
  err("--strategy sublayer --importance ppl --ratio 0.2 --shortlist -1", "--shortlist must be >= 0");
  err("--strategy layer --importance bi --drop-sublayers 2", "--drop-sublayers needs --strategy sublayer");
  err("--strategy sublayer --importance ppl --ratio 1.5", "--ratio must be in [0, 1)");
  err("--strategy sublayer --importance ppl --drop-sublayers 13", "cannot remove more sub-blocks");
  err("--strategy sublayer --importance ppl --ratio 0.2 --max-memory 10M", "lower --stat-samples / --stat-seq-len or raise the budget");
}

}  // namespace
}  // namespace llmprune
