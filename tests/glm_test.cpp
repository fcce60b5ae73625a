// transformers-native GLM (GlmForCausalLM, model_type "glm") as data: the "glm" entry of
// arch/arch.cpp is LLaMA's table with q/k/v biases (attention_bias), gate_up_proj = [gate | up]
// and ChatGLM2's rotary (consecutive pairs on the first half of each head). Its math is the
// chatglm format's, which tests/chatglm_test.cpp and the kjv-chatglm3 goldens check against
// THUDM's code and PyTorch: the same weights in both layouts must give the same logits,
// gradients and Fisher diagonal. Also: config keys (transformers 5's rope_parameters, the
// refused rotary fractions), the byte-identical fused save, pruning = masking on gate_up_proj,
// and every subcommand.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "arch/arch.h"
#include "core/error.h"
#include "graph/groups.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/backward.h"
#include "model/forward.h"
#include "model/model.h"
#include "model_factory.h"
#include "prune/surgery.h"
#include "every_subcommand.h"
#include "test_util.h"

namespace llmprune {
namespace {

using nlohmann::json;
using test::logits_of;
using test::zero_rows;

// head_dim 16 with hidden 32 and 4 heads: q is 64 rows, not hidden (GLM's kv_channels).
test::RandomModelSpec spec(const std::string& model_type, int vocab = 64) {
  auto s = test::RandomModelSpec::uniform(2, 4, 2, 24);
  s.model_type = model_type;
  s.head_dim = 16;
  s.vocab = vocab;
  s.qkv_bias = true;
  s.seed = 7;
  return s;
}

double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double d = 0, scale = 1e-30;
  for (size_t i = 0; i < a.size() && i < b.size(); i++) {
    d = std::max(d, double(std::fabs(a[i] - b[i])));
    scale = std::max(scale, double(std::fabs(b[i])));
  }
  return d / scale;
}

// Gradient statistics by (layer, role) and global role, whatever the tensor names.
struct ByRole : GradSink {
  std::map<std::pair<int, int>, GradStats> layer;
  std::map<int, GradStats> global;
  void on_layer(int l, const LayerF32&, LayerGrads& g) override {
    for (int r = 0; r < kNumLayerRoles; r++)
      if (!g[size_t(r)].g.empty()) layer[{l, r}] = g[size_t(r)];
  }
  void on_global(std::array<const float*, kNumGlobalRoles>, GlobalGrads& g) override {
    for (int r = 0; r < kNumGlobalRoles; r++)
      if (!g[size_t(r)].g.empty()) global[r] = g[size_t(r)];
  }
};

const std::vector<int32_t> kIds = {1, 7, 3, 42, 9, 33, 5, 12, 60, 2, 17, 8};

TEST(Glm, DescriptionLoadsLlamaNamesWithFusedGateUp) {
  auto dir = test::temp_dir("views");
  save_model_files(test::make_random_model(spec("glm")), dir, DType::F32, "");
  SafetensorsFile f = SafetensorsFile::open(dir / "model.safetensors");
  for (const char* name : {"model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.q_proj.bias",
                           "model.layers.1.self_attn.k_proj.bias", "model.layers.1.self_attn.v_proj.bias",
                           "model.layers.1.self_attn.o_proj.weight", "model.layers.1.mlp.gate_up_proj.weight",
                           "model.layers.1.mlp.down_proj.weight", "lm_head.weight"})
    EXPECT_TRUE(f.tensors.count(name)) << name;
  EXPECT_FALSE(f.tensors.count("model.layers.1.self_attn.o_proj.bias"));
  EXPECT_FALSE(f.tensors.count("model.layers.1.mlp.gate_proj.weight"));
  EXPECT_EQ(f.tensors.at("model.layers.1.self_attn.q_proj.weight").shape, (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(f.tensors.at("model.layers.1.mlp.gate_up_proj.weight").shape, (std::vector<int64_t>{48, 32}));
  Model m = Model::load(dir);
  EXPECT_EQ(m.cfg.model_type, "glm");
  EXPECT_EQ(m.cfg.head_dim, 16);
  const Tensor& gu = f.tensors.at("model.layers.1.mlp.gate_up_proj.weight");
  EXPECT_EQ(std::memcmp(m.layers[1][Role::Gate].data, gu.data, m.layers[1][Role::Gate].nbytes()), 0);  // gate = FIRST half
  EXPECT_EQ(layer_tensor_name(*m.arch, Role::Up, 1), "model.layers.1.mlp.gate_up_proj.weight[up]");
}

// The same weights in the glm layout and in THUDM's chatglm layout (query_key_value = [q | k | v],
// dense_h_to_4h = gate_up_proj, base 10000) are the same model: logits, loss, every gradient and
// the Fisher diagonal agree. The chatglm side is the one checked against THUDM's outputs.
TEST(Glm, SameLogitsGradientsAndFisherAsTheChatglmFormat) {
  Model glm = test::make_random_model(spec("glm"));
  Model chatglm = test::make_random_model(spec("chatglm"));  // the factory draws roles in one order
  ASSERT_EQ(glm.cfg.rope_theta, chatglm.cfg.rope_theta);
  const std::vector<float> a = logits_of(glm, kIds, 2), b = logits_of(chatglm, kIds, 2);
  EXPECT_LE(max_rel_diff(a, b), 1e-6);
  GradOptions opt;
  opt.per_sample = true;
  ByRole ga, gb;
  const BackwardResult ra = compute_gradients(glm, kIds.data(), 2, 6, opt, ga);
  const BackwardResult rb = compute_gradients(chatglm, kIds.data(), 2, 6, opt, gb);
  EXPECT_NEAR(ra.loss, rb.loss, 1e-6 * std::fabs(rb.loss));
  ASSERT_EQ(ga.layer.size(), gb.layer.size());
  EXPECT_EQ(ga.layer.size(), size_t(2 * 12));  // norms 2, q k v + biases 6, o, gate, up, down
  for (const auto& [key, st] : gb.layer) {
    SCOPED_TRACE(std::string(role_desc(*chatglm.arch, Role(key.second)).name) + " layer " + std::to_string(key.first));
    ASSERT_TRUE(ga.layer.count(key));
    EXPECT_LE(max_rel_diff(ga.layer[key].g, st.g), 1e-5);
    EXPECT_LE(max_rel_diff(ga.layer[key].a, st.a), 1e-5);
  }
  ASSERT_EQ(ga.global.size(), gb.global.size());
  for (const auto& [r, st] : gb.global) {
    EXPECT_LE(max_rel_diff(ga.global[r].g, st.g), 1e-5) << r;
    EXPECT_LE(max_rel_diff(ga.global[r].a, st.a), 1e-5) << r;
  }
}

json glm_config() {
  auto dir = test::temp_dir("cfg");
  save_model_files(test::make_random_model(spec("glm")), dir, DType::F32, "");
  std::ifstream in(dir / "config.json");
  return json::parse(in);
}

// transformers 5 writes rope_parameters {rope_type, rope_theta, partial_rotary_factor}; 4.x
// wrote them at the top level. Both are read; other rotary fractions and scalings are refused.
TEST(Glm, ConfigKeysOfBothTransformersGenerations) {
  json j = glm_config();
  j.erase("rope_theta");
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 500000.0}, {"partial_rotary_factor", 0.5}};
  EXPECT_EQ(ModelConfig::from_json(j, "glm/config.json").rope_theta, 500000.0);
  j["rope_theta"] = 10000.0;  // the top-level key wins when both are given
  EXPECT_EQ(ModelConfig::from_json(j, "glm/config.json").rope_theta, 10000.0);

  auto refused = [](const json& cfg, const std::string& field) {
    try {
      ModelConfig::from_json(cfg, "glm/config.json");
      ADD_FAILURE() << "accepted " << cfg.dump();
    } catch (const UserError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("glm/config.json"), std::string::npos) << msg;
      EXPECT_NE(msg.find(field), std::string::npos) << msg;
    }
  };
  json partial = glm_config();
  partial["partial_rotary_factor"] = 0.75;
  refused(partial, "partial_rotary_factor");
  json nested = glm_config();
  nested["rope_parameters"] = {{"rope_type", "default"}, {"partial_rotary_factor", 1.0}};
  refused(nested, "partial_rotary_factor");
  json yarn = glm_config();
  yarn["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  refused(yarn, "yarn");
  json bad = glm_config();
  bad["rope_parameters"] = "default";
  refused(bad, "rope_parameters");
}

TEST(Glm, SaveRoundTripIsByteIdentical) {
  for (DType dt : {DType::F32, DType::BF16}) {
    SCOPED_TRACE(dtype_name(dt));
    auto s = spec("glm");
    s.dtype = dt;
    Model m = test::make_random_model(s);
    auto a = test::temp_dir(std::string("a") + dtype_name(dt)), b = test::temp_dir(std::string("b") + dtype_name(dt));
    save_model_files(m, a, dt, "");
    Model back = Model::load(a);
    save_model_files(back, b, dt, "");
    EXPECT_EQ(test::read_bytes(a / "model.safetensors"), test::read_bytes(b / "model.safetensors"));
    EXPECT_EQ(test::read_bytes(a / "config.json"), test::read_bytes(b / "config.json"));
    EXPECT_EQ(logits_of(back, kIds), logits_of(m, kIds));
  }
}

// Zeroing a KV group's rows (its query heads' q rows and biases, its k and v rows and biases)
// and an MLP channel's rows j and F + j of gate_up_proj gives the physically pruned model's
// logits; the pruned model is written back with per-layer sizes and reloads identically.
TEST(Glm, PruningIsMaskingOnFusedGateUp) {
  auto dir0 = test::temp_dir("src");
  save_model_files(test::make_random_model(spec("glm")), dir0, DType::F32, "");
  Model m = Model::load(dir0);
  std::vector<Group> cut;
  for (const Group& g : discover_groups(m, GroupOptions{}))
    if ((g.kind == UnitKind::KvGroup && g.layer == 1 && g.index == 1) || (g.kind == UnitKind::Mlp && g.layer == 0 && g.index % 5 == 2))
      cut.push_back(g);
  ASSERT_EQ(cut.size(), 6u);
  Model pruned = remove_groups(m, cut);
  EXPECT_EQ(pruned.cfg.layers[1].n_head, 2);
  EXPECT_EQ(pruned.cfg.layers[0].d_ff, 19);

  std::map<std::string, Tensor> stored = test::f32_tensors_of(dir0 / "model.safetensors");
  const int D = 16, F = 24;
  const std::string a = "model.layers.1.self_attn.";
  for (const char* p : {"q_proj.weight", "q_proj.bias"}) zero_rows(stored.at(a + p), 2 * D, 2 * D);  // heads 2, 3
  for (const char* p : {"k_proj.weight", "k_proj.bias", "v_proj.weight", "v_proj.bias"}) zero_rows(stored.at(a + p), D, D);
  Tensor& gu = stored.at("model.layers.0.mlp.gate_up_proj.weight");
  for (int j = 2; j < F; j += 5) {
    zero_rows(gu, j, 1);
    zero_rows(gu, F + j, 1);
  }
  json cfg = glm_config();
  Model masked = Model::from_tensors(ModelConfig::from_json(cfg, "masked/config.json"), std::move(stored), "masked");
  const std::vector<float> want = logits_of(masked, kIds, 2);
  EXPECT_LE(max_rel_diff(logits_of(pruned, kIds, 2), want), 1e-5);
  // A zeroed KV group's bias still adds to k and v: the masking must cover the biases (else this differs).
  auto out = test::temp_dir("pruned");
  save_model_files(pruned, out, DType::F32, dir0);
  EXPECT_EQ(logits_of(Model::load(out), kIds, 2), logits_of(pruned, kIds, 2));
}

TEST(GlmCli, EverySubcommandRuns) {
  auto dir = test::temp_dir("run");
  auto model_dir = dir / "glm-tiny";
  std::filesystem::create_directories(model_dir);
  // The phi3-tiny fixture's 4096-piece SentencePiece tokenizer (trained on kjv.train.txt).
  auto s = spec("glm", 4096);
  s.head_dim = 8;  // heads x head size = hidden, as llama.cpp's chatglm graph needs for the GGUF below
  save_model_files(test::make_random_model(s), model_dir, DType::BF16, "");
  std::filesystem::copy_file(test::fixture_model("phi3-tiny") / "tokenizer.model", model_dir / "tokenizer.model");
  const std::string model = model_dir.string();
  const auto p = test::run_every_subcommand(model, dir, {"glm", "k_proj.weight",
                                                         {"q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj"},
                                                         "model.layers.0.mlp.gate_up_proj.weight", kIds});
  // GGUF as llama.cpp's converter writes GLM (llama.cpp's own check: LlamaCppClient.GlmGguf*):
  // architecture chatglm, q/k/v apart, ffn_up = gate_up_proj; uniform models only.
  test::cli_ok("export " + model + " --gguf " + (dir / "x.gguf").string());
  gguf::GGUFFile gf = gguf::GGUFFile::open((dir / "x.gguf").string());
  EXPECT_EQ(gf.get_string("general.architecture"), "chatglm");
  EXPECT_EQ(gf.get_uint("chatglm.rope.dimension_count"), 4u);
  EXPECT_NE(gf.find_tensor("blk.1.attn_q.bias"), nullptr);
  EXPECT_NE(gf.find_tensor("blk.1.ffn_up.weight"), nullptr);
  EXPECT_EQ(gf.find_tensor("blk.1.ffn_gate.weight"), nullptr);
  test::expect_ragged_gguf_refused(p.pruned.string(), dir / "r.gguf");
}

}  // namespace
}  // namespace llmprune
