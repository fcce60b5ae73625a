// Scale path (docs/scale.md): streaming surgery writes the same bytes as remove_groups +
// save_model_files; the streamed random checkpoint equals make_random_model; mapped pages can be
// dropped without changing results; the memory estimate and --max-memory refuse up front.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <random>

#include "core/error.h"
#include "core/fs.h"
#include "graph/groups.h"
#include "importance/importance.h"
#include "io/safetensors.h"
#include "model/backward.h"
#include "model/forward.h"
#include "model/random_model.h"
#include "model_factory.h"
#include "prune/budget.h"
#include "prune/surgery.h"
#include "test_util.h"

namespace llmprune {
namespace {

std::string file_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Some heads / KV groups, MLP channels and (optionally) hidden channels of every layer.
std::vector<Group> some_groups(const Model& m, bool hidden, uint32_t seed) {
  GroupOptions o;
  o.heads = true;
  o.mlp = true;
  o.hidden = hidden;
  auto gs = discover_groups(m, o);
  std::mt19937 rng(seed);
  std::vector<Group> plan;
  std::map<std::pair<int, int>, int> taken;  // (layer, kind) -> count
  for (auto& g : gs) {
    if (g.kind == UnitKind::Hidden) {
      if (rng() % 8 == 0) plan.push_back(g);
      continue;
    }
    // at most one head unit per layer (always leaves one), about a quarter of the MLP channels
    if (g.kind == UnitKind::Mlp ? rng() % 4 == 0 : taken[{g.layer, int(g.kind)}]++ == 0 && rng() % 2 == 0) plan.push_back(g);
  }
  return plan;
}

void expect_same_checkpoint(const std::filesystem::path& a, const std::filesystem::path& b) {
  EXPECT_EQ(file_bytes(a / "model.safetensors"), file_bytes(b / "model.safetensors"));
  EXPECT_EQ(file_bytes(a / "config.json"), file_bytes(b / "config.json"));
}

TEST(StreamingSurgery, SameBytesAsRemoveGroupsThenSave) {
  for (const char* fx : {"kjv-llama-mha", "kjv-llama-gqa-tied"}) {
    Model m = Model::load(test::fixture_model(fx));
    for (bool hidden : {false, true}) {
      auto plan = some_groups(m, hidden, 7);
      ASSERT_FALSE(plan.empty());
      for (DType dt : {DType::F32, DType::BF16}) {
        auto a = test::temp_dir(std::string(fx) + (hidden ? "-h" : "") + dtype_name(dt) + "-mem");
        auto b = test::temp_dir(std::string(fx) + (hidden ? "-h" : "") + dtype_name(dt) + "-stream");
        save_model_files(remove_groups(m, plan), a, dt, m.dir);
        Model ms = m;
        ms.release_pages = true;  // the streaming mode drops the source pages as it goes
        save_pruned(ms, plan, b, dt, m.dir);
        expect_same_checkpoint(a, b);
        EXPECT_TRUE(std::filesystem::exists(b / "tokenizer.model"));
        Model r = Model::load(b);
        EXPECT_EQ(r.n_params(), remove_groups(m, plan).n_params());
      }
    }
  }
}

TEST(StreamingSurgery, RaggedBf16BiasesAndRefusals) {
  auto spec = test::RandomModelSpec::uniform(3, 4, 2, 24);
  spec.model_type = "qwen2";
  spec.layers[1].d_ff = 16;
  spec.dtype = DType::BF16;
  Model m = test::make_random_model(spec);
  auto plan = some_groups(m, true, 3);
  auto a = test::temp_dir("mem"), b = test::temp_dir("stream");
  save_model_files(remove_groups(m, plan), a, DType::BF16, {});
  save_pruned(m, plan, b, DType::BF16, {});
  expect_same_checkpoint(a, b);
  // The same refusals as remove_groups, before anything is written.
  auto all_mlp = discover_groups(m, {.heads = false, .mlp = true});
  std::vector<Group> layer0;
  for (auto& g : all_mlp)
    if (g.layer == 0) layer0.push_back(g);
  auto c = test::temp_dir("refused");
  EXPECT_THROW(save_pruned(m, layer0, c, DType::BF16, {}), UserError);
  EXPECT_FALSE(std::filesystem::exists(c / "model.safetensors"));
}

TEST(RandomCheckpoint, StreamedEqualsInMemory) {
  ModelConfig cfg = llama_config(64, 2, 4, 2, 96, 128);
  for (DType dt : {DType::BF16, DType::F16, DType::F32}) {
    auto d = test::temp_dir(dtype_name(dt));
    write_random_checkpoint(cfg, dt, 5, d);
    Model disk = Model::load(d);
    Model mem = make_random_model(cfg, dt, 5);
    ASSERT_EQ(disk.storage_dtype(), dt);
    int n = 0;
    mem.for_each_tensor([&](const std::string& name, const Tensor& t) {
      n++;
      bool found = false;
      disk.for_each_tensor([&](const std::string& name2, const Tensor& t2) {
        if (name2 != name) return;
        found = true;
        ASSERT_EQ(t.shape, t2.shape) << name;
        EXPECT_EQ(0, std::memcmp(t.data, t2.data, t.nbytes())) << name;
      });
      EXPECT_TRUE(found) << name;
    });
    EXPECT_EQ(n, 2 * 9 + 3);
  }
}

TEST(ReleasePages, OnlyMappedMemoryAndResultsUnchanged) {
  ModelConfig cfg = llama_config(64, 3, 4, 2, 96, 128);
  auto d = test::temp_dir("ckpt");
  write_random_checkpoint(cfg, DType::BF16, 9, d);
  Model m = Model::load(d);
  const Tensor& q = m.layers[1][Role::Q];
  std::vector<uint8_t> before(static_cast<const uint8_t*>(q.data), static_cast<const uint8_t*>(q.data) + q.nbytes());
  EXPECT_GT(release_mapped_pages(q), 0u);
  EXPECT_EQ(0, std::memcmp(before.data(), q.data, q.nbytes()));  // re-read from the page cache
  // Owned memory is never advised.
  Tensor owned = q.converted(DType::BF16);
  EXPECT_EQ(release_mapped_pages(owned), 0u);
  EXPECT_EQ(0, std::memcmp(before.data(), owned.data, owned.nbytes()));
  std::vector<float> v(1000, 3.0f);
  EXPECT_EQ(release_mapped_pages(v.data(), v.size() * 4), 0u);
  EXPECT_EQ(v[999], 3.0f);

  // Forward and gradients are identical with the streaming mode on (bf16 and f32 storage).
  for (DType dt : {DType::BF16, DType::F32}) {
    auto d2 = test::temp_dir(std::string("g") + dtype_name(dt));
    write_random_checkpoint(cfg, dt, 9, d2);
    Model a = Model::load(d2), b = Model::load(d2);
    b.release_pages = true;
    std::vector<int32_t> tok(2 * 12);
    for (size_t i = 0; i < tok.size(); i++) tok[i] = int32_t((i * 37 + 5) % 128);
    std::vector<float> la(tok.size() * 128), lb(la.size());
    Runner(a).forward(tok.data(), 2, 12, la.data());
    Runner(b).forward(tok.data(), 2, 12, lb.data());
    EXPECT_EQ(la, lb);
    struct Keep : GradSink {
      std::vector<std::vector<float>> g;
      void on_layer(int, const LayerF32&, std::array<GradStats, kNumLayerRoles>& gs) override {
        for (auto& s : gs) g.push_back(s.g);
      }
    } ka, kb;
    GradOptions go;
    go.per_sample = true;
    compute_gradients(a, tok.data(), 2, 12, go, ka);
    compute_gradients(b, tok.data(), 2, 12, go, kb);
    EXPECT_EQ(ka.g, kb.g);
  }
}

TEST(LayerGrads, OnlyWantedLayersSameGradients) {
  ModelConfig cfg = llama_config(64, 5, 4, 2, 96, 128);
  Model m = make_random_model(cfg, DType::BF16, 3);
  std::vector<int32_t> tok(3 * 10);
  for (size_t i = 0; i < tok.size(); i++) tok[i] = int32_t((i * 53 + 7) % 128);
  struct Keep : GradSink {
    std::map<int, std::vector<std::vector<float>>> g;
    void on_layer(int l, const LayerF32&, std::array<GradStats, kNumLayerRoles>& gs) override {
      for (auto& s : gs) {
        g[l].push_back(s.g);
        g[l].push_back(s.a);
      }
    }
  };
  for (bool ps : {false, true}) {
    GradOptions all;
    all.per_sample = ps;
    all.global_grads = false;
    Keep ka;
    auto ra = compute_gradients(m, tok.data(), 3, 10, all, ka);
    GradOptions some = all;
    some.layer_grads = {0, 1, 0, 1, 0};  // layer 0 is never reached, layer 2 and 4 only pass dx down
    Keep ks;
    auto rs = compute_gradients(m, tok.data(), 3, 10, some, ks);
    EXPECT_EQ(ra.loss, rs.loss);
    ASSERT_EQ(ks.g.size(), 2u);
    EXPECT_EQ(ks.g[1], ka.g[1]);
    EXPECT_EQ(ks.g[3], ka.g[3]);
    // Kept activations instead of recomputed ones: the same numbers.
    for (auto* o : {&all, &some}) {
      GradOptions kept = *o;
      kept.keep_activations = true;
      Keep kk, kr;
      compute_gradients(m, tok.data(), 3, 10, *o, kr);
      auto rk = compute_gradients(m, tok.data(), 3, 10, kept, kk);
      EXPECT_EQ(rk.loss, ra.loss);
      EXPECT_EQ(kk.g, kr.g);
    }
  }
  // The FLOP count follows: fewer with a mask, and no backward below the lowest wanted layer.
  EXPECT_LT(gradient_flops(m, 3, 10, false, {0, 1, 0, 1, 0}), gradient_flops(m, 3, 10, false));
  EXPECT_LT(gradient_flops(m, 3, 10, false, {0, 0, 0, 1, 0}), gradient_flops(m, 3, 10, false, {0, 1, 0, 1, 0}));
  EXPECT_EQ(gradient_flops(m, 3, 10, true, {0, 1, 0, 1, 0}) > gradient_flops(m, 3, 10, false, {0, 1, 0, 1, 0}), true);
}

// The scoring sink sums each tensor's rows / columns in one pass; the member scores must equal
// member_slice_score's bit for bit, for every criterion and member kind (hidden channels too).
TEST(Scoring, OnePassSlicesEqualMemberSliceScore) {
  Model m = Model::load(test::fixture_model("kjv-llama-gqa-tied"));
  auto groups = discover_groups(m, {.gqa_unit = GqaUnit::KvGroup, .heads = true, .mlp = true, .hidden = true});
  std::vector<int32_t> tok(4 * 16);
  for (size_t i = 0; i < tok.size(); i++) tok[i] = int32_t((i * 97 + 11) % size_t(m.cfg.vocab));
  // The gradients and weights the sink sees, kept for the direct computation.
  struct Keep : GradSink {
    std::map<std::pair<int, int>, std::array<std::vector<float>, 3>> t;  // (layer, role) -> W, G, A
    void on_layer(int l, const LayerF32& w, std::array<GradStats, kNumLayerRoles>& gs) override {
      for (int r = 0; r < kNumLayerRoles; r++) {
        if (!w[Role(r)]) continue;
        size_t n = std::max(gs[size_t(r)].g.size(), size_t(1));
        t[{l, r}] = {std::vector<float>(w[Role(r)], w[Role(r)] + n), gs[size_t(r)].g, gs[size_t(r)].a};
      }
    }
    void on_global(std::array<const float*, kNumGlobalRoles> w, std::array<GradStats, kNumGlobalRoles>& gs) override {
      for (int r = 0; r < kNumGlobalRoles; r++)
        if (w[size_t(r)]) t[{-1, r}] = {std::vector<float>(w[size_t(r)], w[size_t(r)] + gs[size_t(r)].g.size()), gs[size_t(r)].g, gs[size_t(r)].a};
    }
  };
  for (Criterion c : {Criterion::L1, Criterion::L2, Criterion::Vector, Criterion::Element1, Criterion::Element2, Criterion::Fisher}) {
    Keep keep;  // the batched gradient, or with the Fisher diagonal the per-sample one, as estimate_importance runs it
    GradOptions go;
    go.per_sample = needs_fisher(c);
    compute_gradients(m, tok.data(), 4, 16, go, keep);
    ImportanceOptions io;
    io.criterion = c;
    ImportanceResult r = estimate_importance(m, groups, io, tok, 4, 16);
    size_t checked = 0;
    for (size_t g = 0; g < groups.size(); g++)
      for (size_t k = 0; k < groups[g].members.size(); k++) {
        const Member& mem = groups[g].members[k];
        if (!mem.scores) continue;
        int role = mem.role;
        if (mem.layer < 0 && GlobalRole(role) == GlobalRole::LmHead && m.cfg.tied) role = int(GlobalRole::Embed);
        const Tensor& t = mem.layer >= 0 ? m.layers[size_t(mem.layer)][Role(mem.role)] : m.global[size_t(role)];
        auto& [W, G, A] = keep.t.at({mem.layer, role});
        const int64_t rows = t.dim(0), cols = t.ndim() > 1 ? t.dim(1) : 1;
        double want = member_slice_score(W.data(), G.data(), A.data(), rows, cols, mem, c);
        ASSERT_EQ(r.member_scores[g][k], want) << criterion_name(c) << " " << member_tensor_name(m, mem);
        checked++;
      }
    EXPECT_GT(checked, 100u);
  }
}

TEST(Budget, ParseByteSize) {
  EXPECT_EQ(parse_byte_size("16G", "--max-memory"), 16.0 * (1 << 30));
  EXPECT_EQ(parse_byte_size("16GiB", "--max-memory"), 16.0 * (1 << 30));
  EXPECT_EQ(parse_byte_size("1.5gb", "--max-memory"), 1.5 * (1 << 30));
  EXPECT_EQ(parse_byte_size("512M", "--max-memory"), 512.0 * (1 << 20));
  EXPECT_EQ(parse_byte_size("4096", "--max-memory"), 4096.0);
  for (const char* bad : {"", "G", "16X", "-1G", "0", "1.2.3G", "16 G"}) EXPECT_THROW(parse_byte_size(bad, "--max-memory"), UserError) << bad;
}

TEST(Budget, EstimateGrowsWithCalibrationAndCriterion) {
  Model m = make_random_model(llama_config(256, 4, 8, 4, 512, 1000), DType::BF16, 1);
  PruneShape s;
  s.criterion = Criterion::Element1, s.B = 10, s.T = 64, s.n_groups = 100;
  double e1 = estimate_prune_memory(m, s).total;
  s.B = 40;
  double e1_big = estimate_prune_memory(m, s).total;
  EXPECT_GT(e1_big, e1);
  s.B = 10;
  s.criterion = Criterion::Element2;
  EXPECT_GT(estimate_prune_memory(m, s).total, e1);
  s.global_grads = true;
  EXPECT_GT(estimate_prune_memory(m, s).total, e1);
  s.criterion = Criterion::L1;
  EXPECT_LT(estimate_prune_memory(m, s).total, e1);
  EXPECT_FALSE(estimate_prune_memory(m, s).describe().empty());
  // The gradient FLOPs: four times the forward's matmuls plus attention and head terms.
  EXPECT_GT(gradient_flops(m, 10, 64, false), 4 * 2.0 * 640 * double(m.n_params() - 2 * 1000 * 256));
}

TEST(PruneCli, MaxMemoryRefusesUpFrontWithTheEstimate) {
  auto out = test::temp_dir("out") / "p";
  auto model = test::fixture_model("kjv-llama-mha");
  auto text = test::fixture_text("kjv.valid.txt");
  auto r = test::run_cli("prune " + model.string() + " --out " + out.string() + " --ratio 0.25 --calib " + text.string() +
                         " --max-memory 10M");
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("estimated peak memory"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("exceeds --max-memory 10M"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(out));
  r = test::run_cli("prune " + model.string() + " --out " + out.string() + " --ratio 0.25 --calib " + text.string() +
                    " --max-memory lots");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--max-memory 'lots'"), std::string::npos) << r.err;
  // Within budget: runs, reports the estimate and the gradient pass's figures; with iterative
  // steps the intermediate models stream through a scratch directory that is gone afterwards.
  r = test::run_cli("prune " + model.string() + " --out " + out.string() + " --ratio 0.25 --iterative-steps 2 --calib " +
                    text.string() + " --max-memory 4G --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto pj = nlohmann::json::parse(file_bytes(out / "pruning.json"));
  EXPECT_GT(pj["memory_estimate"]["total_bytes"].get<double>(), 0);
  EXPECT_GT(pj["gradient_flops"].get<double>(), 0);
  EXPECT_GT(pj["importance_seconds"].get<double>(), 0);
  EXPECT_EQ(pj["max_memory_bytes"].get<int64_t>(), int64_t(4) << 30);
  for (auto& e : std::filesystem::directory_iterator(out.parent_path()))
    EXPECT_EQ(e.path().filename().string().find(".step"), std::string::npos) << e.path();
  Model p = Model::load(out);
  EXPECT_LT(p.n_params(), Model::load(model).n_params());
  // Kept or recomputed activations: the same scores, bit for bit.
  std::string scores[2];
  for (int i = 0; i < 2; i++) {
    auto imp = out.parent_path() / ("imp" + std::to_string(i) + ".json");
    r = test::run_cli("prune " + model.string() + " --out " + out.string() + " --force --ratio 0.25 --attn-layers 1:5 --mlp-layers 2:4 --calib " +
                      text.string() + " --taylor element2 --save-importance " + imp.string() + " --activations " +
                      (i ? "keep" : "recompute") + " --json");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(nlohmann::json::parse(r.out)["activations"], i ? "kept" : "recomputed");
    scores[i] = file_bytes(imp);
  }
  EXPECT_EQ(scores[0], scores[1]);
  r = test::run_cli("prune " + model.string() + " --out " + out.string() + " --force --ratio 0.25 --calib " + text.string() +
                    " --activations sometimes");
  EXPECT_EQ(r.exit_code, 2);
}

}  // namespace
}  // namespace llmprune
