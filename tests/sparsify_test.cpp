// `llmprune sparsify`: exact sparsity per scope, the zeroed weights are the smallest by the
// criterion (checked against a direct stable sort), N:M patterns, Wanda's calibration norms,
// Ln-structured groups (removed and zeroed agree), storage dtypes, CLI output and errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include "core/error.h"
#include "model/forward.h"
#include "model_factory.h"
#include "prune/sparsify.h"
#include "prune/surgery.h"
#include "test_util.h"

namespace llmprune {
namespace {

constexpr Role kProj[] = {Role::Q, Role::K, Role::V, Role::O, Role::Gate, Role::Up, Role::Down};

// Weights with many ties (multiples of 1/8, both signs), so tie-breaking is exercised.
std::vector<float> tied_weights(size_t n, uint32_t seed) {
  auto v = test::random_vec(n, seed);
  for (auto& x : v) x = std::round(x * 8.0f) / 8.0f;
  return v;
}

// The k smallest by score, ties by position: a stable sort of the positions.
std::vector<uint8_t> direct_mask(const std::vector<float>& score, const std::vector<int64_t>& positions, int64_t k, size_t n) {
  std::vector<int64_t> idx = positions;
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return score[size_t(a)] < score[size_t(b)]; });
  std::vector<uint8_t> mask(n, 0);
  for (int64_t i = 0; i < k; i++) mask[size_t(idx[size_t(i)])] = 1;
  return mask;
}

std::vector<int64_t> range(int64_t a, int64_t b) {
  std::vector<int64_t> v(size_t(b - a));
  std::iota(v.begin(), v.end(), a);
  return v;
}

std::vector<float> abs_of(const std::vector<float>& w) {
  std::vector<float> s(w.size());
  for (size_t i = 0; i < w.size(); i++) s[i] = std::fabs(w[i]);
  return s;
}

std::vector<float> f32_of(const Tensor& t) {
  Tensor c = t.to_f32_copy();
  return {c.f32(), c.f32() + c.numel()};
}

TEST(SparsifySelect, CountsRoundHalfToEvenLikeTorch) {
  EXPECT_EQ(amount_to_count(0.3, 10), 3);
  EXPECT_EQ(amount_to_count(0.25, 10), 2);   // 2.5 -> 2 (Python round)
  EXPECT_EQ(amount_to_count(0.5, 3), 2);     // 1.5 -> 2
  EXPECT_EQ(amount_to_count(0.5, 5), 2);     // 2.5 -> 2
  EXPECT_EQ(amount_to_count(0.35, 10), 4);   // 0.35*10 == 3.5 in double -> 4
  EXPECT_EQ(amount_to_count(0.0, 100), 0);
  EXPECT_EQ(amount_to_count(0.999, 10), 10);
  EXPECT_EQ(amount_to_count(0.2, 688), 138); // 137.6
}

TEST(SparsifySelect, PerTensorZeroesExactlyTheSmallest) {
  const int64_t rows = 7, cols = 13, n = rows * cols;
  auto w = tied_weights(size_t(n), 3);
  auto keys = matrix_score_keys(w.data(), rows, cols, SparsifyMethod::L1, nullptr, 0, 0);
  for (double a : {0.0, 0.1, 0.3, 0.5, 0.77, 0.99}) {
    auto mask = select_in_matrix(keys.data(), rows, cols, SparsityScope::PerTensor, a, 0, 0, "t");
    const int64_t k = amount_to_count(a, n);
    EXPECT_EQ(std::count(mask.begin(), mask.end(), 1), k) << a;
    EXPECT_EQ(mask, direct_mask(abs_of(w), range(0, n), k, size_t(n))) << a;
  }
}

TEST(SparsifySelect, PerRowZeroesExactlyTheSmallestOfEachRow) {
  const int64_t rows = 9, cols = 11;
  auto w = tied_weights(size_t(rows * cols), 4);
  auto keys = matrix_score_keys(w.data(), rows, cols, SparsifyMethod::L1, nullptr, 0, 0);
  auto s = abs_of(w);
  for (double a : {0.2, 0.5, 0.9}) {
    auto mask = select_in_matrix(keys.data(), rows, cols, SparsityScope::PerRow, a, 0, 0, "t");
    const int64_t k = amount_to_count(a, cols);
    for (int64_t r = 0; r < rows; r++) {
      auto expect = direct_mask(s, range(r * cols, (r + 1) * cols), k, size_t(rows * cols));
      for (int64_t j = 0; j < cols; j++) EXPECT_EQ(mask[size_t(r * cols + j)], expect[size_t(r * cols + j)]) << r << "," << j;
      EXPECT_EQ(std::count(mask.begin() + r * cols, mask.begin() + (r + 1) * cols, 1), k);
    }
  }
}

