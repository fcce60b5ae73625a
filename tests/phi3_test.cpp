// Phi-3 (HF Phi3ForCausalLM) as data only: the "phi3" entry of arch/arch.cpp is LLaMA's table with
// two fused tensors (qkv_proj = [Q | K | V], gate_up_proj = [gate | up]). Fused views on load,
// fused -> split -> fused byte-identical save, pruning = masking on the fused layout, the config
// refusals and the sliding-window cap, logits against transformers' own Phi3ForCausalLM
// (tests/golden/phi3-tiny.lpgd, tools/phi3_reference.py) and every subcommand on the tiny model.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "arch/arch.h"
#include "core/error.h"
#include "graph/groups.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/forward.h"
#include "model/model.h"
#include "golden.h"
#include "model_factory.h"
#include "prune/surgery.h"
#include "every_subcommand.h"
#include "test_util.h"

namespace llmprune {
namespace {

using nlohmann::json;
using test::logits_of;
using test::zero_rows;

test::RandomModelSpec phi3_spec(DType dt = DType::F32) {
  auto s = test::RandomModelSpec::uniform(2, 4, 2, 24);
  s.model_type = "phi3";
  s.dtype = dt;
  return s;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); i++) d = std::max(d, double(std::fabs(a[i] - b[i])));
  return d;
}

