// ChatGLM2/3 and GLM-4 ("chatglm" format): the family description (fused query_key_value and
// dense_h_to_4h, consecutive-pair partial rotary, config keys) against THUDM's own outputs, and
// the fused layout through load, save, prune and export.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "arch/arch.h"
#include "core/error.h"
#include "core/fs.h"
#include "graph/groups.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/backward.h"
#include "model/forward.h"
#include "model/model.h"
#include "model/gguf_model.h"
#include "prune/calibration.h"
#include "prune/compensate.h"
#include "prune/depth.h"
#include "prune/surgery.h"
#include "bf16_check.h"
#include "grad_check.h"
#include "glm_steps.h"
#include "test_util.h"
#include "train/lora.h"

namespace llmprune {
namespace {

using nlohmann::json;
using test::max_abs_diff;
using test::run_glm_steps;

// THUDM's official ChatGLMModel on a tiny random 1-layer model (fixtures/chatglm/SOURCE.txt):
// parameters (f32, state-dict order), then ids [3] -> final-norm hidden states [3, 32], one
// decode step id 3 -> [1, 32], another id 4 -> [1, 32].
struct GlmFixture {
  std::map<std::string, Tensor> tensors;
  std::vector<std::vector<int32_t>> ids = std::vector<std::vector<int32_t>>(3);
  std::vector<float> hidden[3];
};

GlmFixture read_glm_fixture(const std::string& file) {
  std::ifstream in(test::shared_dir() / "fixtures/chatglm" / file, std::ios::binary);
  EXPECT_TRUE(in) << file;
  GlmFixture f;
  auto take = [&](const std::string& name, std::vector<int64_t> shape) {
    Tensor t = Tensor::zeros(DType::F32, shape);
    in.read(static_cast<char*>(t.data), std::streamsize(t.nbytes()));
    f.tensors[name] = t;
  };
  const std::string L = "transformer.encoder.layers.0.";
  take("transformer.embedding.word_embeddings.weight", {5, 32});
  take(L + "input_layernorm.weight", {32});
  take(L + "self_attention.query_key_value.weight", {48, 32});
  take(L + "self_attention.query_key_value.bias", {48});
  take(L + "self_attention.dense.weight", {32, 32});
  take(L + "post_attention_layernorm.weight", {32});
  take(L + "mlp.dense_h_to_4h.weight", {96, 32});
  take(L + "mlp.dense_4h_to_h.weight", {32, 48});
  take("transformer.encoder.final_layernorm.weight", {32});
  for (int s = 0; s < 3; s++) {
    const int T = s == 0 ? 3 : 1;
    f.ids[s].resize(size_t(T));
    f.hidden[s].resize(size_t(T) * 32);
    in.read(reinterpret_cast<char*>(f.ids[s].data()), std::streamsize(4 * T));
    in.read(reinterpret_cast<char*>(f.hidden[s].data()), std::streamsize(4 * T * 32));
  }
  EXPECT_TRUE(in) << file << " is shorter than its layout";
  in.peek();
  EXPECT_TRUE(in.eof()) << file << " is longer than its layout";
  // The fixtures stop at the final norm; an output layer is needed to build the model.
  f.tensors["transformer.output_layer.weight"] = Tensor::zeros(DType::F32, {5, 32});
  return f;
}

json tiny_glm_config(double eps) {
  // The fixtures' config (chatglm.cpp tests/test_convert.py): hidden 32, 8 heads of 4, 2 groups.
  return {{"architectures", {"ChatGLMModel"}}, {"model_type", "chatglm"}, {"add_bias_linear", false}, {"add_qkv_bias", true},
          {"apply_query_key_layer_scaling", true}, {"apply_residual_connection_post_layernorm", false},
          {"ffn_hidden_size", 48}, {"hidden_size", 32}, {"kv_channels", 4}, {"layernorm_epsilon", eps},
          {"multi_query_attention", true}, {"multi_query_group_num", 2}, {"num_attention_heads", 8}, {"num_layers", 1},
          {"padded_vocab_size", 5}, {"post_layer_norm", true}, {"rmsnorm", true}, {"seq_length", 8},
          {"tie_word_embeddings", false}, {"torch_dtype", "float32"}, {"eos_token_id", 2}, {"pad_token_id", 0}};
}

class GlmOfficial : public ::testing::TestWithParam<std::tuple<const char*, double>> {};

TEST_P(GlmOfficial, ReproducesThudmHiddenStates) {
  auto [file, eps] = GetParam();
  GlmFixture f = read_glm_fixture(file);
  ModelConfig cfg = ModelConfig::from_json(tiny_glm_config(eps), "tiny-glm/config.json");
  Model m = Model::from_tensors(cfg, f.tensors, "tiny-glm");
  ASSERT_EQ(m.cfg.layers.size(), 1u);
  EXPECT_EQ(m.cfg.layers[0], (LayerConfig{8, 2, 4, 48}));
  auto got = run_glm_steps(m, f.ids, false);
  for (int s = 0; s < 3; s++) EXPECT_LE(max_abs_diff(got[size_t(s)], f.hidden[s]), 1e-5) << file << " step " << s;
}

INSTANTIATE_TEST_SUITE_P(Chatglm, GlmOfficial,
                         ::testing::Values(std::make_tuple("glm2_model.data", 1e-5), std::make_tuple("glm3_model.data", 1e-5),
                                           std::make_tuple("glm4_model.data", 1.5625e-07)));

// The fixture fails when the description is wrong: gate taken as the second half of
// dense_h_to_4h, or rotate-half pairing instead of consecutive pairs.
TEST(GlmOfficial, AblationsDoNotReproduce) {
  GlmFixture f = read_glm_fixture("glm2_model.data");
  ModelConfig cfg = ModelConfig::from_json(tiny_glm_config(1e-5), "tiny-glm/config.json");
  Model m = Model::from_tensors(cfg, f.tensors, "tiny-glm");
  Model swapped = m;
  std::swap(swapped.layers[0][Role::Gate], swapped.layers[0][Role::Up]);
  EXPECT_GT(max_abs_diff(run_glm_steps(swapped, f.ids, false)[0], f.hidden[0]), 1e-3);
  ArchDesc half = *m.arch;
  half.rotary.pairing = RotaryPairing::RotateHalf;
  half.rotary.rotated_num = 1;
  half.rotary.rotated_den = 1;
  Model rotate_half = m;
  rotate_half.arch = &half;
  EXPECT_GT(max_abs_diff(run_glm_steps(rotate_half, f.ids, false)[0], f.hidden[0]), 1e-3);
}

// ---- random ChatGLM models in the stored (fused) layout ----

struct GlmSpec {
  int hidden = 32, head_dim = 8, vocab = 80;
  std::vector<LayerConfig> layers;  // n_head, n_kv_head, d_ff (head_dim from above)
  bool qkv_bias = true;
  bool linear_bias = false;  // add_bias_linear: dense, dense_h_to_4h, dense_4h_to_h biases
  DType dtype = DType::F32;
  uint32_t seed = 3;
};

GlmSpec glm_spec(int n_layer, int heads, int groups, int ff) {
  GlmSpec s;
  s.layers.assign(size_t(n_layer), LayerConfig{heads, groups, 8, ff});
  return s;
}

json glm_config(const GlmSpec& s) {
  json j = tiny_glm_config(1e-5);
  j["hidden_size"] = s.hidden;
  j["kv_channels"] = s.head_dim;
  j["num_layers"] = int(s.layers.size());
  j["num_attention_heads"] = s.layers[0].n_head;
  j["multi_query_group_num"] = s.layers[0].n_kv_head;
  j["ffn_hidden_size"] = s.layers[0].d_ff;
  j["padded_vocab_size"] = s.vocab;
  j["seq_length"] = 64;
  j["rope_ratio"] = 2.5;
  j["add_qkv_bias"] = s.qkv_bias;
  j["add_bias_linear"] = s.linear_bias;
  return j;
}

Tensor rand_t(std::vector<int64_t> shape, std::mt19937& rng, float scale, float offset = 0) {
  Tensor t = Tensor::zeros(DType::F32, std::move(shape));
  std::normal_distribution<float> d(0, 1);
  for (int64_t i = 0; i < t.numel(); i++) t.f32_mut()[i] = offset + scale * d(rng);
  return t;
}

Tensor cat_rows(const std::vector<Tensor>& parts) {
  std::vector<int64_t> shape = parts[0].shape;
  shape[0] = 0;
  for (auto& p : parts) shape[0] += p.dim(0);
  Tensor out = Tensor::zeros(DType::F32, shape);
  uint8_t* o = static_cast<uint8_t*>(out.data);
  for (auto& p : parts) {
    std::memcpy(o, p.data, p.nbytes());
    o += p.nbytes();
  }
  return out;
}

// Stored tensors by their HF names: query_key_value = [Q | K | V], dense_h_to_4h = [gate | up].
std::map<std::string, Tensor> glm_tensors(const GlmSpec& s) {
  std::mt19937 rng(s.seed);
  const int64_t C = s.hidden, D = s.head_dim;
  std::map<std::string, Tensor> t;
  t["transformer.embedding.word_embeddings.weight"] = rand_t({s.vocab, C}, rng, 0.8f);
  for (size_t l = 0; l < s.layers.size(); l++) {
    const LayerConfig& lc = s.layers[l];
    const int64_t Q = lc.n_head * D, K = lc.n_kv_head * D, F = lc.d_ff;
    const std::string p = "transformer.encoder.layers." + std::to_string(l) + ".";
    t[p + "input_layernorm.weight"] = rand_t({C}, rng, 0.2f, 1);
    t[p + "self_attention.query_key_value.weight"] = cat_rows({rand_t({Q, C}, rng, 0.2f), rand_t({K, C}, rng, 0.2f), rand_t({K, C}, rng, 0.2f)});
    if (s.qkv_bias) t[p + "self_attention.query_key_value.bias"] = rand_t({Q + 2 * K}, rng, 0.2f);
    t[p + "self_attention.dense.weight"] = rand_t({C, Q}, rng, 0.2f);
    t[p + "post_attention_layernorm.weight"] = rand_t({C}, rng, 0.2f, 1);
    t[p + "mlp.dense_h_to_4h.weight"] = rand_t({2 * F, C}, rng, 0.2f);
    t[p + "mlp.dense_4h_to_h.weight"] = rand_t({C, F}, rng, 0.2f);
    if (s.linear_bias) {
      t[p + "self_attention.dense.bias"] = rand_t({C}, rng, 0.2f);
      t[p + "mlp.dense_h_to_4h.bias"] = rand_t({2 * F}, rng, 0.2f);
      t[p + "mlp.dense_4h_to_h.bias"] = rand_t({C}, rng, 0.2f);
    }
  }
  t["transformer.encoder.final_layernorm.weight"] = rand_t({C}, rng, 0.2f, 1);
  t["transformer.output_layer.weight"] = rand_t({s.vocab, C}, rng, 0.2f);
  for (auto& [name, x] : t)
    if (s.dtype != DType::F32) x = x.converted(s.dtype);
  return t;
}

Model make_glm(const GlmSpec& s) {
  return Model::from_tensors(ModelConfig::from_json(glm_config(s), "random-glm/config.json"), glm_tensors(s), "random-glm");
}

std::vector<float> logits_of(const Model& m, const std::vector<int32_t>& ids) {
  Runner r(m);
  std::vector<float> out(ids.size() * size_t(m.cfg.vocab));
  r.forward(ids.data(), 1, int(ids.size()), out.data());
  return out;
}

const std::vector<int32_t> kIds = {1, 7, 3, 42, 9, 77, 5, 12, 60, 2};

TEST(Chatglm, ConfigKeysAndRefusals) {
  GlmSpec s = glm_spec(2, 4, 2, 24);
  json j = glm_config(s);
  j["num_hidden_layers"] = 2;  // GLM-4 states both
  ModelConfig c = ModelConfig::from_json(j, "x/config.json");
  EXPECT_EQ(c.n_layer, 2);
  EXPECT_EQ(c.n_kv_head, 2);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.d_ff, 24);
  EXPECT_EQ(c.vocab, 80);
  EXPECT_EQ(c.max_pos, 64);
  EXPECT_DOUBLE_EQ(c.rope_theta, 25000.0);  // 10000 * rope_ratio
  EXPECT_DOUBLE_EQ(c.rms_eps, 1e-5);
  auto refused = [&](const char* key, json v, const std::string& part) {
    json bad = j;
    bad[key] = v;
    try {
      ModelConfig::from_json(bad, "x/config.json");
      ADD_FAILURE() << key << " accepted";
    } catch (const UserError& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("x/config.json"), std::string::npos) << e.what();
    }
  };
  refused("rmsnorm", false, "LayerNorm with bias");
  refused("multi_query_attention", false, "per-head interleaved");
  refused("position_encoding_2d", true, "ChatGLM-6B (v1");
  json no_kv = j;
  no_kv.erase("kv_channels");
  EXPECT_THROW(ModelConfig::from_json(no_kv, "x/config.json"), UserError);
  // Written back with the family's keys, both layer-count spellings updated.
  ModelConfig c2 = c;
  c2.layers.assign(1, LayerConfig{2, 1, 8, 12});
  json out = c2.to_json();
  EXPECT_EQ(out["num_layers"], 1);
  EXPECT_EQ(out["num_hidden_layers"], 1);
  EXPECT_EQ(out["multi_query_group_num"], 1);
  EXPECT_EQ(out["ffn_hidden_size"], 12);
  EXPECT_EQ(out["kv_channels"], 8);
  EXPECT_FALSE(out.contains("intermediate_size"));
  EXPECT_FALSE(out.contains("num_key_value_heads"));
}