TEST(SparsifySelect, NmPatternHoldsInEveryGroupOfM) {
  const int64_t rows = 6, cols = 24;
  auto w = tied_weights(size_t(rows * cols), 5);
  auto keys = matrix_score_keys(w.data(), rows, cols, SparsifyMethod::L1, nullptr, 0, 0);
  auto s = abs_of(w);
  for (auto [N, M] : {std::pair{2, 4}, {1, 4}, {3, 4}, {4, 8}, {1, 3}}) {
    auto mask = select_in_matrix(keys.data(), rows, cols, SparsityScope::PerTensor, 0.0, N, M, "t");
    for (int64_t g = 0; g < rows * cols; g += M) {
      EXPECT_EQ(std::count(mask.begin() + g, mask.begin() + g + M, 1), N) << N << ":" << M << " group " << g;
      auto expect = direct_mask(s, range(g, g + M), N, size_t(rows * cols));
      for (int64_t i = g; i < g + M; i++) EXPECT_EQ(mask[size_t(i)], expect[size_t(i)]);
    }
  }
  EXPECT_THROW(select_in_matrix(keys.data(), rows, cols, SparsityScope::PerTensor, 0.0, 2, 5, "t"), UserError);
  EXPECT_THROW(parse_nm("4:2", "--nm"), UserError);
  EXPECT_THROW(parse_nm("0:4", "--nm"), UserError);
  EXPECT_THROW(parse_nm("2-4", "--nm"), UserError);
  EXPECT_THROW(parse_nm("2:", "--nm"), UserError);
  EXPECT_EQ(parse_nm("2:4", "--nm"), std::make_pair(2, 4));
}

TEST(SparsifySelect, ThresholdAcrossChunksKeepsVisitingOrder) {
  // 3 chunks with all-equal keys: the first k in visiting order are taken.
  std::vector<uint32_t> a(5, 7), b(4, 7), c(6, 3);
  auto visit = [&](const KeyChunkFn& fn) {
    fn(a.data(), 5);
    fn(b.data(), 4);
    fn(c.data(), 6);
  };
  KeyThreshold t = kth_smallest_threshold(visit, 8);  // 6 threes, then 2 sevens
  EXPECT_EQ(t.key, 7u);
  EXPECT_EQ(t.take_equal, 2);
  t = kth_smallest_threshold(visit, 6);
  EXPECT_EQ(t.key, 3u);
  EXPECT_EQ(t.take_equal, 6);
  // Keys differing only in the high half and in the low half.
  std::vector<uint32_t> d = {0x10000u, 0x1u, 0x10001u, 0x20000u, 0x2u};
  t = kth_smallest_threshold([&](const KeyChunkFn& fn) { fn(d.data(), 5); }, 3);
  EXPECT_EQ(t.key, 0x10000u);
  EXPECT_EQ(t.take_equal, 1);
  EXPECT_EQ(score_key(-0.0f), score_key(0.0f));
  EXPECT_LT(score_key(INFINITY), score_key(NAN));
}

test::RandomModelSpec small_spec(DType dt = DType::F32) {
  auto s = test::RandomModelSpec::uniform(2, 4, 2, 48);
  s.dtype = dt;
  return s;
}

// Gathers the model's targeted projection weights in model order.
std::vector<std::pair<std::string, std::vector<float>>> proj_weights(const Model& m) {
  std::vector<std::pair<std::string, std::vector<float>>> out;
  for (size_t l = 0; l < m.layers.size(); l++)
    for (Role r : kProj) out.emplace_back(layer_tensor_name(*m.arch, r, int(l)), f32_of(m.layers[l][r]));
  return out;
}