std::string read_bytes(const std::filesystem::path& f) {
  std::ifstream in(f, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

const std::vector<int32_t> kIds = {1, 7, 3, 42, 9, 33, 5, 12, 60, 2};

TEST(Phi3, FusedTensorsLoadAsRoleViews) {
  auto dir = test::temp_dir("views");
  save_model_files(test::make_random_model(phi3_spec()), dir, DType::F32, "");
  SafetensorsFile f = SafetensorsFile::open(dir / "model.safetensors");
  EXPECT_TRUE(f.tensors.count("model.layers.1.self_attn.qkv_proj.weight"));
  EXPECT_TRUE(f.tensors.count("model.layers.1.mlp.gate_up_proj.weight"));
  EXPECT_FALSE(f.tensors.count("model.layers.1.self_attn.q_proj.weight"));
  EXPECT_EQ(f.tensors.at("model.layers.1.self_attn.qkv_proj.weight").shape, (std::vector<int64_t>{64, 32}));  // (4 + 2 + 2) x 8
  EXPECT_EQ(f.tensors.at("model.layers.1.mlp.gate_up_proj.weight").shape, (std::vector<int64_t>{48, 32}));
  Model m = Model::load(dir);
  EXPECT_EQ(m.cfg.model_type, "phi3");
  const auto& L = m.layers[1];
  const Tensor& qkv = f.tensors.at("model.layers.1.self_attn.qkv_proj.weight");
  // Role views in [Q | K | V] and [gate | up] order, the same bytes as the stored rows.
  EXPECT_EQ(L[Role::Q].shape, (std::vector<int64_t>{32, 32}));
  EXPECT_EQ(L[Role::K].shape, (std::vector<int64_t>{16, 32}));
  EXPECT_EQ(std::memcmp(L[Role::K].data, static_cast<const uint8_t*>(qkv.data) + L[Role::Q].nbytes(), L[Role::K].nbytes()), 0);
  EXPECT_EQ(std::memcmp(L[Role::V].data, static_cast<const uint8_t*>(qkv.data) + L[Role::Q].nbytes() + L[Role::K].nbytes(),
                        L[Role::V].nbytes()),
            0);
  const Tensor& gu = f.tensors.at("model.layers.1.mlp.gate_up_proj.weight");
  EXPECT_EQ(std::memcmp(L[Role::Gate].data, gu.data, L[Role::Gate].nbytes()), 0);  // the gate is the FIRST half
  EXPECT_EQ(std::memcmp(L[Role::Up].data, static_cast<const uint8_t*>(gu.data) + L[Role::Gate].nbytes(), L[Role::Up].nbytes()), 0);
  EXPECT_EQ(layer_tensor_name(*m.arch, Role::V, 1), "model.layers.1.self_attn.qkv_proj.weight[v]");
  EXPECT_EQ(layer_tensor_name(*m.arch, Role::O, 1), "model.layers.1.self_attn.o_proj.weight");
}

TEST(Phi3, SaveRoundTripIsByteIdentical) {
  for (DType dt : {DType::F32, DType::BF16}) {
    SCOPED_TRACE(dtype_name(dt));
    Model m = test::make_random_model(phi3_spec(dt));
    auto a = test::temp_dir(std::string("a") + dtype_name(dt)), b = test::temp_dir(std::string("b") + dtype_name(dt));
    save_model_files(m, a, dt, "");
    Model back = Model::load(a);
    save_model_files(back, b, dt, "");
    EXPECT_EQ(read_bytes(a / "model.safetensors"), read_bytes(b / "model.safetensors"));
    EXPECT_EQ(read_bytes(a / "config.json"), read_bytes(b / "config.json"));
    EXPECT_EQ(logits_of(back, kIds), logits_of(m, kIds));
    EXPECT_FALSE(std::filesystem::exists(a / "modeling_llmprune.py"));  // uniform: transformers' Phi3ForCausalLM
  }
}

// Zeroing a unit's rows in the FUSED stored tensors (its q, k, v rows; rows j and F+j of
// gate_up_proj) gives the physically pruned model's logits; the pruned model is written back
// fused, with per-layer sizes, and reloads with the same logits.
TEST(Phi3, PruningIsMaskingOnFusedLayout) {
  auto dir0 = test::temp_dir("src");
  save_model_files(test::make_random_model(phi3_spec()), dir0, DType::F32, "");
  Model m = Model::load(dir0);
  auto groups = discover_groups(m, GroupOptions{});
  std::vector<Group> cut;
  for (const Group& g : groups)
    if ((g.kind == UnitKind::KvGroup && g.layer == 1 && g.index == 0) || (g.kind == UnitKind::Mlp && g.layer == 0 && g.index % 5 == 1))
      cut.push_back(g);
  ASSERT_EQ(cut.size(), 6u);
  Model pruned = remove_groups(m, cut);
  EXPECT_EQ(pruned.cfg.layers[1].n_head, 2);
  EXPECT_EQ(pruned.cfg.layers[0].d_ff, 19);

  std::map<std::string, Tensor> stored = test::f32_tensors_of(dir0 / "model.safetensors");
  const int D = 8, N = 4, G = 2, F = 24;
  Tensor& qkv = stored.at("model.layers.1.self_attn.qkv_proj.weight");
  zero_rows(qkv, 0, 2 * D);          // query heads 0, 1 (KV group 0)
  zero_rows(qkv, N * D, D);          // K of group 0
  zero_rows(qkv, N * D + G * D, D);  // V of group 0
  Tensor& gu = stored.at("model.layers.0.mlp.gate_up_proj.weight");
  for (int j = 1; j < F; j += 5) {
    zero_rows(gu, j, 1);      // gate row j
    zero_rows(gu, F + j, 1);  // up row j
  }
  Model masked = Model::from_tensors(m.cfg, stored, "masked");
  auto want = logits_of(pruned, kIds);
  EXPECT_LE(max_abs_diff(logits_of(masked, kIds), want), 1e-5);
  EXPECT_GT(max_abs_diff(logits_of(m, kIds), want), 1e-3);  // the cut matters

  auto dir = test::temp_dir("pruned");
  save_pruned(m, cut, dir, DType::F32, "");
  std::ifstream cj(dir / "config.json");
  json c = json::parse(cj);
  EXPECT_EQ(c["model_type"], "phi3");
  EXPECT_EQ(c["llmprune_layers"][0]["intermediate_size"], 19);
  EXPECT_EQ(c["llmprune_layers"][1]["num_key_value_heads"], 1);
  EXPECT_FALSE(c.contains("auto_map"));  // no remote code for ragged Phi-3: llmprune loads it
  SafetensorsFile pf = SafetensorsFile::open(dir / "model.safetensors");
  EXPECT_EQ(pf.tensors.at("model.layers.1.self_attn.qkv_proj.weight").shape, (std::vector<int64_t>{32, 32}));
  EXPECT_EQ(pf.tensors.at("model.layers.0.mlp.gate_up_proj.weight").shape, (std::vector<int64_t>{38, 32}));
  EXPECT_EQ(logits_of(Model::load(dir), kIds), want);
}

json phi3_config() {
  std::ifstream in(test::fixture_model("phi3-tiny") / "config.json");
  return json::parse(in);
}

void expect_refused(const json& j, const std::string& what) {
  try {
    ModelConfig::from_json(j, "phi3/config.json");
    ADD_FAILURE() << "accepted: " << what;
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

TEST(Phi3, ConfigRefusalsAndSlidingWindowCap) {
  json j = phi3_config();
  ModelConfig c = ModelConfig::from_json(j, "phi3/config.json");
  EXPECT_EQ(c.attention_window, 48);
  EXPECT_EQ(c.max_pos, 48);  // max_position_embeddings 64 capped at the window
  j["partial_rotary_factor"] = 1.0;  // written by newer transformers: the whole head
  EXPECT_EQ(ModelConfig::from_json(j, "phi3/config.json").head_dim, 8);
  j["partial_rotary_factor"] = 0.75;  // Phi-4-mini
  expect_refused(j, "field 'partial_rotary_factor': a partly rotated head");
  j["partial_rotary_factor"] = 0;
  expect_refused(j, "partial_rotary_factor");
  j = phi3_config();
  j["rope_scaling"] = {{"type", "longrope"}, {"short_factor", {1.0}}, {"long_factor", {1.0}}};
  expect_refused(j, "rope_scaling type 'longrope' is not supported");
  j["rope_scaling"] = {{"type", "su"}};
  expect_refused(j, "rope_scaling type 'su' is not supported");
  j = phi3_config();
  j["sliding_window"] = 0;
  expect_refused(j, "field 'sliding_window' must be positive");
  j["sliding_window"] = nullptr;  // no window: the full context
  EXPECT_EQ(ModelConfig::from_json(j, "phi3/config.json").max_pos, 64);
}

// transformers 4.48's Phi3ForCausalLM (eager) on the bf16 weights widened to f32 (tools/phi3_reference.py).
TEST(Phi3, LogitsMatchTransformers) {
  auto g = golden::GoldenFile::load((test::source_dir() / "tests/golden/phi3-tiny.lpgd").string());
  const auto& ids_t = g.get("ids");
  std::vector<int32_t> ids(ids_t.values.begin(), ids_t.values.end());
  Model m = Model::load(test::fixture_model("phi3-tiny"));
  auto got = logits_of(m, ids, int(ids_t.shape[0]));
  EXPECT_TRUE(golden::allclose(got.data(), g.get("logits"), 2e-5, 1e-4));
}

TEST(Phi3Cli, EverySubcommandRuns) {
  const std::string model = test::fixture_model("phi3-tiny").string();
  auto dir = test::temp_dir("run");
  const std::string txt = test::fixture_text("kjv.valid.txt").string();
  const auto p = test::run_every_subcommand(
      model, dir, {"phi3", "qkv_proj.weight[k]", {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"},
                   "model.layers.0.self_attn.qkv_proj.weight", kIds});
  const std::string pruned = p.pruned.string();
  auto long_window = test::run_cli("eval " + model + " --ppl t=" + txt + " --seq-len 64 --max-windows 1");
  EXPECT_EQ(long_window.exit_code, 2);
  EXPECT_NE(long_window.err.find("exceeds the context of"), std::string::npos) << long_window.err;  // max_pos capped at the window
  EXPECT_NE(long_window.err.find("(48)"), std::string::npos) << long_window.err;
  // GGUF: llama.cpp's phi3 (fused attn_qkv, ffn_up = [gate | up], rows as stored); a ragged
  // model is refused (its loader takes one head count and MLP width).
  const std::string gguf = (dir / "x.gguf").string();
  test::cli_ok("export " + model + " --gguf " + gguf);
  gguf::GGUFFile gf = gguf::GGUFFile::open(gguf);
  EXPECT_EQ(gf.get_string("general.architecture"), "phi3");
  EXPECT_EQ(gf.get_uint("phi3.rope.dimension_count"), 8u);
  ASSERT_NE(gf.find_tensor("blk.1.attn_qkv.weight"), nullptr);
  ASSERT_NE(gf.find_tensor("blk.1.ffn_up.weight"), nullptr);
  EXPECT_EQ(gf.find_tensor("blk.1.ffn_gate.weight"), nullptr);
  test::expect_ragged_gguf_refused(pruned, dir / "r.gguf");
}

}  // namespace
}  // namespace llmprune