TEST(Chatglm, FusedTensorsLoadAsRoleViews) {
  GlmSpec s = glm_spec(2, 4, 2, 24);
  auto stored = glm_tensors(s);
  Model m = Model::from_tensors(ModelConfig::from_json(glm_config(s), "random-glm/config.json"), stored, "random-glm");
  const Tensor& qkv = stored.at("transformer.encoder.layers.1.self_attention.query_key_value.weight");
  const auto& L = m.layers[1];
  // Views into the stored tensor, in [Q | K | V] order.
  EXPECT_EQ(L[Role::Q].data, qkv.data);
  EXPECT_EQ(L[Role::K].data, static_cast<uint8_t*>(qkv.data) + L[Role::Q].nbytes());
  EXPECT_EQ(L[Role::V].data, static_cast<uint8_t*>(qkv.data) + L[Role::Q].nbytes() + L[Role::K].nbytes());
  EXPECT_EQ(L[Role::Q].shape, (std::vector<int64_t>{32, 32}));
  EXPECT_EQ(L[Role::K].shape, (std::vector<int64_t>{16, 32}));
  EXPECT_EQ(L[Role::KBias].shape, (std::vector<int64_t>{16}));
  const Tensor& h4 = stored.at("transformer.encoder.layers.1.mlp.dense_h_to_4h.weight");
  EXPECT_EQ(L[Role::Gate].data, h4.data);  // the gate is the FIRST half
  EXPECT_EQ(L[Role::Up].data, static_cast<uint8_t*>(h4.data) + L[Role::Gate].nbytes());
  EXPECT_EQ(layer_tensor_name(*m.arch, Role::K, 1), "transformer.encoder.layers.1.self_attention.query_key_value.weight[k]");
  // A fused tensor that does not split is refused naming it.
  auto bad = stored;
  bad["transformer.encoder.layers.0.self_attention.query_key_value.weight"] = Tensor::zeros(DType::F32, {45, 32});
  try {
    Model::from_tensors(ModelConfig::from_json(glm_config(s), "x/config.json"), bad, "x");
    ADD_FAILURE() << "accepted";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("query_key_value.weight' has 45 rows"), std::string::npos) << e.what();
  }
}