TEST(SparsifyModel, PerTensorL1EveryProjectionExact) {
  Model m = test::make_random_model(small_spec());
  auto before = proj_weights(m);
  SparsifyOptions o;
  o.amount = 0.3;
  SparsifyReport rep = sparsify_model(m, o, {}, 0, 0);
  auto after = proj_weights(m);
  ASSERT_EQ(rep.tensors.size(), before.size());
  for (size_t t = 0; t < before.size(); t++) {
    const auto& w = before[t].second;
    const int64_t n = int64_t(w.size()), k = amount_to_count(0.3, n);
    EXPECT_EQ(rep.tensors[t].name, before[t].first);
    EXPECT_EQ(rep.tensors[t].zeroed, k);
    EXPECT_EQ(rep.tensors[t].zeros, k);
    auto expect = direct_mask(abs_of(w), range(0, n), k, w.size());
    for (size_t i = 0; i < w.size(); i++) EXPECT_EQ(after[t].second[i], expect[i] ? 0.0f : w[i]) << before[t].first << " " << i;
  }
  EXPECT_EQ(rep.target_zeroed, rep.target_zeros);
  // Norms and embeddings untouched.
  Model orig = test::make_random_model(small_spec());
  EXPECT_EQ(f32_of(m.embed()), f32_of(orig.embed()));
  EXPECT_EQ(f32_of(m.layers[1][Role::AttnNorm]), f32_of(orig.layers[1][Role::AttnNorm]));
}

TEST(SparsifyModel, GlobalScopeRanksAllTargetsTogether) {
  Model m = test::make_random_model(small_spec());
  auto before = proj_weights(m);
  SparsifyOptions o;
  o.amount = 0.45;
  o.scope = SparsityScope::Global;
  o.targets = {Role::Q, Role::Up, Role::Down};
  SparsifyReport rep = sparsify_model(m, o, {}, 0, 0);
  std::vector<float> all, all_after;
  std::vector<std::pair<std::string, std::vector<float>>> after = proj_weights(m);
  for (size_t t = 0; t < before.size(); t++) {
    Role r = kProj[t % 7];
    if (r != Role::Q && r != Role::Up && r != Role::Down) {
      EXPECT_EQ(after[t].second, before[t].second) << before[t].first;  // not targeted
      continue;
    }
    all.insert(all.end(), before[t].second.begin(), before[t].second.end());
    all_after.insert(all_after.end(), after[t].second.begin(), after[t].second.end());
  }
  const int64_t k = amount_to_count(0.45, int64_t(all.size()));
  EXPECT_EQ(rep.target_params, int64_t(all.size()));
  EXPECT_EQ(rep.target_zeroed, k);
  auto expect = direct_mask(abs_of(all), range(0, int64_t(all.size())), k, all.size());
  for (size_t i = 0; i < all.size(); i++) ASSERT_EQ(all_after[i], expect[i] ? 0.0f : all[i]) << i;
  // Global sparsity differs between tensors (it is one ranking, not per tensor).
  std::set<int64_t> zeroed;
  for (auto& t : rep.tensors) zeroed.insert(t.zeroed * 1000 / t.numel);
  EXPECT_GT(zeroed.size(), 1u);
}

TEST(SparsifyModel, RandomIsExactAndSeeded) {
  Model a = test::make_random_model(small_spec()), b = a, c = a;
  SparsifyOptions o;
  o.method = SparsifyMethod::Random;
  o.amount = 0.5;
  o.scope = SparsityScope::PerRow;
  auto ra = sparsify_model(a, o, {}, 0, 0);
  sparsify_model(b, o, {}, 0, 0);
  o.seed = 9;
  sparsify_model(c, o, {}, 0, 0);
  for (auto& t : ra.tensors) EXPECT_EQ(t.zeroed, t.numel / 2) << t.name;  // every width here is even
  EXPECT_EQ(f32_of(a.layers[0][Role::Q]), f32_of(b.layers[0][Role::Q]));
  EXPECT_NE(f32_of(a.layers[0][Role::Q]), f32_of(c.layers[0][Role::Q]));
}

TEST(SparsifyModel, Bf16StorageKeepsOtherWeightsBitExact) {
  Model m = test::make_random_model(small_spec(DType::BF16));
  Model orig = m;
  SparsifyOptions o;
  o.amount = 0.5;
  o.nm_n = 2;
  o.nm_m = 4;
  sparsify_model(m, o, {}, 0, 0);
  for (size_t l = 0; l < m.layers.size(); l++)
    for (Role r : kProj) {
      const Tensor &t = m.layers[l][r], &u = orig.layers[l][r];
      ASSERT_EQ(t.dtype, DType::BF16);
      auto* p = static_cast<const uint16_t*>(t.data);
      auto* q = static_cast<const uint16_t*>(u.data);
      int64_t zeros = 0;
      for (int64_t i = 0; i < t.numel(); i++) {
        if (p[i] == 0) zeros++;
        else EXPECT_EQ(p[i], q[i]);
      }
      EXPECT_EQ(zeros, t.numel() / 2);
    }
}

