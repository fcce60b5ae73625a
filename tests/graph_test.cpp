// Dependency graph and group discovery (METHOD.md §1, §8) on small in-memory models: MHA, GQA,
// tied embeddings, q/k/v biases, ragged layers; plus the `groups` CLI on the fixtures.
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <numeric>

#include "graph/dependency.h"
#include "graph/groups.h"
#include "model_factory.h"
#include "test_util.h"

namespace llmprune {
namespace {

using test::make_random_model;
using test::RandomModelSpec;

GroupOptions all_kinds(GqaUnit u = GqaUnit::KvGroup) {
  GroupOptions o;
  o.gqa_unit = u;
  o.heads = o.mlp = o.hidden = o.layers = true;
  return o;
}

std::map<UnitKind, int> count_kinds(const std::vector<Group>& gs) {
  std::map<UnitKind, int> c;
  for (auto& g : gs) c[g.kind]++;
  return c;
}

int count_in_layer(const std::vector<Group>& gs, UnitKind k, int layer) {
  int n = 0;
  for (auto& g : gs) n += g.kind == k && g.layer == layer;
  return n;
}

const Group& find_group(const std::vector<Group>& gs, UnitKind k, int layer, int index) {
  for (auto& g : gs)
    if (g.kind == k && g.layer == layer && g.index == index) return g;
  ADD_FAILURE() << "no group " << unit_kind_name(k) << " " << layer << ":" << index;
  static Group none;
  return none;
}

std::vector<int64_t> range(int64_t lo, int64_t hi) {  // [lo, hi)
  std::vector<int64_t> v(size_t(hi - lo));
  std::iota(v.begin(), v.end(), lo);
  return v;
}

struct Expect {
  int layer, role, axis;
  int64_t lo, hi;
  bool scores;
};

void expect_members(const Group& g, const std::vector<Expect>& want) {
  ASSERT_EQ(g.members.size(), want.size()) << unit_kind_name(g.kind) << " " << g.layer << ":" << g.index;
  for (size_t i = 0; i < want.size(); i++) {
    const Member& m = g.members[i];
    SCOPED_TRACE("member " + std::to_string(i));
    EXPECT_EQ(m.layer, want[i].layer);
    EXPECT_EQ(m.role, want[i].role);
    EXPECT_EQ(m.axis, want[i].axis);
    EXPECT_EQ(m.index, range(want[i].lo, want[i].hi));
    EXPECT_EQ(m.scores, want[i].scores);
  }
}

constexpr int R(Role r) { return int(r); }
constexpr int G(GlobalRole r) { return int(r); }

TEST(GraphGroups, MhaHeadsMlpHiddenLayers) {
  auto spec = RandomModelSpec::uniform(2, 4, 4, 24);  // C 32, D 8
  Model m = make_random_model(spec);
  auto gs = discover_groups(m, all_kinds());
  auto c = count_kinds(gs);
  EXPECT_EQ(c[UnitKind::Head], 8);
  EXPECT_EQ(c[UnitKind::KvGroup], 0);
  EXPECT_EQ(c[UnitKind::Mlp], 48);
  EXPECT_EQ(c[UnitKind::Hidden], 32);
  EXPECT_EQ(c[UnitKind::Layer], 2);
  for (int l = 0; l < 2; l++) {
    EXPECT_EQ(count_in_layer(gs, UnitKind::Head, l), 4);
    EXPECT_EQ(count_in_layer(gs, UnitKind::Mlp, l), 24);
  }
  // MHA head h: q, k, v rows and o columns of head h, in execution order.
  expect_members(find_group(gs, UnitKind::Head, 1, 2), {{1, R(Role::Q), 0, 16, 24, true},
                                                        {1, R(Role::K), 0, 16, 24, true},
                                                        {1, R(Role::V), 0, 16, 24, true},
                                                        {1, R(Role::O), 1, 16, 24, true}});
  expect_members(find_group(gs, UnitKind::Mlp, 0, 7), {{0, R(Role::Gate), 0, 7, 8, true},
                                                       {0, R(Role::Up), 0, 7, 8, true},
                                                       {0, R(Role::Down), 1, 7, 8, true}});
  // The query unit changes nothing for MHA: the KV head's only reader is the query head (rule 2).
  auto gq = discover_groups(m, all_kinds(GqaUnit::Query));
  ASSERT_EQ(gq.size(), gs.size());
  for (size_t i = 0; i < gs.size(); i++) {
    EXPECT_EQ(gq[i].kind, gs[i].kind);
    EXPECT_EQ(gq[i].members.size(), gs[i].members.size());
  }
}

TEST(GraphGroups, GqaKvGroupUnit) {
  auto spec = RandomModelSpec::uniform(2, 8, 2, 16);
  spec.head_dim = 4;  // q 32 rows, k/v 8 rows, rep 4
  Model m = make_random_model(spec);
  GroupOptions o;  // heads + mlp, kv-group unit
  auto gs = discover_groups(m, o);
  auto c = count_kinds(gs);
  EXPECT_EQ(c[UnitKind::KvGroup], 4);
  EXPECT_EQ(c[UnitKind::Head], 0);
  EXPECT_EQ(c[UnitKind::Mlp], 32);
  EXPECT_EQ(c[UnitKind::Hidden], 0);
  EXPECT_EQ(count_in_layer(gs, UnitKind::KvGroup, 0), 2);
  // KV head 1 serves query heads 4..7 (h / rep == 1): q rows 16..31, k/v rows 4..7, o cols 16..31.
  expect_members(find_group(gs, UnitKind::KvGroup, 0, 1), {{0, R(Role::Q), 0, 16, 32, true},
                                                           {0, R(Role::K), 0, 4, 8, true},
                                                           {0, R(Role::V), 0, 4, 8, true},
                                                           {0, R(Role::O), 1, 16, 32, true}});
}

TEST(GraphGroups, GqaQueryUnit) {
  auto spec = RandomModelSpec::uniform(2, 8, 2, 16);
  spec.head_dim = 4;
  Model m = make_random_model(spec);
  GroupOptions o;
  o.gqa_unit = GqaUnit::Query;
  auto gs = discover_groups(m, o);
  auto c = count_kinds(gs);
  EXPECT_EQ(c[UnitKind::Head], 16);
  EXPECT_EQ(c[UnitKind::KvGroup], 0);
  EXPECT_EQ(count_in_layer(gs, UnitKind::Head, 1), 8);
  // A query head of a shared KV head: only its q rows and o columns (the KV head has 4 readers).
  expect_members(find_group(gs, UnitKind::Head, 1, 5), {{1, R(Role::Q), 0, 20, 24, true}, {1, R(Role::O), 1, 20, 24, true}});
}

TEST(GraphGroups, QkvBiasMembersDoNotScore) {
  for (int kv : {4, 2}) {
    SCOPED_TRACE("n_kv_head " + std::to_string(kv));
    auto spec = RandomModelSpec::uniform(1, 4, kv, 16);
    spec.model_type = "qwen2";
    Model m = make_random_model(spec);
    for (GqaUnit u : {GqaUnit::KvGroup, GqaUnit::Query}) {
      GroupOptions o;
      o.gqa_unit = u;
      o.mlp = false;
      auto gs = discover_groups(m, o);
      if (kv == 4 || u == GqaUnit::KvGroup) {
        const int rep = 4 / kv;
        const Group& g = find_group(gs, kv == 4 ? UnitKind::Head : UnitKind::KvGroup, 0, 1);
        expect_members(g, {{0, R(Role::Q), 0, 8 * rep, 16 * rep, true},
                           {0, R(Role::QBias), 0, 8 * rep, 16 * rep, false},
                           {0, R(Role::K), 0, 8, 16, true},
                           {0, R(Role::KBias), 0, 8, 16, false},
                           {0, R(Role::V), 0, 8, 16, true},
                           {0, R(Role::VBias), 0, 8, 16, false},
                           {0, R(Role::O), 1, 8 * rep, 16 * rep, true}});
      } else {
        expect_members(find_group(gs, UnitKind::Head, 0, 3),
                       {{0, R(Role::Q), 0, 24, 32, true}, {0, R(Role::QBias), 0, 24, 32, false}, {0, R(Role::O), 1, 24, 32, true}});
      }
    }
  }
}

std::vector<Expect> hidden_members(int n_layer, int d, bool tied) {
  std::vector<Expect> w = {{-1, G(GlobalRole::Embed), 1, d, d + 1, true}};
  for (int l = 0; l < n_layer; l++) {
    w.push_back({l, R(Role::AttnNorm), 0, d, d + 1, true});
    for (Role r : {Role::Q, Role::K, Role::V}) w.push_back({l, R(r), 1, d, d + 1, true});
    w.push_back({l, R(Role::O), 0, d, d + 1, true});
    w.push_back({l, R(Role::MlpNorm), 0, d, d + 1, true});
    for (Role r : {Role::Gate, Role::Up}) w.push_back({l, R(r), 1, d, d + 1, true});
    w.push_back({l, R(Role::Down), 0, d, d + 1, true});
  }
  w.push_back({-1, G(GlobalRole::FinalNorm), 0, d, d + 1, true});
  if (!tied) w.push_back({-1, G(GlobalRole::LmHead), 1, d, d + 1, true});
  return w;
}

TEST(GraphGroups, HiddenChannelSpansModelTiedAndUntied) {
  for (bool tied : {false, true}) {
    SCOPED_TRACE(tied ? "tied" : "untied");
    auto spec = RandomModelSpec::uniform(3, 4, 2, 16);
    spec.tied = tied;
    spec.model_type = "qwen2";  // biases live in head spaces: never in a hidden group
    Model m = make_random_model(spec);
    GroupOptions o;
    o.heads = o.mlp = false;
    o.hidden = true;
    auto gs = discover_groups(m, o);
    ASSERT_EQ(gs.size(), 32u);
    const Group& g = find_group(gs, UnitKind::Hidden, -1, 13);
    expect_members(g, hidden_members(3, 13, tied));
    EXPECT_EQ(member_tensor_name(m, g.members.front()), "model.embed_tokens.weight");
    EXPECT_EQ(member_tensor_name(m, g.members[5]), "model.layers.0.self_attn.o_proj.weight");
    EXPECT_EQ(member_tensor_name(m, g.members.back()), tied ? "model.norm.weight" : "lm_head.weight");
    EXPECT_EQ(member_numel(m, g.members.front()), 64);      // one embed column: vocab entries
    EXPECT_EQ(member_numel(m, g.members[1]), 1);            // attn_norm[d]
    EXPECT_EQ(member_numel(m, g.members[2]), 4 * 8);        // one q column: q rows
  }
}

TEST(GraphGroups, LayerGroupHoldsTheWholeLayer) {
  auto spec = RandomModelSpec::uniform(2, 4, 2, 16);
  spec.model_type = "qwen2";
  Model m = make_random_model(spec);
  GroupOptions o;
  o.heads = o.mlp = false;
  o.layers = true;
  auto gs = discover_groups(m, o);
  ASSERT_EQ(gs.size(), 2u);
  const Group& g = gs[1];
  EXPECT_EQ(g.kind, UnitKind::Layer);
  EXPECT_EQ(g.layer, 1);
  // qwen2: every role but the o/gate/up/down biases, the LayerNorm biases and GLM-4's post-norms
  std::vector<int> present;
  for (int r = 0; r < kNumLayerRoles; r++)
    if (!m.layers[1].w[size_t(r)].empty()) present.push_back(r);
  ASSERT_EQ(present.size(), size_t(kNumLayerRoles) - 8);
  ASSERT_EQ(g.members.size(), present.size());
  int64_t n = 0;
  for (size_t i = 0; i < present.size(); i++) {
    const int r = present[i];
    const Member& mem = g.members[i];
    EXPECT_EQ(mem.role, r);  // execution order
    EXPECT_EQ(mem.layer, 1);
    EXPECT_EQ(mem.axis, 0);
    EXPECT_EQ(int64_t(mem.index.size()), member_tensor(m, mem).dim(0));
    EXPECT_EQ(mem.scores, is_matrix_role(Role(r)));
    n += member_numel(m, mem);
  }
  int64_t layer_params = 0;
  for (auto& t : m.layers[1].w) layer_params += t.empty() ? 0 : t.numel();
  EXPECT_EQ(n, layer_params);
}

// Element-wise coverage: every element of every layer tensor is in exactly one attention/MLP
// unit (or in none for K/V under the query unit, whose heads are never cut), in exactly one
// hidden group along its Hidden axis, and in exactly one layer group.
void check_coverage(const Model& m, GqaUnit unit) {
  auto gs = discover_groups(m, all_kinds(unit));
  const int L = int(m.layers.size());
  struct Counts {
    std::vector<int> unit, hidden, layer;
  };
  std::map<std::pair<int, int>, Counts> cov;  // (layer, role) -> per-element counts
  auto tensor_of = [&](int layer, int role) -> const Tensor& {
    Member mem;
    mem.layer = layer;
    mem.role = role;
    return member_tensor(m, mem);
  };
  for (int l = 0; l < L; l++)
    for (int r = 0; r < kNumLayerRoles; r++) {
      const Tensor& t = m.layers[size_t(l)].w[size_t(r)];
      if (t.empty()) continue;
      auto& c = cov[{l, r}];
      c.unit.assign(size_t(t.numel()), 0);
      c.hidden.assign(size_t(t.numel()), 0);
      c.layer.assign(size_t(t.numel()), 0);
    }
  for (const Group& g : gs)
    for (const Member& mem : g.members) {
      if (mem.layer < 0) continue;
      const Tensor& t = tensor_of(mem.layer, mem.role);
      auto& c = cov.at({mem.layer, mem.role});
      std::vector<int>& v = g.kind == UnitKind::Hidden ? c.hidden : g.kind == UnitKind::Layer ? c.layer : c.unit;
      const int64_t cols = t.ndim() == 2 ? t.dim(1) : 1;
      for (int64_t i : mem.index) {
        if (mem.axis == 0)
          for (int64_t j = 0; j < cols; j++) v[size_t(i * cols + j)]++;
        else
          for (int64_t r = 0; r < t.dim(0); r++) v[size_t(r * cols + i)]++;
      }
    }
  for (auto& [key, c] : cov) {
    auto [l, r] = key;
    const RoleDesc& d = m.arch->layer[size_t(r)];
    const bool has_hidden = d.axis0 == Space::Hidden || d.axis1 == Space::Hidden;
    const bool has_unit_space = d.axis0 != Space::Hidden || (d.axis1 != Space::None && d.axis1 != Space::Hidden);
    const LayerConfig& lc = m.cfg.layers[size_t(l)];
    const bool kv_never_cut = unit == GqaUnit::Query && lc.n_head != lc.n_kv_head && (d.axis0 == Space::KVHeads);
    const int want_unit = has_unit_space && !kv_never_cut ? 1 : 0;
    std::string where = layer_tensor_name(*m.arch, Role(r), l);
    for (size_t i = 0; i < c.unit.size(); i++) {
      ASSERT_EQ(c.unit[i], want_unit) << where << " element " << i;
      ASSERT_EQ(c.hidden[i], has_hidden ? 1 : 0) << where << " element " << i;
      ASSERT_EQ(c.layer[i], 1) << where << " element " << i;
    }
  }
  // Whole-model tensors: only hidden groups touch them, once per element along Hidden.
  for (const Group& g : gs)
    for (const Member& mem : g.members)
      if (mem.layer < 0) {
        EXPECT_EQ(g.kind, UnitKind::Hidden);
      }
}

RandomModelSpec ragged_spec() {
  RandomModelSpec s;
  s.head_dim = 4;
  s.layers = {{8, 2, 0, 24}, {4, 2, 0, 16}, {2, 2, 0, 8}, {6, 3, 0, 5}};
  return s;
}

TEST(GraphGroups, EveryElementCoveredExactlyOnce) {
  std::vector<std::pair<std::string, RandomModelSpec>> specs;
  specs.push_back({"mha", RandomModelSpec::uniform(2, 4, 4, 12)});
  specs.push_back({"gqa", RandomModelSpec::uniform(2, 8, 2, 12)});
  specs.back().second.head_dim = 4;
  specs.push_back({"gqa-tied-bias", specs.back().second});
  specs.back().second.tied = true;
  specs.back().second.qkv_bias = true;
  specs.push_back({"ragged", ragged_spec()});
  for (auto& [name, spec] : specs)
    for (GqaUnit u : {GqaUnit::KvGroup, GqaUnit::Query}) {
      SCOPED_TRACE(name + (u == GqaUnit::Query ? " query" : " kv-group"));
      check_coverage(make_random_model(spec), u);
    }
}

TEST(GraphGroups, RaggedModelUsesPerLayerSizes) {
  Model m = make_random_model(ragged_spec());
  auto gs = discover_groups(m, GroupOptions{});
  // Layer 2 has as many KV heads as query heads: its units are plain heads.
  EXPECT_EQ(count_in_layer(gs, UnitKind::KvGroup, 0), 2);
  EXPECT_EQ(count_in_layer(gs, UnitKind::KvGroup, 1), 2);
  EXPECT_EQ(count_in_layer(gs, UnitKind::Head, 2), 2);
  EXPECT_EQ(count_in_layer(gs, UnitKind::KvGroup, 2), 0);
  EXPECT_EQ(count_in_layer(gs, UnitKind::KvGroup, 3), 3);
  const int ff[] = {24, 16, 8, 5};
  for (int l = 0; l < 4; l++) EXPECT_EQ(count_in_layer(gs, UnitKind::Mlp, l), ff[l]);
  // Layer 1: rep 2, head_dim 4: KV head 1 serves query heads 2, 3.
  expect_members(find_group(gs, UnitKind::KvGroup, 1, 1), {{1, R(Role::Q), 0, 8, 16, true},
                                                           {1, R(Role::K), 0, 4, 8, true},
                                                           {1, R(Role::V), 0, 4, 8, true},
                                                           {1, R(Role::O), 1, 8, 16, true}});
  // Layer 3: 6 query heads over 3 KV heads.
  expect_members(find_group(gs, UnitKind::KvGroup, 3, 2), {{3, R(Role::Q), 0, 16, 24, true},
                                                           {3, R(Role::K), 0, 8, 12, true},
                                                           {3, R(Role::V), 0, 8, 12, true},
                                                           {3, R(Role::O), 1, 16, 24, true}});
  GroupOptions q;
  q.gqa_unit = GqaUnit::Query;
  q.mlp = false;
  auto gq = discover_groups(m, q);
  const int heads[] = {8, 4, 2, 6};
  for (int l = 0; l < 4; l++) EXPECT_EQ(count_in_layer(gq, UnitKind::Head, l), heads[l]);
  EXPECT_EQ(find_group(gq, UnitKind::Head, 0, 7).members.size(), 2u);  // q, o
  EXPECT_EQ(find_group(gq, UnitKind::Head, 2, 1).members.size(), 4u);  // rep 1: q, k, v, o
}

TEST(GraphGroups, GraphSpacesAndClosureRules) {
  auto spec = RandomModelSpec::uniform(2, 8, 2, 16);
  spec.head_dim = 4;
  Model m = make_random_model(spec);
  DependencyGraph g(m);
  // Spaces: hidden, vocab (model-wide) and q/kv/mlp per layer.
  EXPECT_EQ(g.spaces().size(), 2u + 3u * 2u);
  int hs = g.space_instance(Space::Hidden, -1);
  ASSERT_GE(hs, 0);
  // embed col, 2 x (2 norms + q,k,v,gate,up cols + o,down rows), final norm, lm_head col
  EXPECT_EQ(g.spaces()[size_t(hs)].axes.size(), 1u + 2u * 9u + 2u);
  int qi = g.space_instance(Space::QHeads, 1), ki = g.space_instance(Space::KVHeads, 1);
  EXPECT_EQ(g.spaces()[size_t(qi)].block, 4);
  EXPECT_EQ(g.spaces()[size_t(qi)].n_blocks(), 8);
  EXPECT_EQ(g.spaces()[size_t(ki)].n_blocks(), 2);
  EXPECT_EQ(g.spaces()[size_t(qi)].axes.size(), 2u);  // q rows, o cols
  EXPECT_EQ(g.consumers({ki, 1}), (std::vector<Unit>{{qi, 4}, {qi, 5}, {qi, 6}, {qi, 7}}));
  EXPECT_EQ(g.producers({qi, 6}), (std::vector<Unit>{{ki, 1}}));
  // (1): a KV head takes the query heads whose only input it is.
  EXPECT_EQ(g.closure({ki, 0}), (std::vector<Unit>{{qi, 0}, {qi, 1}, {qi, 2}, {qi, 3}, {ki, 0}}));
  // (2) does not fire: the KV head has 4 readers.
  EXPECT_EQ(g.closure({qi, 2}), (std::vector<Unit>{{qi, 2}}));
  EXPECT_EQ(g.axis_node(0, R(Role::Q), 0) >= 0, true);
  EXPECT_EQ(g.axis_node(0, R(Role::QBias), 0), -1);  // no biases in this model
  EXPECT_EQ(g.axis_node(-1, G(GlobalRole::LmHead), 1) >= 0, true);
}

TEST(GraphGroups, UnitKindNames) {
  for (UnitKind k : {UnitKind::Head, UnitKind::KvGroup, UnitKind::Mlp, UnitKind::Hidden, UnitKind::Layer}) {
    UnitKind back;
    ASSERT_TRUE(unit_kind_from_name(unit_kind_name(k), &back));
    EXPECT_EQ(back, k);
  }
  UnitKind x;
  EXPECT_FALSE(unit_kind_from_name("heads", &x));
}

TEST(GraphCli, CountsOnFixtures) {
  auto gqa = test::fixture_model("kjv-llama-gqa-tied").string();
  auto r = test::run_cli("groups '" + gqa + "' --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["counts"]["kv_group"], 12);
  EXPECT_EQ(j["counts"]["mlp"], 6 * 704);
  EXPECT_EQ(j["counts"]["hidden"], 256);
  EXPECT_EQ(j["counts"]["layer"], 6);
  EXPECT_EQ(j["layers"][3]["kv_group"], 2);

  r = test::run_cli("groups '" + gqa + "' --gqa-unit query --kind head --show 2:5 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["counts"]["head"], 48);
  ASSERT_EQ(j["group"]["members"].size(), 2u);
  EXPECT_EQ(j["group"]["members"][0]["tensor"], "model.layers.2.self_attn.q_proj.weight");
  EXPECT_EQ(j["group"]["members"][0]["ranges"], "160..191");
  EXPECT_EQ(j["group"]["members"][1]["axis"], 1);

  auto mha = test::fixture_model("kjv-llama-mha").string();
  r = test::run_cli("groups '" + mha + "' --kind head --show 0:1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("model.layers.0.self_attn.v_proj.weight"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("32..63"), std::string::npos) << r.out;

  r = test::run_cli("groups '" + mha + "' --kind mlp --show 9:0");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("layer 9"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace llmprune