// fused -> split -> fused: saving a loaded model gives the input file byte for byte.
// With add_bias_linear, dense / dense_h_to_4h ([gate | up] bias, fused too) / dense_4h_to_h biases.
TEST(Chatglm, SaveRefusesByteIdentical) {
  for (bool linear_bias : {false, true})
  for (DType dt : {DType::F32, DType::BF16}) {
    GlmSpec s = glm_spec(2, 4, 2, 24);
    s.dtype = dt;
    s.linear_bias = linear_bias;
    const std::string tag = std::string(dtype_name(dt)) + (linear_bias ? "lb" : "");
    auto dir = test::temp_dir("a" + tag), dir2 = test::temp_dir("b" + tag);
    SafetensorsWriter w;
    w.set_metadata("format", "pt");
    Model m = make_glm(s);
    save_model_files(m, dir, dt, "");
    Model back = Model::load(dir);
    save_model_files(back, dir2, dt, "");
    EXPECT_EQ(test::read_bytes(dir / "model.safetensors"), test::read_bytes(dir2 / "model.safetensors"));
    EXPECT_EQ(test::read_bytes(dir / "config.json"), test::read_bytes(dir2 / "config.json"));
    // The stored tensors are the fused inputs, under their own names.
    SafetensorsFile f = SafetensorsFile::open(dir / "model.safetensors");
    auto in = glm_tensors(s);
    EXPECT_EQ(f.tensors.size(), in.size());
    for (auto& [name, t] : in) {
      ASSERT_TRUE(f.tensors.count(name)) << name;
      EXPECT_EQ(f.tensors.at(name).shape, t.shape) << name;
      EXPECT_EQ(std::memcmp(f.tensors.at(name).data, t.data, t.nbytes()), 0) << name;
    }
    EXPECT_EQ(logits_of(back, kIds), logits_of(m, kIds));
  }
}

