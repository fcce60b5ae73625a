// `llmprune prune` end to end on the fixture models: plans, counts, saved output, pruning.json,
// reproducibility, and the errors a user gets for impossible plans.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/forward.h"
#include "prune/plan.h"
#include "test_util.h"

namespace llmprune {
namespace {

std::string fixture(const std::string& m) { return test::fixture_model(m).string(); }
std::string calib() { return test::fixture_text("kjv.valid.txt").string(); }

nlohmann::json read_json(const std::filesystem::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}

TEST(PrunePlan, KeepCountsFollowTheContract) {
  EXPECT_EQ(units_to_keep(640, 0.3), 448);  // the epsilon: 640 x 0.7 keeps 448, not 447
  EXPECT_EQ(units_to_keep(8, 0.25), 6);
  EXPECT_EQ(units_to_keep(8, 0.99), 1);     // never all
  EXPECT_EQ(units_to_keep(688, 0.2), 550);
  EXPECT_THROW(parse_layer_range("4:30", "--attn-layers", 6), UserError);
  EXPECT_THROW(parse_layer_range("3", "--attn-layers", 6), UserError);
  LayerRange r = parse_layer_range("1:5", "--attn-layers", 6);
  EXPECT_FALSE(r.contains(0, 6));
  EXPECT_TRUE(r.contains(4, 6));
  EXPECT_FALSE(r.contains(5, 6));
}

TEST(Prune, BlockElement1OnMhaKeepsTheContractCounts) {
  auto dir = test::temp_dir("out");
  auto out = dir / "pruned";
  auto imp = dir / "imp.json";
  auto r = test::run_cli("prune " + fixture("kjv-llama-mha") + " --out " + out.string() +
                         " --ratio 0.25 --attn-layers 1:5 --mlp-layers 1:5 --calib " + calib() +
                         " --calib-samples 4 --calib-seq-len 64 --calib-sampling sequential --save-importance " + imp.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto pj = read_json(out / "pruning.json");
  for (auto& row : pj["layers"]) {
    int l = row["layer"];
    bool pruned = l >= 1 && l < 5;
    EXPECT_EQ(row["heads_after"].get<int>(), pruned ? 6 : 8) << "layer " << l;
    EXPECT_EQ(row["mlp_after"].get<int>(), pruned ? 516 : 688) << "layer " << l;
  }
  // removed = 4 layers x (2 heads + 172 channels)
  EXPECT_EQ(pj["removed"].size(), 4u * (2 + 172));
  auto scores = read_json(imp);
  EXPECT_EQ(scores.size(), 4u * (8 + 688));
  for (auto& u : pj["removed"]) EXPECT_TRUE(u["kind"] == "head" || u["kind"] == "mlp");
  EXPECT_LT(pj["params_after"].get<int64_t>(), pj["params_before"].get<int64_t>());
  // The saved model loads back with the recorded sizes and runs.
  Model m = Model::load(out);
  EXPECT_EQ(m.cfg.layers[2].n_head, 6);
  EXPECT_EQ(m.cfg.layers[0].d_ff, 688);
  EXPECT_EQ(m.n_params(), pj["params_after"].get<int64_t>());
  EXPECT_TRUE(std::filesystem::exists(out / "tokenizer.model"));
  auto info = test::run_cli("info " + out.string());
  EXPECT_EQ(info.exit_code, 0) << info.err;
  EXPECT_NE(info.out.find("ragged"), std::string::npos);
}

TEST(Prune, GqaKvGroupAndQueryUnits) {
  auto dir = test::temp_dir("out");
  auto r = test::run_cli("prune " + fixture("kjv-llama-gqa-tied") + " --out " + (dir / "kv").string() +
                         " --attn-ratio 0.5 --mlp-ratio 0 --importance l2 --gqa-unit kv-group");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Model kv = Model::load(dir / "kv");
  for (auto& lc : kv.cfg.layers) {
    EXPECT_EQ(lc.n_kv_head, 1);
    EXPECT_EQ(lc.n_head, 4);
  }
  r = test::run_cli("prune " + fixture("kjv-llama-gqa-tied") + " --out " + (dir / "q").string() +
                    " --attn-ratio 0.5 --importance l1 --gqa-unit query");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Model q = Model::load(dir / "q");
  for (auto& lc : q.cfg.layers) {
    EXPECT_EQ(lc.n_kv_head, 2);
    EXPECT_EQ(lc.n_head, 4);  // 2 of 4 query heads kept in each KV group
  }
  EXPECT_TRUE(q.cfg.tied);
}

TEST(Prune, ChannelAndLayerStrategies) {
  auto dir = test::temp_dir("out");
  auto r = test::run_cli("prune " + fixture("kjv-llama-gqa-tied") + " --out " + (dir / "ch").string() +
                         " --strategy channel --ratio 0.25 --importance l1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Model ch = Model::load(dir / "ch");
  EXPECT_EQ(ch.cfg.hidden, 192);
  EXPECT_EQ(ch.cfg.head_dim, 32);
  r = test::run_cli("prune " + fixture("kjv-llama-mha") + " --out " + (dir / "ly").string() +
                    " --strategy layer --drop-layers 2 --layers 1:5 --importance taylor --calib " + calib() +
                    " --calib-samples 2 --calib-seq-len 32");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Model ly = Model::load(dir / "ly");
  EXPECT_EQ(ly.cfg.n_layer, 4);
  auto pj = read_json(dir / "ly" / "pruning.json");
  int removed = 0;
  for (auto& row : pj["layers"]) removed += row.contains("removed") ? 1 : 0;
  EXPECT_EQ(removed, 2);
  EXPECT_FALSE(pj["layers"][0].contains("removed"));
  EXPECT_FALSE(pj["layers"][5].contains("removed"));
}

TEST(Prune, GlobalIterativeAndRoundTo) {
  auto dir = test::temp_dir("out");
  auto r = test::run_cli("prune " + fixture("kjv-llama-mha") + " --out " + (dir / "g").string() +
                         " --ratio 0.3 --global --importance l2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Model g = Model::load(dir / "g");
  int heads = 0, mlp = 0;
  for (auto& lc : g.cfg.layers) {
    heads += lc.n_head;
    mlp += lc.d_ff;
    EXPECT_GE(lc.n_head, 1);
  }
  EXPECT_EQ(heads, units_to_keep(48, 0.3));
  EXPECT_EQ(mlp, units_to_keep(6 * 688, 0.3));
  r = test::run_cli("prune " + fixture("kjv-llama-mha") + " --out " + (dir / "it").string() +
                    " --ratio 0.3 --iterative-steps 3 --round-to 32 --importance taylor --calib " + calib() +
                    " --calib-samples 2 --calib-seq-len 32");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Model it = Model::load(dir / "it");
  for (auto& lc : it.cfg.layers) {
    EXPECT_EQ(lc.d_ff % 32, 0);
    EXPECT_EQ(lc.d_ff, 480);  // floor(688*0.7)=481 -> 480
    EXPECT_EQ(lc.n_head, 5);
  }
}

TEST(Prune, SameSeedSameResult) {
  auto dir = test::temp_dir("out");
  std::string common = " --ratio 0.2 --importance random --seed 11";
  ASSERT_EQ(test::run_cli("prune " + fixture("kjv-llama-gqa-tied") + " --out " + (dir / "a").string() + common).exit_code, 0);
  ASSERT_EQ(test::run_cli("prune " + fixture("kjv-llama-gqa-tied") + " --out " + (dir / "b").string() + common).exit_code, 0);
  EXPECT_EQ(read_json(dir / "a" / "pruning.json")["removed"], read_json(dir / "b" / "pruning.json")["removed"]);
}

TEST(Prune, ImpossiblePlansAreRefusedCleanly) {
  auto dir = test::temp_dir("out");
  auto out = (dir / "x").string();
  struct Case { std::string args, needle; };
  std::vector<Case> cases = {
      {" --ratio 1.0 --importance l1", "--ratio must be in [0, 1)"},
      {" --ratio 0.2 --attn-layers 4:30 --importance l1", "--attn-layers"},
      {" --ratio 0.2 --importance taylor", "--calib"},
      {" --ratio 0.2 --importance taylor --calib /nonexistent.txt", "/nonexistent.txt"},
      {" --ratio 0.2 --importance magic", "--importance"},
      {" --ratio 0.2 --importance taylor --calib " + calib() + " --calib-samples 100000", "fewer than"},
      {" --importance l1", "nothing to prune"},
      {" --strategy layer --drop-layers 6 --importance l1", "every layer"},
  };
  for (auto& c : cases) {
    auto r = test::run_cli("prune " + fixture("kjv-llama-mha") + " --out " + out + c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_EQ(r.err.rfind("llmprune: error: ", 0), 0u) << r.err;
    EXPECT_FALSE(std::filesystem::exists(out)) << "partial output left by" << c.args;
  }
  // An existing output is not replaced without --force.
  std::filesystem::create_directories(out);
  auto r = test::run_cli("prune " + fixture("kjv-llama-mha") + " --out " + out + " --ratio 0.2 --importance l1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--force"), std::string::npos);
}

}  // namespace
}  // namespace llmprune