// Sums of squares of the projections' inputs, per layer and role, as Runner::forward sees them.
class RecordNorms : public LinearHook {
 public:
  std::map<std::pair<int, int>, std::vector<double>> sumsq;
  void forward(int l, Role r, const float* x, float*, int N, int in, int) override {
    auto& s = sumsq[{l, int(r)}];
    if (s.empty()) s.assign(size_t(in), 0.0);
    for (int n = 0; n < N; n++)
      for (int j = 0; j < in; j++) s[size_t(j)] += double(x[size_t(n) * in + j]) * x[size_t(n) * in + j];
  }
  void backward(int, Role, const float*, const float*, float*, int, int, int) override {}
  std::vector<float> norms(int l, Role r) const {
    std::vector<float> v;
    for (double s : sumsq.at({l, int(r)})) v.push_back(float(std::sqrt(s)));
    return v;
  }
};

RecordNorms record(const Model& m, const std::vector<int32_t>& tokens, int B, int T) {
  Runner run(m, T);
  RecordNorms h;
  run.set_hook(&h);
  std::vector<float> logits(size_t(B) * T * m.cfg.vocab);
  run.forward(tokens.data(), B, T, logits.data());
  return h;
}

void expect_wanda_rows(const std::vector<float>& w, const std::vector<float>& after, const std::vector<float>& norms, int64_t rows,
                       int64_t cols, double amount, const std::string& what) {
  std::vector<float> s(w.size());
  for (int64_t r = 0; r < rows; r++)
    for (int64_t j = 0; j < cols; j++) s[size_t(r * cols + j)] = std::fabs(w[size_t(r * cols + j)]) * norms[size_t(j)];
  const int64_t k = amount_to_count(amount, cols);
  for (int64_t r = 0; r < rows; r++) {
    auto expect = direct_mask(s, range(r * cols, (r + 1) * cols), k, w.size());
    for (int64_t j = r * cols; j < (r + 1) * cols; j++)
      ASSERT_EQ(after[size_t(j)], expect[size_t(j)] ? 0.0f : w[size_t(j)]) << what << " row " << r << " col " << j - r * cols;
  }
}

TEST(SparsifyModel, WandaScoresWeightTimesInputNormPerRowLayerByLayer) {
  Model orig = test::make_random_model(small_spec());
  const int B = 4, T = 16;
  std::vector<int32_t> tokens(size_t(B) * T);
  std::mt19937 rng(11);
  for (auto& t : tokens) t = int32_t(rng() % uint32_t(orig.cfg.vocab));
  Model m = orig;
  SparsifyOptions o;
  o.method = SparsifyMethod::Wanda;
  o.amount = 0.5;
  o.scope = SparsityScope::PerRow;
  SparsifyReport rep = sparsify_model(m, o, tokens, B, T);
  EXPECT_EQ(rep.calib_tokens, B * T);
  for (auto& t : rep.tensors) EXPECT_EQ(t.zeroed, t.numel / 2) << t.name;
  // Layer 0 is measured on the dense model: every projection's input norms.
  RecordNorms dense = record(orig, tokens, B, T);
  for (Role r : kProj) {
    const Tensor& w = orig.layers[0][r];
    expect_wanda_rows(f32_of(w), f32_of(m.layers[0][r]), dense.norms(0, r), w.dim(0), w.dim(1), 0.5,
                      layer_tensor_name(*orig.arch, r, 0));
  }
  // Layer 1's q/k/v inputs come from the already-sparsified layer 0 (Wanda's sequential order).
  RecordNorms seq = record(m, tokens, B, T);
  for (Role r : {Role::Q, Role::K, Role::V}) {
    const Tensor& w = orig.layers[1][r];
    expect_wanda_rows(f32_of(w), f32_of(m.layers[1][r]), seq.norms(1, r), w.dim(0), w.dim(1), 0.5,
                      layer_tensor_name(*orig.arch, r, 1));
  }
  // ... which differs from scoring with the dense model's norms.
  EXPECT_NE(seq.norms(1, Role::Q), dense.norms(1, Role::Q));
  // Wanda differs from plain magnitude.
  Model l1 = orig;
  SparsifyOptions o1 = o;
  o1.method = SparsifyMethod::L1;
  sparsify_model(l1, o1, {}, 0, 0);
  EXPECT_NE(f32_of(l1.layers[0][Role::Q]), f32_of(m.layers[0][Role::Q]));
  // Wanda without calibration windows is a usage error.
  Model x = orig;
  EXPECT_THROW(sparsify_model(x, o, {}, 0, 0), UserError);
}

