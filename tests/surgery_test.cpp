// Physical surgery (prune/surgery.h). The proof: removing a group must give the same logits as
// zeroing its contribution to the residual stream (zero_groups), for random plans of every kind
// on both fixture models; shapes stay consistent; a ragged pruned model round-trips through
// save/load; the storage dtype is kept; impossible plans are refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include "core/error.h"
#include "graph/groups.h"
#include "model/forward.h"
#include "model_factory.h"
#include "prune/surgery.h"
#include "test_util.h"

namespace llmprune {
namespace {

constexpr int kB = 2, kT = 20;

std::vector<int32_t> random_tokens(int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(0, vocab - 1);
  std::vector<int32_t> t(size_t(kB) * kT);
  for (auto& x : t) x = d(rng);
  return t;
}

std::vector<float> logits_of(const Model& m, const std::vector<int32_t>& tokens) {
  Runner r(m);
  std::vector<float> out(size_t(kB) * kT * m.cfg.vocab);
  r.forward(tokens.data(), kB, kT, out.data());
  return out;
}

// |a-b| <= atol + rtol*|b| everywhere; reports the worst element.
void expect_close(const std::vector<float>& a, const std::vector<float>& b, float atol, float rtol, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  size_t worst = 0;
  double worst_excess = -1e30;
  size_t bad = 0;
  for (size_t i = 0; i < a.size(); i++) {
    ASSERT_TRUE(std::isfinite(a[i])) << what << ": non-finite logit at " << i;
    double excess = std::fabs(double(a[i]) - b[i]) - (atol + rtol * std::fabs(double(b[i])));
    if (excess > 0) bad++;
    if (excess > worst_excess) {
      worst_excess = excess;
      worst = i;
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " logits differ; worst at " << worst << ": " << a[worst] << " vs " << b[worst];
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); i++) d = std::max(d, std::fabs(double(a[i]) - b[i]));
  return d;
}

// Every tensor's shape agrees with the (re-derived) per-layer config.
void expect_shapes(const Model& p) {
  const int64_t C = p.cfg.hidden, D = p.cfg.head_dim;
  ASSERT_EQ(int(p.layers.size()), p.cfg.n_layer);
  ASSERT_EQ(p.cfg.layers.size(), p.layers.size());
  EXPECT_EQ(p.embed().shape, (std::vector<int64_t>{p.cfg.vocab, C}));
  EXPECT_EQ(p.lm_head().shape, (std::vector<int64_t>{p.cfg.vocab, C}));
  EXPECT_EQ(p.final_norm().shape, (std::vector<int64_t>{C}));
  for (size_t l = 0; l < p.layers.size(); l++) {
    const auto& lc = p.cfg.layers[l];
    const auto& L = p.layers[l];
    EXPECT_EQ(L[Role::Q].shape, (std::vector<int64_t>{lc.n_head * D, C}));
    EXPECT_EQ(L[Role::K].shape, (std::vector<int64_t>{lc.n_kv_head * D, C}));
    EXPECT_EQ(L[Role::V].shape, (std::vector<int64_t>{lc.n_kv_head * D, C}));
    EXPECT_EQ(L[Role::O].shape, (std::vector<int64_t>{C, lc.n_head * D}));
    EXPECT_EQ(L[Role::Gate].shape, (std::vector<int64_t>{lc.d_ff, C}));
    EXPECT_EQ(L[Role::Up].shape, (std::vector<int64_t>{lc.d_ff, C}));
    EXPECT_EQ(L[Role::Down].shape, (std::vector<int64_t>{C, lc.d_ff}));
    EXPECT_EQ(L[Role::AttnNorm].shape, (std::vector<int64_t>{C}));
    EXPECT_EQ(L[Role::MlpNorm].shape, (std::vector<int64_t>{C}));
    for (int r = 0; r < kNumLayerRoles; r++) {  // a bias keeps one entry per row of its matrix
      const RoleDesc& d = role_desc(*p.arch, Role(r));
      if (d.is_bias && !L.w[size_t(r)].empty()) EXPECT_EQ(L.w[size_t(r)].shape, (std::vector<int64_t>{L[d.bias_of].dim(0)})) << d.name;
    }
    EXPECT_EQ(lc.n_head % lc.n_kv_head, 0);
  }
}

std::vector<const Group*> of_kind(const std::vector<Group>& gs, UnitKind k, int layer) {
  std::vector<const Group*> out;
  for (auto& g : gs)
    if (g.kind == k && g.layer == layer) out.push_back(&g);
  return out;
}

// n random distinct elements of v.
template <class T>
std::vector<T> sample(std::vector<T> v, size_t n, std::mt19937& rng) {
  std::shuffle(v.begin(), v.end(), rng);
  v.resize(std::min(n, v.size()));
  return v;
}

// A random plan over heads/KV groups (whole KV groups, or query heads evenly per KV group),
// MLP channels and layers.
struct PlanSpec {
  bool heads = false, mlp = false, layers = false;
  GqaUnit unit = GqaUnit::KvGroup;
};

std::vector<Group> random_plan(const Model& m, const PlanSpec& ps, uint32_t seed) {
  std::mt19937 rng(seed);
  GroupOptions o;
  o.gqa_unit = ps.unit;
  o.heads = ps.heads;
  o.mlp = ps.mlp;
  o.layers = ps.layers;
  auto gs = discover_groups(m, o);
  std::vector<Group> plan;
  const int L = int(m.layers.size());
  for (int l = 0; l < L; l++) {
    const LayerConfig& lc = m.cfg.layers[size_t(l)];
    if (ps.heads) {
      const int rep = lc.n_head / lc.n_kv_head;
      if (ps.unit == GqaUnit::Query && rep > 1) {
        // The same number of query heads out of every KV group.
        int k = int(rng() % unsigned(rep));  // 0..rep-1
        auto heads = of_kind(gs, UnitKind::Head, l);
        for (int u = 0; u < lc.n_kv_head; u++) {
          std::vector<const Group*> grp(heads.begin() + u * rep, heads.begin() + (u + 1) * rep);
          for (auto* g : sample(grp, size_t(k), rng)) plan.push_back(*g);
        }
      } else {
        auto units = of_kind(gs, rep > 1 ? UnitKind::KvGroup : UnitKind::Head, l);
        size_t k = rng() % units.size();  // leaves at least one
        for (auto* g : sample(units, k, rng)) plan.push_back(*g);
      }
    }
    if (ps.mlp) {
      auto units = of_kind(gs, UnitKind::Mlp, l);
      size_t k = rng() % units.size();
      for (auto* g : sample(units, k, rng)) plan.push_back(*g);
    }
  }
  if (ps.layers) {
    std::vector<const Group*> layer_groups;
    for (auto& g : gs)
      if (g.kind == UnitKind::Layer) layer_groups.push_back(&g);
    size_t k = 1 + rng() % (layer_groups.size() - 1);
    for (auto* g : sample(layer_groups, k, rng)) plan.push_back(*g);
  }
  return plan;
}

struct Case {
  std::string fixture;
  PlanSpec ps;
};

void check_prune_equals_zero(const Model& m, const std::vector<Group>& plan, const std::string& what, uint32_t seed) {
  Model p = remove_groups(m, plan);
  Model z = zero_groups(m, plan);
  expect_shapes(p);
  EXPECT_EQ(p.storage_dtype(), m.storage_dtype());
  EXPECT_LE(p.n_params(), m.n_params());
  auto tokens = random_tokens(m.cfg.vocab, seed);
  auto lp = logits_of(p, tokens);
  expect_close(lp, logits_of(z, tokens), 1e-4f, 1e-4f, what);
  // The check has teeth: a non-empty plan moves the logits away from the unpruned model's.
  if (!plan.empty()) EXPECT_GT(max_abs_diff(lp, logits_of(m, tokens)), 1e-3) << what;
}

TEST(SurgeryFixture, RandomPlansMatchZeroedModel) {
  const std::vector<Case> cases = {
      {"kjv-llama-mha", {.heads = true}},
      {"kjv-llama-mha", {.mlp = true}},
      {"kjv-llama-mha", {.layers = true}},
      {"kjv-llama-mha", {.heads = true, .mlp = true, .layers = true}},
      {"kjv-llama-gqa-tied", {.heads = true}},
      {"kjv-llama-gqa-tied", {.heads = true, .unit = GqaUnit::Query}},
      {"kjv-llama-gqa-tied", {.mlp = true}},
      {"kjv-llama-gqa-tied", {.layers = true}},
      {"kjv-llama-gqa-tied", {.heads = true, .mlp = true, .layers = true, .unit = GqaUnit::Query}},
      // Biases on q/k/v/o/gate/up/down, head_dim 24 != hidden 64 / 4 heads.
      {"llama-bias-tiny", {.heads = true}},
      {"llama-bias-tiny", {.heads = true, .unit = GqaUnit::Query}},
      {"llama-bias-tiny", {.mlp = true}},
      {"llama-bias-tiny", {.layers = true}},
      {"llama-bias-tiny", {.heads = true, .mlp = true, .layers = true}},
  };
  std::map<std::string, Model> models;
  for (size_t i = 0; i < cases.size(); i++) {
    const Case& c = cases[i];
    if (!models.count(c.fixture)) models.emplace(c.fixture, Model::load(test::fixture_model(c.fixture)));
    const Model& m = models.at(c.fixture);
    for (uint32_t seed = 1; seed <= 3; seed++) {
      std::string what = c.fixture + " case " + std::to_string(i) + " seed " + std::to_string(seed);
      SCOPED_TRACE(what);
      auto plan = random_plan(m, c.ps, seed * 101 + uint32_t(i));
      check_prune_equals_zero(m, plan, what, seed);
    }
  }
}

TEST(SurgeryFixture, SizesFollowThePlan) {
  Model m = Model::load(test::fixture_model("kjv-llama-gqa-tied"));  // 8 heads, 2 KV, 704 MLP, 6 layers
  GroupOptions o;
  o.layers = true;
  auto gs = discover_groups(m, o);
  std::vector<Group> plan;
  plan.push_back(*of_kind(gs, UnitKind::KvGroup, 1)[0]);          // layer 1: 4 heads / 1 KV left
  for (int c = 0; c < 100; c++) plan.push_back(*of_kind(gs, UnitKind::Mlp, 2)[size_t(c * 3)]);
  plan.push_back(*of_kind(gs, UnitKind::Layer, 4)[0]);            // layer 4 goes: 5 layers left
  Model p = remove_groups(m, plan);
  ASSERT_EQ(p.cfg.n_layer, 5);
  EXPECT_EQ(p.cfg.layers[1], (LayerConfig{4, 1, 32, 704}));
  EXPECT_EQ(p.cfg.layers[2], (LayerConfig{8, 2, 32, 604}));
  EXPECT_EQ(p.cfg.layers[4], (LayerConfig{8, 2, 32, 704}));      // old layer 5, renumbered
  EXPECT_FALSE(p.cfg.uniform());
  EXPECT_EQ(p.cfg.n_head, 8);
  EXPECT_EQ(p.cfg.d_ff, 704);
  // The kept slices are the original rows: KV head 1's K rows are now rows 0..31.
  const Tensor &k0 = m.layers[1][Role::K], &k1 = p.layers[1][Role::K];
  EXPECT_EQ(std::memcmp(k1.data, static_cast<const float*>(k0.data) + 32 * 256, k1.nbytes()), 0);
  // Old layer 5's weights are new layer 4's, untouched.
  const Tensor &d5 = m.layers[5][Role::Down], &d4 = p.layers[4][Role::Down];
  ASSERT_EQ(d5.shape, d4.shape);
  EXPECT_EQ(std::memcmp(d5.data, d4.data, d5.nbytes()), 0);
  EXPECT_NE(d5.data, d4.data);  // owned copy, never aliasing the input
  const int64_t removed = m.n_params() - p.n_params();
  const int64_t want = 2 * 128 * 256 + 2 * 32 * 256 + 100 * 3 * 256 + (2 * 256 * 256 + 2 * 64 * 256 + 2 * 256 + 3 * 704 * 256);
  EXPECT_EQ(removed, want);
}

TEST(SurgeryFixture, RaggedModelRoundTripsThroughSave) {
  for (const char* fx : {"kjv-llama-mha", "kjv-llama-gqa-tied"}) {
    SCOPED_TRACE(fx);
    Model m = Model::load(test::fixture_model(fx));
    auto plan = random_plan(m, {.heads = true, .mlp = true, .layers = true}, 7);
    Model p = remove_groups(m, plan);
    ASSERT_FALSE(p.cfg.uniform());
    auto dir = test::temp_dir("pruned");
    save_model_files(p, dir, DType::F32, test::fixture_model(fx));
    Model r = Model::load(dir);
    EXPECT_EQ(r.cfg.layers, p.cfg.layers);
    EXPECT_EQ(r.cfg.hidden, p.cfg.hidden);
    EXPECT_EQ(r.cfg.n_layer, p.cfg.n_layer);
    EXPECT_EQ(r.cfg.tied, m.cfg.tied);
    auto tokens = random_tokens(m.cfg.vocab, 5);
    auto a = logits_of(p, tokens), b = logits_of(r, tokens);
    expect_close(b, a, 0.0f, 0.0f, std::string(fx) + " reloaded");
    std::filesystem::remove_all(dir);
  }
}

// RMSNorm divides sum(x^2) by C, so removing hidden channels that are zero all along the residual
// stream (zero_groups zeroes their writers: embed column, o and down rows) changes the norm by
// sqrt(C/C'), eps aside. Scaling every norm weight by sqrt(C/C') and eps by C/C' in the pruned
// model makes it exact: rsqrt(S/C' + eps*C/C') * sqrt(C/C') = rsqrt(S/C + eps).
Model to_dtype(const Model& m, DType dt);

TEST(SurgeryFixture, HiddenChannelsExactWithNormCompensation) {
  // llama-bias-tiny: o_proj.bias and down_proj.bias write the residual stream too.
  for (const char* fx : {"kjv-llama-mha", "kjv-llama-gqa-tied", "llama-bias-tiny"}) {
    SCOPED_TRACE(fx);
    Model m = to_dtype(Model::load(test::fixture_model(fx)), DType::F32);  // the norms are rescaled in fp32 below
    GroupOptions o;
    o.heads = o.mlp = false;
    o.hidden = true;
    auto gs = discover_groups(m, o);
    std::mt19937 rng(3);
    std::vector<Group> plan;
    for (auto& g : sample(gs, 40, rng)) plan.push_back(g);
    Model p = remove_groups(m, plan);
    Model z = zero_groups(m, plan);
    ASSERT_EQ(p.cfg.hidden, m.cfg.hidden - 40);
    expect_shapes(p);
    auto tokens = random_tokens(m.cfg.vocab, 11);
    auto plain = logits_of(p, tokens), zeroed = logits_of(z, tokens);
    for (float x : plain) ASSERT_TRUE(std::isfinite(x));
    // Without the compensation the two differ: masking a hidden channel is not removing it.
    EXPECT_GT(max_abs_diff(plain, zeroed), 1e-3);

    const double ratio = double(m.cfg.hidden) / double(p.cfg.hidden);
    auto rescale = [&](Tensor& t) {
      ASSERT_EQ(t.dtype, DType::F32);
      for (int64_t i = 0; i < t.numel(); i++) t.f32_mut()[i] = float(t.f32()[i] * std::sqrt(ratio));
    };
    for (auto& L : p.layers) {
      rescale(L[Role::AttnNorm]);
      rescale(L[Role::MlpNorm]);
    }
    rescale(p.global[size_t(GlobalRole::FinalNorm)]);
    p.cfg.rms_eps *= ratio;
    expect_close(logits_of(p, tokens), zeroed, 1e-4f, 1e-4f, std::string(fx) + " hidden");
  }
}

Model to_dtype(const Model& m, DType dt) {
  Model out = m;
  out.for_each_tensor_mut([&](const std::string&, Tensor& t) { t = t.converted(dt); });
  return out;
}

TEST(SurgeryFixture, Bf16StorageIsKept) {
  Model m = to_dtype(Model::load(test::fixture_model("kjv-llama-gqa-tied")), DType::BF16);
  auto plan = random_plan(m, {.heads = true, .mlp = true, .layers = true}, 9);
  Model p = remove_groups(m, plan);
  p.for_each_tensor([&](const std::string& name, const Tensor& t) { EXPECT_EQ(t.dtype, DType::BF16) << name; });
  check_prune_equals_zero(m, plan, "bf16", 4);
  // Hidden cuts too.
  auto hs = discover_groups(m, {.heads = false, .mlp = false, .hidden = true});
  Model ph = remove_groups(m, {hs[0], hs[100]});
  ph.for_each_tensor([&](const std::string& name, const Tensor& t) { EXPECT_EQ(t.dtype, DType::BF16) << name; });
  EXPECT_EQ(ph.cfg.hidden, 254);
}

// In-memory variants the fixtures do not cover: q/k/v biases, tied GQA, ragged input.
TEST(SurgeryRandom, BiasesTiedAndRaggedInputs) {
  test::RandomModelSpec s;
  s.model_type = "qwen2";
  s.tied = true;
  s.head_dim = 4;
  s.hidden = 24;
  s.layers = {{8, 2, 0, 24}, {4, 2, 0, 16}, {2, 2, 0, 8}, {6, 3, 0, 5}};
  Model m = make_random_model(s);
  for (GqaUnit u : {GqaUnit::KvGroup, GqaUnit::Query})
    for (uint32_t seed = 1; seed <= 4; seed++) {
      SCOPED_TRACE("seed " + std::to_string(seed));
      auto plan = random_plan(m, {.heads = true, .mlp = true, .layers = seed % 2 == 0, .unit = u}, seed);
      check_prune_equals_zero(m, plan, "random model", seed);
      // Biases are sliced with their rows.
      Model p = remove_groups(m, plan);
      for (size_t l = 0; l < p.layers.size(); l++) {
        EXPECT_EQ(p.layers[l][Role::QBias].dim(0), p.layers[l][Role::Q].dim(0));
        EXPECT_EQ(p.layers[l][Role::KBias].dim(0), p.layers[l][Role::K].dim(0));
        EXPECT_EQ(p.layers[l][Role::VBias].dim(0), p.layers[l][Role::V].dim(0));
      }
    }
  // Pruning an already pruned model: groups are rediscovered on its ragged shapes.
  Model p1 = remove_groups(m, random_plan(m, {.heads = true, .mlp = true, .unit = GqaUnit::Query}, 11));
  check_prune_equals_zero(p1, random_plan(p1, {.heads = true, .mlp = true}, 12), "second round", 13);
  // An empty plan changes nothing.
  auto tokens = random_tokens(m.cfg.vocab, 1);
  expect_close(logits_of(remove_groups(m, {}), tokens), logits_of(m, tokens), 0.0f, 0.0f, "empty plan");
}

std::vector<Group> operator+(std::vector<Group> a, const std::vector<Group>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

void expect_refused(const Model& m, const std::vector<Group>& plan, const std::string& needle) {
  try {
    remove_groups(m, plan);
    ADD_FAILURE() << "plan accepted; expected an error containing '" << needle << "'";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(SurgeryRefuses, ImpossiblePlans) {
  auto spec = test::RandomModelSpec::uniform(3, 8, 2, 12);
  spec.head_dim = 4;
  Model m = make_random_model(spec);
  auto kv = discover_groups(m, {.gqa_unit = GqaUnit::KvGroup, .heads = true, .mlp = true, .hidden = true, .layers = true});
  auto q = discover_groups(m, {.gqa_unit = GqaUnit::Query, .heads = true, .mlp = false});
  auto pick = [](const std::vector<Group>& gs, UnitKind k, int layer, std::vector<int> idx) {
    std::vector<Group> out;
    for (auto& g : gs)
      if (g.kind == k && g.layer == layer && std::find(idx.begin(), idx.end(), g.index) != idx.end()) out.push_back(g);
    return out;
  };
  expect_refused(m, pick(kv, UnitKind::KvGroup, 1, {0, 1}), "layer 1: it removes all 8 query heads");
  std::vector<int> all_ff(12);
  std::iota(all_ff.begin(), all_ff.end(), 0);
  expect_refused(m, pick(kv, UnitKind::Mlp, 2, all_ff), "layer 2: it removes all 12 MLP channels");
  expect_refused(m, pick(kv, UnitKind::Layer, 0, {0}) + pick(kv, UnitKind::Layer, 1, {1}) + pick(kv, UnitKind::Layer, 2, {2}),
                 "removes all 3 layers");
  // Query heads: 1 from KV group 0, 2 from KV group 1.
  expect_refused(m, pick(q, UnitKind::Head, 0, {0, 4, 5}), "unevenly");
  // All 4 query heads of KV group 1 without the KV head itself: group 1 keeps 0, group 0 keeps 4.
  expect_refused(m, pick(q, UnitKind::Head, 0, {4, 5, 6, 7}), "unevenly");
  // A KV group removed while one of its query heads' group members is hand-trimmed out.
  {
    auto plan = pick(kv, UnitKind::KvGroup, 0, {1});
    plan[0].members.erase(plan[0].members.begin());  // drop the q rows: heads 4..7 would keep them
    expect_refused(m, plan, "inconsistent");
  }
  // Part of a head.
  {
    auto plan = pick(q, UnitKind::Head, 0, {2});
    for (auto& mem : plan[0].members) mem.index.pop_back();
    expect_refused(m, plan, "part of a query head");
  }
  // A KV head removed with only some of its readers: KV group 1 has heads 4..7; cut the KV rows
  // by hand, and heads 4..6 only.
  {
    auto plan = pick(q, UnitKind::Head, 0, {4, 5, 6});
    Group kvonly = pick(kv, UnitKind::KvGroup, 0, {1})[0];
    std::erase_if(kvonly.members, [](const Member& mem) { return mem.role == int(Role::Q) || mem.role == int(Role::O); });
    plan.push_back(kvonly);
    expect_refused(m, plan, "removes KV head 1 but keeps 1 query head that read it");
  }
  std::vector<int> all_c(32);
  std::iota(all_c.begin(), all_c.end(), 0);
  expect_refused(m, pick(kv, UnitKind::Hidden, -1, all_c), "all 32 hidden channels");
  // A plan for another model.
  {
    auto big = discover_groups(make_random_model(test::RandomModelSpec::uniform(3, 8, 2, 40)), {});
    expect_refused(m, pick(big, UnitKind::Mlp, 0, {30}), "plan made for another model?");
  }
  // Removing a layer together with units inside it is fine (the layer goes anyway).
  auto plan = pick(kv, UnitKind::Layer, 1, {1}) + pick(kv, UnitKind::KvGroup, 1, {0, 1});
  EXPECT_EQ(remove_groups(m, plan).cfg.n_layer, 2);
}

}  // namespace
}  // namespace llmprune