// Zeroing a unit's rows in the FUSED tensors on disk (its q, k, v rows and biases; its rows j
// and F+j of dense_h_to_4h) gives the physically pruned model's logits; the pruned model is
// written in the same format and reloads with the same logits.
TEST(Chatglm, PruningIsMaskingOnFusedLayout) {
  GlmSpec s = glm_spec(2, 4, 2, 24);
  Model m = make_glm(s);
  GroupOptions go;
  auto groups = discover_groups(m, go);
  std::vector<Group> cut;
  for (const Group& g : groups)
    if ((g.kind == UnitKind::KvGroup && g.layer == 1 && g.index == 0) || (g.kind == UnitKind::Mlp && g.layer == 0 && g.index % 5 == 1))
      cut.push_back(g);
  ASSERT_EQ(cut.size(), 6u);
  Model pruned = remove_groups(m, cut);
  EXPECT_EQ(pruned.cfg.layers[1], (LayerConfig{2, 1, 8, 24}));
  EXPECT_EQ(pruned.cfg.layers[0], (LayerConfig{4, 2, 8, 19}));

  auto stored = glm_tensors(s);
  const int D = 8, N = 4, G = 2, F = 24;
  auto zero_rows = [](Tensor& t, int64_t r0, int64_t n) {
    const size_t row = t.nbytes() / size_t(t.dim(0));
    std::memset(static_cast<uint8_t*>(t.data) + size_t(r0) * row, 0, size_t(n) * row);
  };
  for (const char* suffix : {"weight", "bias"}) {
    Tensor& qkv = stored.at(std::string("transformer.encoder.layers.1.self_attention.query_key_value.") + suffix);
    zero_rows(qkv, 0, 2 * D);                  // query heads 0, 1 (group 0)
    zero_rows(qkv, N * D + 0 * D, D);          // K of group 0
    zero_rows(qkv, N * D + G * D + 0 * D, D);  // V of group 0
  }
  Tensor& h4 = stored.at("transformer.encoder.layers.0.mlp.dense_h_to_4h.weight");
  for (int j = 1; j < F; j += 5) {
    zero_rows(h4, j, 1);      // gate row j
    zero_rows(h4, F + j, 1);  // up row j
  }
  Model masked = Model::from_tensors(m.cfg, stored, "masked");
  auto want = logits_of(pruned, kIds), got = logits_of(masked, kIds);
  double d = 0;
  for (size_t i = 0; i < want.size(); i++) d = std::max(d, double(std::fabs(want[i] - got[i])));
  EXPECT_LE(d, 1e-5);
  EXPECT_GT(max_abs_diff(logits_of(m, kIds), want), 1e-3);  // the cut matters

  // Ragged result: written in chatglm format with per-layer sizes, reloads with equal logits.
  auto dir = test::temp_dir("pruned");
  save_pruned(m, cut, dir, DType::F32, "");
  std::ifstream cj(dir / "config.json");
  json c = json::parse(cj);
  EXPECT_EQ(c["model_type"], "chatglm");
  EXPECT_EQ(c["num_layers"], 2);
  EXPECT_EQ(c["llmprune_layers"][0]["ffn_hidden_size"], 19);
  EXPECT_EQ(c["llmprune_layers"][1]["multi_query_group_num"], 1);
  EXPECT_FALSE(c.contains("intermediate_size"));
  SafetensorsFile f = SafetensorsFile::open(dir / "model.safetensors");
  EXPECT_EQ(f.tensors.at("transformer.encoder.layers.1.self_attention.query_key_value.weight").shape, (std::vector<int64_t>{32, 32}));
  EXPECT_EQ(f.tensors.at("transformer.encoder.layers.0.mlp.dense_h_to_4h.weight").shape, (std::vector<int64_t>{38, 32}));
  Model back = Model::load(dir);
  EXPECT_EQ(logits_of(back, kIds), want);

  // Uniform result: standard keys only.
  std::vector<Group> uni;
  for (const Group& g : groups)
    if (g.kind == UnitKind::Mlp && g.index < 4) uni.push_back(g);
  auto dir2 = test::temp_dir("uniform");
  save_pruned(m, uni, dir2, DType::F32, "");
  std::ifstream cj2(dir2 / "config.json");
  json c2 = json::parse(cj2);
  EXPECT_EQ(c2["ffn_hidden_size"], 20);
  EXPECT_FALSE(c2.contains("llmprune_layers"));
  EXPECT_EQ(logits_of(Model::load(dir2), kIds), logits_of(remove_groups(m, uni), kIds));
}