TEST(SparsifyModel, WandaNmPattern) {
  Model m = test::make_random_model(small_spec());
  const int B = 2, T = 8;
  std::vector<int32_t> tokens(size_t(B) * T);
  for (size_t i = 0; i < tokens.size(); i++) tokens[i] = int32_t((i * 7 + 3) % size_t(m.cfg.vocab));
  SparsifyOptions o;
  o.method = SparsifyMethod::Wanda;
  o.nm_n = 2;
  o.nm_m = 4;
  o.amount = 0.5;
  sparsify_model(m, o, tokens, B, T);
  for (size_t l = 0; l < m.layers.size(); l++)
    for (Role r : kProj) {
      auto w = f32_of(m.layers[l][r]);
      for (size_t g = 0; g < w.size(); g += 4) EXPECT_EQ(std::count(w.begin() + long(g), w.begin() + long(g) + 4, 0.0f), 2);
    }
}

TEST(SparsifyLn, UnitKindsFollowTheAxes) {
  EXPECT_EQ(ln_unit_kind(Role::Q, 0), UnitKind::Head);
  EXPECT_EQ(ln_unit_kind(Role::V, 1), UnitKind::Hidden);
  EXPECT_EQ(ln_unit_kind(Role::O, 1), UnitKind::Head);
  EXPECT_EQ(ln_unit_kind(Role::O, 0), UnitKind::Hidden);
  EXPECT_EQ(ln_unit_kind(Role::Gate, 0), UnitKind::Mlp);
  EXPECT_EQ(ln_unit_kind(Role::Down, 1), UnitKind::Mlp);
  EXPECT_EQ(ln_unit_kind(Role::Down, 0), UnitKind::Hidden);
  SparsifyOptions o;
  o.method = SparsifyMethod::Ln;
  EXPECT_EQ(default_sparsify_targets(o), (std::vector<Role>{Role::Q, Role::K, Role::V, Role::Gate, Role::Up}));
  o.ln_dim = 1;
  EXPECT_EQ(default_sparsify_targets(o), (std::vector<Role>{Role::O, Role::Down}));
}

TEST(SparsifyLn, GateRowsL2RemovesTheSmallestChannels) {
  Model orig = test::make_random_model(small_spec());
  for (int p : {1, 2}) {
    Model m = orig;
    SparsifyOptions o;
    o.method = SparsifyMethod::Ln;
    o.amount = 0.25;
    o.ln_norm = p;
    o.targets = {Role::Gate};
    SparsifyReport rep = sparsify_model(m, o, {}, 0, 0);
    const int F = 48, k = int(amount_to_count(0.25, F));
    for (int l = 0; l < 2; l++) {
      ASSERT_EQ(m.cfg.layers[size_t(l)].d_ff, F - k);
      EXPECT_EQ(m.cfg.layers[size_t(l)].n_head, 4);  // attention untouched
      auto g = f32_of(orig.layers[size_t(l)][Role::Gate]);
      const int C = orig.cfg.hidden;
      std::vector<float> norm(static_cast<size_t>(F));
      for (int j = 0; j < F; j++) {
        double s = 0;
        for (int c = 0; c < C; c++) s += p == 1 ? std::fabs(g[size_t(j * C + c)]) : double(g[size_t(j * C + c)]) * g[size_t(j * C + c)];
        norm[size_t(j)] = float(p == 1 ? s : std::sqrt(s));
      }
      auto removed = direct_mask(norm, range(0, F), k, size_t(F));
      // The kept gate rows are the original rows of the kept channels, in order; same for down cols.
      auto kept = f32_of(m.layers[size_t(l)][Role::Gate]);
      auto down = f32_of(orig.layers[size_t(l)][Role::Down]), kept_down = f32_of(m.layers[size_t(l)][Role::Down]);
      int row = 0;
      for (int j = 0; j < F; j++) {
        if (removed[size_t(j)]) continue;
        for (int c = 0; c < C; c++) {
          ASSERT_EQ(kept[size_t(row * C + c)], g[size_t(j * C + c)]);
          ASSERT_EQ(kept_down[size_t(c * (F - k) + row)], down[size_t(c * F + j)]);
        }
        row++;
      }
    }
    ASSERT_EQ(rep.ln_units.size(), 2u);
    EXPECT_EQ(rep.ln_units[0].removed, k);
    EXPECT_LT(rep.params_after, rep.params_before);
  }
}

