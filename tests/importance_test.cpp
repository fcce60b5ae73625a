// Importance scores for every criterion and reduction against the PyTorch reference
// (tools/reference.py computes METHOD.md §8's formulas from autograd gradients).
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "golden.h"
#include "importance/importance.h"
#include "test_util.h"

namespace llmprune {
namespace {

struct Case {
  std::string model, kind, criterion, reduction;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.model << " " << c.kind << " " << c.criterion << "/" << c.reduction; }

std::string case_name(const ::testing::TestParamInfo<Case>& i) {
  std::string s = (i.param.model == "kjv-llama-mha" ? "mha_" : "gqa_") + i.param.kind + "_" + i.param.criterion + "_" + i.param.reduction;
  return s;
}

class ImportanceGolden : public ::testing::TestWithParam<Case> {};

// Lowest-k selections must agree: the pruning decision is what matters.
std::vector<size_t> lowest(const std::vector<double>& v, size_t k) {
  std::vector<size_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
  idx.resize(k);
  std::sort(idx.begin(), idx.end());
  return idx;
}

TEST_P(ImportanceGolden, ScoresAndSelectionMatchReference) {
  const Case& c = GetParam();
  auto g = golden::GoldenFile::load((test::source_dir() / "tests/golden" / (c.model + ".lpgd")).string());
  Model m = Model::load(test::fixture_model(c.model));
  GroupOptions go;
  go.heads = c.kind == "head" || c.kind == "kv_group";
  go.mlp = c.kind == "mlp";
  go.hidden = c.kind == "hidden";
  go.gqa_unit = c.kind == "head" ? GqaUnit::Query : GqaUnit::KvGroup;
  auto groups = discover_groups(m, go);
  const auto& ids_t = g.get("calib/ids");
  std::vector<int32_t> ids(ids_t.values.begin(), ids_t.values.end());
  ImportanceOptions o;
  o.criterion = parse_criterion(c.criterion == "l1" || c.criterion == "l2" ? c.criterion : "taylor", c.criterion);
  o.reduction = parse_reduction(c.reduction);
  auto res = estimate_importance(m, groups, o, ids, int(ids_t.shape[0]), int(ids_t.shape[1]));
  const auto& ref = g.get("imp/" + c.criterion + "/" + c.reduction + "/" + c.kind);
  ASSERT_EQ(res.scores.size(), ref.values.size()) << "group count differs from the reference";
  // Groups come per layer in index order, like the reference's [layer, unit] arrays.
  double maxabs = 0;
  for (double v : ref.values) maxabs = std::max(maxabs, std::abs(v));
  double rtol = c.reduction == "prod" ? 1e-3 : 2e-4;
  double atol = c.criterion == "vector" ? 1e-4 * maxabs : 0.0;
  if (c.kind == "hidden" && (c.reduction == "last" || c.reduction == "prod")) {
    // Hidden members include single norm elements whose fp32 gradients carry ~1e-3 relative
    // noise (the reference measured 2.5e-6 of each tensor's max); a product of 56 members
    // compounds it.
    rtol = c.reduction == "prod" ? 2e-2 : 1e-3;
    atol = c.reduction == "last" ? 1e-3 * maxabs : 0.0;
  }
  EXPECT_TRUE(golden::allclose(res.scores.data(), ref, atol, rtol));
  // The same units are chosen for removal (20% per layer, or of the hidden width).
  size_t per = c.kind == "hidden" ? ref.values.size() : size_t(ref.shape[1]);
  for (size_t l0 = 0; l0 < ref.values.size(); l0 += per) {
    std::vector<double> a(res.scores.begin() + long(l0), res.scores.begin() + long(l0 + per));
    std::vector<double> b(ref.values.begin() + long(l0), ref.values.begin() + long(l0 + per));
    size_t k = std::max<size_t>(1, per / 5);
    auto la = lowest(a, k), lb = lowest(b, k);
    if (c.criterion != "vector") {
      EXPECT_EQ(la, lb) << "selection differs in block starting at " << l0;
    }
  }
}

std::vector<Case> cases() {
  std::vector<Case> out;
  for (std::string crit : {"l1", "l2", "vector", "element1", "element2", "fisher"}) {
    out.push_back({"kjv-llama-mha", "head", crit, "sum"});
    out.push_back({"kjv-llama-mha", "mlp", crit, "sum"});
    out.push_back({"kjv-llama-mha", "hidden", crit, "sum"});
    out.push_back({"kjv-llama-gqa-tied", "kv_group", crit, "sum"});
    out.push_back({"kjv-llama-gqa-tied", "head", crit, "sum"});
    out.push_back({"kjv-llama-gqa-tied", "mlp", crit, "sum"});
    out.push_back({"kjv-llama-gqa-tied", "hidden", crit, "sum"});
  }
  for (std::string red : {"mean", "max", "prod", "first", "last"}) {
    out.push_back({"kjv-llama-mha", "head", "element1", red});
    out.push_back({"kjv-llama-mha", "mlp", "element1", red});
    out.push_back({"kjv-llama-gqa-tied", "kv_group", "element1", red});
    out.push_back({"kjv-llama-gqa-tied", "hidden", "element1", red});
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Reference, ImportanceGolden, ::testing::ValuesIn(cases()), case_name);

TEST(Importance, CalibrationWindows) {
  std::vector<int32_t> stream(100);
  std::iota(stream.begin(), stream.end(), 0);
  CalibOptions o;
  o.file = "x.txt";
  o.samples = 3;
  o.seq_len = 10;
  o.random = false;
  auto w = calibration_windows(stream, o);
  ASSERT_EQ(w.size(), 30u);
  EXPECT_EQ(w[0], 0);
  EXPECT_EQ(w[10], 10);
  EXPECT_EQ(w[29], 29);
  o.random = true;
  o.seed = 7;
  auto r1 = calibration_windows(stream, o), r2 = calibration_windows(stream, o);
  EXPECT_EQ(r1, r2);
  for (int j = 0; j < 3; j++)
    for (int t = 1; t < 10; t++) EXPECT_EQ(r1[size_t(j * 10 + t)], r1[size_t(j * 10)] + t);  // contiguous windows
  o.samples = 11;
  EXPECT_THROW(calibration_windows(stream, o), UserError);
  o.flag = "--stat";
  try {
    calibration_windows(stream, o);
    FAIL() << "a text shorter than the windows must be refused";
  } catch (const UserError& e) {  // the file and the flags the user gave
    EXPECT_NE(std::string(e.what()).find("x.txt"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--stat-samples x --stat-seq-len = 110"), std::string::npos) << e.what();
  }
}

TEST(Importance, ReductionsAndRandom) {
  std::vector<double> s = {2, 3, 4};
  std::vector<bool> counts = {true, false, true};
  EXPECT_DOUBLE_EQ(reduce_members(s, counts, Reduction::Sum), 6);
  EXPECT_DOUBLE_EQ(reduce_members(s, counts, Reduction::Mean), 3);
  EXPECT_DOUBLE_EQ(reduce_members(s, counts, Reduction::Max), 4);
  EXPECT_DOUBLE_EQ(reduce_members(s, counts, Reduction::Prod), 8);
  EXPECT_DOUBLE_EQ(reduce_members(s, counts, Reduction::First), 2);
  EXPECT_DOUBLE_EQ(reduce_members(s, counts, Reduction::Last), 4);
  EXPECT_THROW(parse_criterion("taylor", "third"), UserError);
  EXPECT_THROW(parse_reduction("median"), UserError);
}

}  // namespace
}  // namespace llmprune