// Loss gradient of the whole ChatGLM layer (fused parts, partial consecutive rotary, q/k/v bias,
// kv_channels*heads != hidden) against central finite differences of the loss.
// --compensate bias on ChatGLM: the biases go into dense / dense_4h_to_h, written under
// add_bias_linear (dense_h_to_4h gets zero biases, as THUDM's nn.Linear(bias=add_bias_linear)
// has one); the model reloads with the same logits. GGUF export of a model with those biases is
// refused: llama.cpp's chatglm loader has no attn_output or ffn biases.
TEST(Chatglm, BiasCompensationWritesAddBiasLinear) {
  GlmSpec s = glm_spec(2, 4, 2, 24);
  Model m = make_glm(s);
  std::vector<Group> cut;
  for (const Group& g : discover_groups(m, GroupOptions{}))
    if ((g.kind == UnitKind::KvGroup && g.layer == 1 && g.index == 0) || (g.kind == UnitKind::Mlp && g.layer == 0 && g.index % 5 == 1))
      cut.push_back(g);
  std::vector<int32_t> calib;
  for (int i = 0; i < 4 * 12; i++) calib.push_back(int32_t((i * 37 + 5) % s.vocab));
  CompensationOptions co;
  co.mode = Compensation::Bias;
  CompensatedModel cm = compensate_pruned(m, cut, calib, 4, 12, co);
  for (size_t l = 0; l < 2; l++)
    for (Role b : {Role::OBias, Role::GateBias, Role::UpBias, Role::DownBias}) EXPECT_FALSE(cm.model.layers[l][b].empty());
  EXPECT_FALSE(cm.o_bias[1].empty());     // heads removed in layer 1: dense compensated
  EXPECT_FALSE(cm.down_bias[0].empty());  // MLP channels removed in layer 0
  auto dir = test::temp_dir("comp");
  save_model_files(cm.model, dir, DType::F32, "");
  std::ifstream in(dir / "config.json");
  EXPECT_EQ(json::parse(in)["add_bias_linear"], true);
  SafetensorsFile f = SafetensorsFile::open(dir / "model.safetensors");
  EXPECT_EQ(f.tensors.at("transformer.encoder.layers.0.mlp.dense_h_to_4h.bias").shape, (std::vector<int64_t>{2 * 19}));
  EXPECT_TRUE(f.tensors.count("transformer.encoder.layers.1.self_attention.dense.bias"));
  Model back = Model::load(dir);
  EXPECT_EQ(logits_of(back, kIds), logits_of(cm.model, kIds));
  GlmSpec uniform_with_biases = s;  // (the pruned one is ragged, refused by llama.cpp's chatglm first)
  uniform_with_biases.linear_bias = true;
  try {
    export_gguf(make_glm(uniform_with_biases), nullptr, test::temp_dir("gg") / "x.gguf", DType::F32);
    ADD_FAILURE() << "exported";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("chatglm architecture has no o_bias"), std::string::npos) << e.what();
  }
}

TEST(Chatglm, WeightGradientsMatchFiniteDifferences) {
  GlmSpec s = glm_spec(1, 2, 1, 12);
  s.hidden = 24;  // 2 heads x 8 = 16 != 24
  Model m = make_glm(s);
  test::expect_layer0_grads_match_fd(m, {3, 17, 40, 8, 22, 61},
                                     {Role::Q, Role::QBias, Role::K, Role::KBias, Role::V, Role::Gate, Role::Up}, {0, 5, 7});
}