TEST(SparsifyLn, ZeroedGroupsGiveTheRemovedModelsLogits) {
  for (bool gqa : {false, true}) {
    auto spec = gqa ? small_spec() : test::RandomModelSpec::uniform(2, 4, 4, 48);
    Model orig = test::make_random_model(spec);
    SparsifyOptions o;
    o.method = SparsifyMethod::Ln;
    o.amount = 0.5;
    o.ln_dim = 1;  // o columns -> heads / KV groups, down columns -> MLP channels
    Model removed = orig, zeroed = orig;
    sparsify_model(removed, o, {}, 0, 0);
    o.ln_keep_shape = true;
    SparsifyReport rz = sparsify_model(zeroed, o, {}, 0, 0);
    EXPECT_EQ(removed.cfg.layers[0].n_kv_head, gqa ? 1 : 2);
    EXPECT_EQ(removed.cfg.layers[0].d_ff, 24);
    EXPECT_EQ(zeroed.cfg.layers[0].d_ff, 48);
    EXPECT_GT(rz.model_zeros_after, 0);
    const int T = 6;
    std::vector<int32_t> tok = {1, 5, 9, 17, 33, 2};
    std::vector<float> a(size_t(T) * orig.cfg.vocab), b(a.size()), c(a.size());
    Runner(removed, T).forward(tok.data(), 1, T, a.data());
    Runner(zeroed, T).forward(tok.data(), 1, T, b.data());
    Runner(orig, T).forward(tok.data(), 1, T, c.data());
    double diff = 0, moved = 0;
    for (size_t i = 0; i < a.size(); i++) {
      diff = std::max(diff, double(std::fabs(a[i] - b[i])));
      moved = std::max(moved, double(std::fabs(a[i] - c[i])));
    }
    EXPECT_LT(diff, 1e-4) << (gqa ? "gqa" : "mha");
    EXPECT_GT(moved, 1e-2);
  }
}

TEST(SparsifyLn, HiddenChannelsWhenAsked) {
  Model m = test::make_random_model(small_spec());
  SparsifyOptions o;
  o.method = SparsifyMethod::Ln;
  o.amount = 0.25;
  o.targets = {Role::Down};  // rows of down = the residual stream
  SparsifyReport rep = sparsify_model(m, o, {}, 0, 0);
  EXPECT_EQ(m.cfg.hidden, 24);
  ASSERT_EQ(rep.ln_units.size(), 1u);
  EXPECT_EQ(rep.ln_units[0].kind, UnitKind::Hidden);
  EXPECT_EQ(rep.ln_units[0].layer, -1);
}

TEST(SparsifyModel, OptionErrors) {
  Model m = test::make_random_model(small_spec());
  SparsifyOptions o;
  o.amount = 1.0;
  EXPECT_THROW(sparsify_model(m, o, {}, 0, 0), UserError);
  o.amount = -0.1;
  EXPECT_THROW(sparsify_model(m, o, {}, 0, 0), UserError);
  o.amount = 0.5;
  o.nm_n = 2;
  o.nm_m = 3;  // hidden 32 is not a multiple of 3
  EXPECT_THROW(sparsify_model(m, o, {}, 0, 0), UserError);
  EXPECT_THROW(parse_sparsify_method("l3"), UserError);
  EXPECT_THROW(parse_sparsity_scope("per-col"), UserError);
}

// ---- CLI ----

std::string fixture(const std::string& m) { return test::fixture_model(m).string(); }

nlohmann::json read_json(const std::filesystem::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}