// Depth pruning on the fused layout: removing attention / MLP sub-blocks equals zeroing their
// residual writers (dense, dense_4h_to_h) in the stored tensors; a layer that loses both is
// dropped. The result is written in chatglm format with the removals per layer and reloads with
// identical logits.
TEST(Chatglm, DepthPruningEqualsZeroedWritersAndReloads) {
  GlmSpec s = glm_spec(3, 4, 2, 24);
  s.linear_bias = true;  // dense / dense_4h_to_h biases go with their sub-block
  Model m = make_glm(s);
  Model p = remove_sublayers(m, {{0, true}, {1, false}, {2, true}, {2, false}});
  ASSERT_EQ(p.layers.size(), 2u);
  EXPECT_EQ(p.cfg.layers[0], (LayerConfig{0, 0, 8, 24}));
  EXPECT_EQ(p.cfg.layers[1], (LayerConfig{4, 2, 8, 0}));
  auto stored = glm_tensors(s);
  for (const char* name : {"0.self_attention.dense.", "1.mlp.dense_4h_to_h.", "2.self_attention.dense.", "2.mlp.dense_4h_to_h."})
    for (const char* suffix : {"weight", "bias"}) {
      Tensor& t = stored.at(std::string("transformer.encoder.layers.") + name + suffix);
      t = Tensor::zeros(t.dtype, t.shape);
    }
  const auto want = logits_of(Model::from_tensors(m.cfg, stored, "zeroed"), kIds);
  EXPECT_LE(max_abs_diff(logits_of(p, kIds), want), 1e-5);
  EXPECT_GT(max_abs_diff(logits_of(m, kIds), want), 1e-3);  // the removal matters

  auto dir = test::temp_dir("depth");
  save_model_files(p, dir, DType::F32, "");
  const json layers = json::parse(std::ifstream(dir / "config.json"))["llmprune_layers"];
  EXPECT_EQ(layers[0]["num_attention_heads"], 0);  // the removals, per layer, in chatglm's keys
  EXPECT_EQ(layers[1]["ffn_hidden_size"], 0);
  const auto& stored_after = SafetensorsFile::open(dir / "model.safetensors").tensors;
  EXPECT_FALSE(stored_after.count("transformer.encoder.layers.0.self_attention.query_key_value.weight"));
  EXPECT_FALSE(stored_after.count("transformer.encoder.layers.1.mlp.dense_h_to_4h.weight"));
  EXPECT_TRUE(stored_after.count("transformer.encoder.layers.1.self_attention.query_key_value.bias"));
  Model back = Model::load(dir);
  EXPECT_EQ(back.cfg.layers, p.cfg.layers);
  EXPECT_EQ(logits_of(back, kIds), logits_of(p, kIds));  // identical
}

}  // namespace
}  // namespace llmprune

namespace llmprune {
namespace {

// A random ChatGLM3-format model directory with the fixtures' SentencePiece tokenizer (4096
// pieces + the 9 ChatGLM specials) and a padded vocabulary larger than the tokenizer.
std::filesystem::path write_glm_dir(const std::string& tag) {
  GlmSpec s = glm_spec(2, 4, 2, 48);
  s.hidden = 64;
  s.head_dim = 16;
  for (auto& l : s.layers) l.head_dim = 16;
  s.vocab = 4160;
  s.dtype = DType::BF16;
  auto dir = test::temp_dir(tag);
  Model m = make_glm(s);
  save_model_files(m, dir, DType::BF16, "");
  std::filesystem::copy_file(test::fixture_model("kjv-llama-mha") / "tokenizer.model", dir / "tokenizer.model");
  return dir;
}

// --compute bf16 on the fused layout (query_key_value, dense_h_to_4h as role views), consecutive
// rotary pairs, GQA and every bias add_qkv_bias / add_bias_linear give (bf16_check.h).
TEST(Chatglm, Bf16ComputeOnFusedLayoutWithBiases) {
  GlmSpec s = glm_spec(2, 4, 2, 24);
  s.linear_bias = true;
  s.dtype = DType::BF16;
  test::expect_bf16_compute_consistent(make_glm(s));
}

TEST(ChatglmTokenizer, SpecialsAfterThePiecesPrefixAndPlainText) {
  auto dir = write_glm_dir("glm-tok");
  auto tok = load_tokenizer_for_model(dir);
  EXPECT_EQ(tok->vocab_size(), 4096 + 9);
  EXPECT_EQ(tok->id_to_piece(4096), "[MASK]");
  EXPECT_EQ(tok->id_to_piece(4097), "[gMASK]");
  EXPECT_EQ(tok->id_to_piece(4100), "eop");
  EXPECT_EQ(tok->id_to_piece(4104), "<|observation|>");
  EXPECT_EQ(tok->prefix_ids(), (std::vector<int32_t>{4097, 4099}));  // [gMASK] sop
  auto plain = load_tokenizer(dir);  // without the family's conventions
  EXPECT_EQ(plain->vocab_size(), 4096);
  // Plain text is SentencePiece alone (THUDM's SPTokenizer.encode): the spellings of the specials
  // inside words ("people" holds eop, "sops") or on their own stay pieces.
  for (const char* text : {"the people", "sop and eop", "[gMASK] <|user|>", "Thou sops"})
    EXPECT_EQ(tok->encode(text), plain->encode(text)) << text;
  auto ids = tok->encode_with_specials("<|user|>\nAnd God said<|assistant|>");
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids.front(), 4102);  // <|user|>: the 7th special (ChatGLM3: 64795 = 64789 + 6)
  EXPECT_EQ(ids.back(), 4103);
  std::vector<int32_t> mid(ids.begin() + 1, ids.end() - 1);
  EXPECT_EQ(mid, plain->encode("\nAnd God said"));
  EXPECT_EQ(tok->decode(ids), plain->decode(mid));
  // The opt-in reads specials in words too: it is for prompts spelled in the chat format.
  auto opt_in = tok->encode_with_specials("the people");
  EXPECT_NE(std::find(opt_in.begin(), opt_in.end(), 4100), opt_in.end());  // eop
  // GLM-4's tiktoken tokenizer.model is refused with a clear message.
  auto glm4 = test::temp_dir("glm4tok");
  std::filesystem::copy_file(test::shared_dir() / "fixtures/tokenizers/llama3/tokenizer.model", glm4 / "tokenizer.model");
  try {
    load_tokenizer(glm4);
    ADD_FAILURE() << "accepted";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("tiktoken"), std::string::npos) << e.what();
  }
}

// The PEFT adapter holds one module per fused tensor (A stacked, B block-diagonal): its update
// B.A equals what merging the per-role adapters adds to the fused tensor, and it reads back into
// the same per-role adapters.
TEST(ChatglmLora, FusedPeftModuleIsTheSameUpdate) {
  GlmSpec s = glm_spec(2, 4, 2, 24);
  Model m = make_glm(s);
  LoraConfig lc;
  lc.targets = {Role::Q, Role::V, Role::Gate, Role::Up, Role::Down};  // k left out: its rows stay zero
  LoraAdapters lora(m, lc);
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0, 0.3f);
  for (LoraPair& p : lora.pairs())
    for (float& b : p.B) b = nd(rng);
  auto dir = test::temp_dir("peft");
  save_peft_adapter(lora, dir, "base");
  SafetensorsFile f = SafetensorsFile::open(dir / "adapter_model.safetensors");
  const std::string qkv = "base_model.model.transformer.encoder.layers.1.self_attention.query_key_value";
  const Tensor& A = f.tensors.at(qkv + ".lora_A.weight");
  const Tensor& B = f.tensors.at(qkv + ".lora_B.weight");
  ASSERT_EQ(A.shape, (std::vector<int64_t>{16, 32}));  // q and v: 2 x r 8
  ASSERT_EQ(B.shape, (std::vector<int64_t>{64, 16}));  // 32 q + 16 k + 16 v rows
  std::ifstream cfg(dir / "adapter_config.json");
  json cj = json::parse(cfg);
  EXPECT_EQ(cj["rank_pattern"]["transformer.encoder.layers.1.self_attention.query_key_value"], 16);
  EXPECT_EQ(cj["alpha_pattern"]["transformer.encoder.layers.1.self_attention.query_key_value"], 32.0);
  EXPECT_EQ(cj["target_modules"], json({"query_key_value", "dense_h_to_4h", "dense_4h_to_h"}));
  // PEFT's update of the fused module: (alpha_pattern / rank_pattern) * B . A.
  Model merged = merge_lora(m, lora);
  const float scale = 32.0f / 16.0f;
  const Role parts[3] = {Role::Q, Role::K, Role::V};
  int64_t row = 0;
  double worst = 0;
  for (Role r : parts) {
    const Tensor& w0 = m.layers[1][r];
    const Tensor& w1 = merged.layers[1][r];
    for (int64_t i = 0; i < w0.dim(0); i++, row++)
      for (int64_t c = 0; c < 32; c++) {
        double d = 0;
        for (int64_t a = 0; a < 16; a++) d += double(B.f32()[row * 16 + a]) * double(A.f32()[a * 32 + c]);
        worst = std::max(worst, std::fabs(scale * d - (double(w1.f32()[i * 32 + c]) - double(w0.f32()[i * 32 + c]))));
      }
  }
  EXPECT_LE(worst, 1e-5);
  LoraAdapters back(m, lc);
  load_lora_weights(back, dir / "adapter_model.safetensors");
  for (size_t i = 0; i < lora.pairs().size(); i++) {
    EXPECT_EQ(back.pairs()[i].A, lora.pairs()[i].A);
    EXPECT_EQ(back.pairs()[i].B, lora.pairs()[i].B);
  }
}