TEST(SparsifyCli, L1HalfOnTheMhaFixture) {
  auto dir = test::temp_dir("out");
  auto out = dir / "l1";
  auto r = test::run_cli("sparsify " + fixture("kjv-llama-mha") + " --out " + out.string() + " --method l1 --amount 0.5");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("targeted tensors"), std::string::npos) << r.out;
  auto sj = read_json(out / "sparsify.json");
  EXPECT_EQ(sj["tensors"].size(), 6u * 7);
  for (auto& t : sj["tensors"]) EXPECT_EQ(t["zeroed"].get<int64_t>() * 2, t["numel"].get<int64_t>()) << t["name"];
  EXPECT_DOUBLE_EQ(sj["target_sparsity"].get<double>(), 0.5);
  EXPECT_EQ(sj["params_before"], sj["params_after"]);
  Model m = Model::load(out);
  EXPECT_EQ(m.cfg.layers[3].d_ff, 688);
  auto q = f32_of(m.layers[3][Role::Q]);
  EXPECT_EQ(std::count(q.begin(), q.end(), 0.0f), int64_t(q.size()) / 2);
  EXPECT_TRUE(std::filesystem::exists(out / "tokenizer.model"));
  // Refuses to overwrite without --force.
  auto again = test::run_cli("sparsify " + fixture("kjv-llama-mha") + " --out " + out.string() + " --amount 0.5");
  EXPECT_EQ(again.exit_code, 2);
}

TEST(SparsifyCli, WandaTwoFourOnTheGqaFixture) {
  auto dir = test::temp_dir("out");
  auto out = dir / "wanda";
  auto r = test::run_cli("sparsify " + fixture("kjv-llama-gqa-tied") + " --out " + out.string() +
                         " --method wanda --nm 2:4 --targets gate,up,down --calib " +
                         test::fixture_text("kjv.valid.txt").string() + " --calib-samples 4 --calib-seq-len 32 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto sj = nlohmann::json::parse(r.out);
  EXPECT_EQ(sj["settings"]["nm"], "2:4");
  EXPECT_EQ(sj["calib_tokens"], 128);
  Model m = Model::load(out);
  for (size_t l = 0; l < m.layers.size(); l++) {
    auto up = f32_of(m.layers[l][Role::Up]);
    for (size_t g = 0; g < up.size(); g += 4) ASSERT_EQ(std::count(up.begin() + long(g), up.begin() + long(g) + 4, 0.0f), 2);
    auto q = f32_of(m.layers[l][Role::Q]);
    EXPECT_EQ(std::count(q.begin(), q.end(), 0.0f), 0);  // not targeted
  }
}

TEST(SparsifyCli, LnRemovesMlpChannels) {
  auto dir = test::temp_dir("out");
  auto out = dir / "ln";
  auto r = test::run_cli("sparsify " + fixture("kjv-llama-mha") + " --out " + out.string() +
                         " --method ln --n 1 --dim rows --targets gate --amount 0.2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Model m = Model::load(out);
  EXPECT_EQ(m.cfg.layers[0].d_ff, 688 - 138);
  EXPECT_EQ(m.cfg.layers[0].n_head, 8);
}

TEST(SparsifyCli, UsageErrorsAreOneLineExitTwo) {
  auto dir = test::temp_dir("out");
  const std::string base = "sparsify " + fixture("kjv-llama-mha") + " --out " + (dir / "x").string();
  const std::string calib = " --calib " + test::fixture_text("kjv.valid.txt").string();
  for (const char* bad : {" --amount 1", " --amount -0.2", " --amount 0.3 --method l3", " --nm 4:2", " --nm 2:4 --amount 0.5",
                          " --nm 2:4 --scope global", " --amount 0.3 --targets q,lm_head", " --amount 0.3 --scope rows",
                          " --method wanda --amount 0.3", " --amount 0.3 --n 1", " --method ln --amount 0.3 --nm 1:2",
                          " --method ln --amount 0.3 --dim diag", " --amount 0.3 --method ln --n 3", ""}) {
    auto r = test::run_cli(base + bad);
    EXPECT_EQ(r.exit_code, 2) << bad << "\n" << r.err;
    EXPECT_NE(r.err.find("error"), std::string::npos) << bad;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << bad << "\n" << r.err;
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "x"));
  auto r = test::run_cli(base + " --method wanda --amount 0.3" + calib + " --calib-samples 100000");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("kjv.valid.txt"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace llmprune