// Every subcommand on a chatglm directory (block pruning with Taylor element1 by KV groups, LoRA
// on the family's modules, HF and GGUF export).
TEST(ChatglmCli, EverySubcommandRuns) {
  auto dir = write_glm_dir("glm-model");  // not "cli": run_cli uses that name for its own scratch dir
  const auto outs = test::temp_dir("glm-outputs");  // this test's own (a shared name breaks --gtest_repeat)
  const std::string d = dir.string(), text = test::fixture_text("kjv.valid.txt").string();
  auto ok = [](const test::CmdResult& r, const std::string& what) {
    EXPECT_EQ(r.exit_code, 0) << what << "\n" << r.err;
    return r;
  };
  auto info = ok(test::run_cli("info " + d), "info");
  EXPECT_NE(info.out.find("chatglm"), std::string::npos) << info.out;
  ok(test::run_cli("eval " + d + " --ppl v=" + text + " --seq-len 32 --max-windows 3"), "eval");
  ok(test::run_cli("generate " + d + " --prompt 'And God said' --max-tokens 4"), "generate");
  auto groups = ok(test::run_cli("groups " + d + " --show 1:0"), "groups");
  EXPECT_NE(groups.out.find("query_key_value.weight[k]"), std::string::npos) << groups.out;
  const std::string pruned = (outs / "cli-pruned").string();
  ok(test::run_cli("prune " + d + " --out " + pruned + " --strategy block --ratio 0.5 --attn-layers 1:2 --mlp-layers 0:2 "
                   "--importance taylor --taylor element1 --gqa-unit kv-group --calib " + text +
                   " --calib-samples 2 --calib-seq-len 16"),
     "prune");
  std::ifstream cj(std::filesystem::path(pruned) / "config.json");
  json c = json::parse(cj);
  EXPECT_EQ(c["model_type"], "chatglm");
  EXPECT_TRUE(c.contains("llmprune_layers"));
  SafetensorsFile f = SafetensorsFile::open(std::filesystem::path(pruned) / "model.safetensors");
  EXPECT_TRUE(f.tensors.count("transformer.encoder.layers.1.self_attention.query_key_value.weight"));
  const std::string tuned = (outs / "cli-tuned").string(), adapter = (outs / "cli-adapter").string();
  ok(test::run_cli("tune " + pruned + " --data " + text + " --out " + tuned + " --max-steps 1 --batch 2 --micro-batch 2 "
                   "--cutoff-len 16 --save-adapter " + adapter),
     "tune");
  std::ifstream ac(std::filesystem::path(adapter) / "adapter_config.json");
  json acj = json::parse(ac);
  EXPECT_EQ(acj["target_modules"], json({"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"}));
  EXPECT_EQ(acj["rank_pattern"]["transformer.encoder.layers.0.self_attention.query_key_value"], 24);
  SafetensorsFile af = SafetensorsFile::open(std::filesystem::path(adapter) / "adapter_model.safetensors");
  EXPECT_EQ(af.tensors.at("base_model.model.transformer.encoder.layers.0.mlp.dense_h_to_4h.lora_B.weight").shape,
            (std::vector<int64_t>{2 * c["llmprune_layers"][0]["ffn_hidden_size"].get<int64_t>(), 16}));
  const std::string hf = (outs / "cli-hf").string();
  ok(test::run_cli("export " + d + " --hf " + hf + " --dtype f32"), "export --hf");
  EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(hf) / "tokenizer.model"));
  const std::string gguf = (outs / "cli.gguf").string();
  ok(test::run_cli("export " + d + " --gguf " + gguf), "export --gguf");
  const std::string ragged_gguf = (outs / "cli-ragged.gguf").string();
  auto ragged = test::run_cli("export " + pruned + " --gguf " + ragged_gguf);
  EXPECT_EQ(ragged.exit_code, 2);
  EXPECT_NE(ragged.err.find("takes one head count and MLP width"), std::string::npos) << ragged.err;
  EXPECT_FALSE(std::filesystem::exists(ragged_gguf));
  // The uniform GGUF: llama.cpp's chatglm names, fused tensors, half-head rotary.
  gguf::GGUFFile g = gguf::GGUFFile::open(gguf);
  EXPECT_EQ(g.get_string("general.architecture"), "chatglm");
  EXPECT_EQ(g.get_uint("chatglm.rope.dimension_count"), 8u);
  EXPECT_EQ(g.get_uint("chatglm.attention.head_count_kv"), 2u);
  EXPECT_EQ(g.get_string("tokenizer.ggml.pre"), "chatglm-spm");
  ASSERT_NE(g.find_tensor("blk.1.attn_qkv.weight"), nullptr);
  ASSERT_NE(g.find_tensor("blk.1.attn_qkv.bias"), nullptr);
  ASSERT_NE(g.find_tensor("blk.1.ffn_up.weight"), nullptr);
  EXPECT_EQ(g.find_tensor("blk.1.ffn_gate.weight"), nullptr);
  EXPECT_EQ(g.find_tensor("blk.1.attn_q.weight"), nullptr);
  Model src = Model::load(dir);
  std::vector<float> up = g.read_f32("blk.1.ffn_up.weight"), want;
  for (Role r : {Role::Gate, Role::Up}) {
    Tensor t = src.layers[1][r].to_f32_copy();
    want.insert(want.end(), t.f32(), t.f32() + t.numel());
  }
  EXPECT_EQ(up, want);
}

// Every pruning pass reads its calibration text with the model's own tokenizer: ChatGLM's windows
// start with the family prefix [gMASK] sop (the FLAP statistics windows once used the bare
// SentencePiece model, without it).
TEST(ChatglmTokenizer, CalibrationWindowsStartWithTheFamilyPrefix) {
  auto dir = write_glm_dir("glm-calib");
  const auto text = dir / "calib.txt";
  atomic_write_file(text, "In the beginning God created the heaven and the earth. And the earth was without form, and void.");
  CalibOptions co;
  co.file = text.string();
  co.samples = 2;
  co.seq_len = 6;
  co.random = false;
  co.flag = "--stat";
  const std::vector<int32_t> w = read_calibration_windows(dir.string(), 64, co);
  ASSERT_EQ(w.size(), 12u);
  EXPECT_EQ(w[0], 4097);  // [gMASK]
  EXPECT_EQ(w[1], 4099);  // sop
  auto plain = load_tokenizer(dir);
  const auto body = plain->encode("In the beginning");
  EXPECT_EQ(std::vector<int32_t>(w.begin() + 2, w.begin() + 2 + long(body.size())), body);
  co.seq_len = 65;  // beyond the context: named by the statistics flag
  try {
    read_calibration_windows(dir.string(), 64, co);
    FAIL() << "a window longer than the context must be refused";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("--stat-seq-len 65 exceeds"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace llmprune
