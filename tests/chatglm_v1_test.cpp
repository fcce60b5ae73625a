// ChatGLM-6B (v1) in THUDM's "chatglm" format (arch: make_chatglm_v1; CHATGLM.md §1): the
// official outputs of THUDM's modeling_chatglm.py (fixtures/chatglm/glm_model.data), the
// random-weight goldens of tools/chatglm_v1_reference.py (tests/golden/chatglm-v1-tiny.lpgd:
// logits, loss, every gradient and the Fisher diagonal, float64 torch), the per-head interleaved
// query_key_value round trip and the prompt layout (positions, block positions, prefix mask).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>

#include "core/error.h"
#include "golden.h"
#include "graph/groups.h"
#include "prune/surgery.h"
#include "io/safetensors.h"
#include "model/backward.h"
#include "model/forward.h"
#include "model/gguf_model.h"
#include "model/model.h"
#include "train/lora.h"
#include "grad_check.h"
#include "every_subcommand.h"
#include "bf16_check.h"
#include "glm_steps.h"
#include "prune/depth.h"
#include "train/data.h"
#include "test_util.h"

namespace llmprune {
namespace {

using nlohmann::json;
using test::max_abs_diff;
using test::run_glm_steps;

const char* kModel = "chatglm-v1-tiny";

json tiny_v1_config() {
  // chatglm.cpp's tests/test_convert.py v1 model: hidden 32, 8 heads of 4, inner 128, vocab 5;
  // its inputs put [gMASK] at 1 and sop at 2 (position ids [[0,1,1],[0,0,1]]).
  return {{"architectures", {"ChatGLMModel"}}, {"model_type", "chatglm"}, {"hidden_size", 32}, {"inner_hidden_size", 128},
          {"num_layers", 1}, {"num_attention_heads", 8}, {"layernorm_epsilon", 1e-5}, {"max_sequence_length", 8},
          {"position_encoding_2d", true}, {"vocab_size", 5}, {"mask_token_id", 0}, {"gmask_token_id", 1},
          {"bos_token_id", 2}, {"eos_token_id", 3}, {"pad_token_id", 4}, {"torch_dtype", "float32"}};
}

struct V1Fixture {
  std::map<std::string, Tensor> tensors;
  std::vector<std::vector<int32_t>> ids = std::vector<std::vector<int32_t>>(3);
  std::vector<float> hidden[3];
};

// Parameters in state-dict order (SOURCE.txt), then ids 0 1 2 -> [3, 32], id 3 -> [32], id 4 -> [32].
V1Fixture read_v1_fixture() {
  std::ifstream in(test::shared_dir() / "fixtures/chatglm/glm_model.data", std::ios::binary);
  EXPECT_TRUE(in);
  V1Fixture f;
  auto take = [&](const std::string& name, std::vector<int64_t> shape) {
    Tensor t = Tensor::zeros(DType::F32, shape);
    in.read(static_cast<char*>(t.data), std::streamsize(t.nbytes()));
    f.tensors[name] = t;
  };
  const std::string L = "transformer.layers.0.";
  take("transformer.word_embeddings.weight", {5, 32});
  take(L + "input_layernorm.weight", {32});
  take(L + "input_layernorm.bias", {32});
  take(L + "attention.query_key_value.weight", {96, 32});
  take(L + "attention.query_key_value.bias", {96});
  take(L + "attention.dense.weight", {32, 32});
  take(L + "attention.dense.bias", {32});
  take(L + "post_attention_layernorm.weight", {32});
  take(L + "post_attention_layernorm.bias", {32});
  take(L + "mlp.dense_h_to_4h.weight", {128, 32});
  take(L + "mlp.dense_h_to_4h.bias", {128});
  take(L + "mlp.dense_4h_to_h.weight", {32, 128});
  take(L + "mlp.dense_4h_to_h.bias", {32});
  take("transformer.final_layernorm.weight", {32});
  take("transformer.final_layernorm.bias", {32});
  for (int s = 0; s < 3; s++) {
    const int T = s == 0 ? 3 : 1;
    f.ids[s].resize(size_t(T));
    f.hidden[s].resize(size_t(T) * 32);
    in.read(reinterpret_cast<char*>(f.ids[s].data()), std::streamsize(4 * T));
    in.read(reinterpret_cast<char*>(f.hidden[s].data()), std::streamsize(4 * T * 32));
  }
  EXPECT_TRUE(in) << "glm_model.data is shorter than its layout";
  in.peek();
  EXPECT_TRUE(in.eof()) << "glm_model.data is longer than its layout";
  return f;
}

TEST(GlmV1Official, ReproducesThudmHiddenStates) {
  V1Fixture f = read_v1_fixture();
  ModelConfig cfg = ModelConfig::from_json(tiny_v1_config(), "tiny-glm-v1/config.json");
  Model m = Model::from_tensors(cfg, f.tensors, "tiny-glm-v1");
  EXPECT_EQ(m.arch->norm, NormKind::LayerNorm);
  EXPECT_TRUE(m.cfg.tied);  // no tie_word_embeddings key: transformers' default
  ASSERT_EQ(m.cfg.layers.size(), 1u);
  EXPECT_EQ(m.cfg.layers[0], (LayerConfig{8, 8, 4, 128}));
  auto got = run_glm_steps(m, f.ids, true);
  for (int s = 0; s < 3; s++) EXPECT_LE(max_abs_diff(got[size_t(s)], f.hidden[s]), 1e-5) << "step " << s;
  // The fixture can tell: causal positions without GLM's layout (no prefix, block positions 0)
  // do not reproduce it.
  auto causal = run_glm_steps(m, f.ids, false);
  EXPECT_GT(max_abs_diff(causal[0], f.hidden[0]), 1e-3);
}

TEST(GlmV1, TokenLayoutFollowsSopAndMask) {
  ModelConfig cfg = ModelConfig::from_json(tiny_v1_config(), "tiny-glm-v1/config.json");
  Model m = Model::from_tensors(cfg, read_v1_fixture().tensors, "tiny-glm-v1");
  // [MASK]=0 [gMASK]=1 sop=2: "4 4 1 2 3 3": c = 3, m = 2; "4 0 4 4 2 3": [MASK] at 1, c = 4;
  // "4 4 4 4 4 4": no sop, a causal LM.
  const std::vector<int32_t> ids = {4, 4, 1, 2, 3, 3, 4, 0, 4, 4, 2, 3, 4, 4, 4, 4, 4, 4};
  TokenLayout t = token_layout(m, ids.data(), 3, 6, nullptr);
  EXPECT_EQ(t.pos, (std::vector<int32_t>{0, 1, 2, 2, 2, 2, 0, 1, 2, 3, 1, 1, 0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(t.block_pos, (std::vector<int32_t>{0, 0, 0, 1, 2, 3, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0}));
  EXPECT_EQ(t.prefix, (std::vector<int32_t>{3, 4, 0}));
  // sop without a mask token (plain text after the tokenizer's BOS, which v1 names sop): the
  // generated positions sit at sop's index.
  const std::vector<int32_t> bos_text = {2, 3, 4, 4};
  TokenLayout u = token_layout(m, bos_text.data(), 1, 4, nullptr);
  EXPECT_EQ(u.pos, (std::vector<int32_t>{0, 0, 0, 0}));
  EXPECT_EQ(u.block_pos, (std::vector<int32_t>{1, 2, 3, 4}));
  EXPECT_EQ(u.prefix, (std::vector<int32_t>{0}));
}

TEST(GlmV1, ConfigSelectsTheV1Description) {
  json j = tiny_v1_config();
  ModelConfig c = ModelConfig::from_json(j, "x/config.json");
  EXPECT_EQ(c.head_dim, 4);  // hidden / heads: v1 states no head_dim
  EXPECT_EQ(c.n_kv_head, 8);
  EXPECT_EQ(c.prefix_end_id, 2);
  EXPECT_EQ(c.mask_ids, (std::vector<int>{1, 0}));
  // ChatGLM2 keys in a v1 config, a v1 config without its sop id: one-line errors naming the field.
  for (const char* key : {"kv_channels", "ffn_hidden_size", "multi_query_attention"}) {
    json bad = j;
    bad[key] = key == std::string("multi_query_attention") ? json(true) : json(4);
    try {
      ModelConfig::from_json(bad, "x/config.json");
      ADD_FAILURE() << key << " accepted";
    } catch (const UserError& e) {
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("ChatGLM-6B (v1)"), std::string::npos) << e.what();
    }
  }
  json no_sop = j;
  no_sop.erase("bos_token_id");
  EXPECT_THROW(ModelConfig::from_json(no_sop, "x/config.json"), UserError);
}

golden::GoldenFile load_golden() {
  return golden::GoldenFile::load((test::source_dir() / "tests/golden" / (std::string(kModel) + ".lpgd")).string());
}

TEST(GlmV1, GoldenLogitsAndLoss) {
  auto g = load_golden();
  Model m = Model::load(test::fixture_model(kModel));
  test::expect_golden_logits_and_loss(m, g, 2e-5, 1e-4);
}

using test::CollectSink;

TEST(GlmV1, GoldenGradientsAndFisher) {
  auto g = load_golden();
  Model m = Model::load(test::fixture_model(kModel));
  const auto& gi = g.get("fwd/ids");
  std::vector<int32_t> ids(gi.values.begin(), gi.values.end());
  const int B = int(gi.shape[0]), T = int(gi.shape[1]);
  CollectSink sink(m);
  GradOptions opt;
  opt.per_sample = true;
  BackwardResult res = compute_gradients(m, ids.data(), B, T, opt, sink);
  EXPECT_NEAR(res.loss, g.get("fwd/loss").values[0], 1e-5);
  // Under the stored names: query_key_value per-head interleaved as THUDM stores it.
  const int checked = test::expect_stored_grads_match_golden(m, sink.grads, g);
  // 2 layers x (2 norms + 2 norm biases + qkv w/b + dense w/b + 2 MLP w/b) + embedding + final norm w/b
  EXPECT_EQ(checked, 2 * 12 + 3);
}

// query_key_value [q_0 k_0 v_0 q_1 ...] is split into q, k, v by heads and written back byte for
// byte; the tied model's lm_head.weight (THUDM stores it) is read as the embedding.
TEST(GlmV1, FusedSplitFusedIsByteIdentical) {
  Model m = Model::load(test::fixture_model(kModel));
  EXPECT_EQ(m.cfg.layers[0], (LayerConfig{4, 4, 16, 96}));
  auto dir = test::temp_dir("glm-v1-roundtrip");
  save_model_files(m, dir, DType::F32, "");
  auto before = load_checkpoint_tensors(test::fixture_model(kModel));
  auto after = load_checkpoint_tensors(dir);
  EXPECT_EQ(after.size() + 1, before.size());  // all but lm_head.weight
  EXPECT_FALSE(after.count("lm_head.weight"));
  for (auto& [name, t] : after) {
    ASSERT_TRUE(before.count(name)) << name;
    const Tensor& b = before.at(name);
    ASSERT_EQ(t.shape, b.shape) << name;
    EXPECT_EQ(std::memcmp(t.data, b.data, t.nbytes()), 0) << name;
  }
  // The q part is rows [0,16) [48,64) [96,112) [144,160) of the stored tensor.
  const Tensor& q = m.layers[1][Role::Q];
  const Tensor& fused = before.at("transformer.layers.1.attention.query_key_value.weight");
  EXPECT_EQ(std::memcmp(q.f32() + 16 * 64, fused.f32() + 48 * 64, 16 * 64 * sizeof(float)), 0);
  Model again = Model::load(dir);
  std::vector<int32_t> ids = {5, 9, 57, 60, 11, 12};
  Runner r1(m), r2(again);
  std::vector<float> a(ids.size() * size_t(m.cfg.vocab)), b(a.size());
  r1.forward(ids.data(), 1, int(ids.size()), a.data());
  r2.forward(ids.data(), 1, int(ids.size()), b.data());
  EXPECT_EQ(a, b);
}

}  // namespace
}  // namespace llmprune

namespace llmprune {
namespace {

// llama.cpp has no ChatGLM-6B v1 graph: GGUF export is refused with a one-line error, nothing written.
TEST(GlmV1, GgufExportIsRefused) {
  Model m = Model::load(test::fixture_model(kModel));
  auto out = test::temp_dir("glm-v1-gguf") / "m.gguf";
  try {
    export_gguf(m, nullptr, out, DType::F32);
    ADD_FAILURE() << "exported";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("llama.cpp has no graph for ChatGLM-6B v1"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(out));
}

// Whole-model loss gradients against central finite differences (fp32 forward, so a coarse
// step): one element of every kind of tensor, the per-head interleaved q/k/v parts included.
TEST(GlmV1, WeightGradientsMatchFiniteDifferences) {
  Model m = Model::load(test::fixture_model(kModel));
  const std::vector<int32_t> ids = {5, 17, 40, 57, 60, 22, 31, 8};  // prompt [gMASK] sop answer
  test::expect_layer0_grads_match_fd(m, ids,
                                     {Role::AttnNorm, Role::AttnNormBias, Role::Q, Role::QBias, Role::K, Role::V, Role::VBias,
                                      Role::O, Role::MlpNormBias, Role::Up, Role::UpBias, Role::Down},
                                     {3, 37});
}

}  // namespace
}  // namespace llmprune

namespace llmprune {
namespace {

std::vector<float> logits_of(const Model& m, const std::vector<int32_t>& ids) {
  Runner r(m);
  std::vector<float> out(ids.size() * size_t(m.cfg.vocab));
  r.forward(ids.data(), 1, int(ids.size()), out.data());
  return out;
}

// Pruning = masking on the per-head interleaved layout: zeroing head 2's block [q_2 k_2 v_2] of
// query_key_value (rows 96..143, and the bias) and MLP channels of dense_h_to_4h in the STORED
// tensors gives the physically pruned model's logits; the pruned (ragged) checkpoint is written
// in v1's names with head_dim stated and reloads with identical logits, as does a uniformly
// head-pruned one (3 heads x 16 != hidden 64: THUDM's code cannot load it, llmprune can).
TEST(GlmV1, PruningIsMaskingOnInterleavedLayout) {
  Model m = Model::load(test::fixture_model(kModel));
  const std::vector<int32_t> ids = {5, 17, 40, 57, 60, 22, 31, 8, 9};
  auto groups = discover_groups(m, GroupOptions{});
  std::vector<Group> cut;
  for (const Group& g : groups)
    if ((g.kind == UnitKind::Head && g.layer == 1 && g.index == 2) || (g.kind == UnitKind::Mlp && g.layer == 0 && g.index % 7 == 3))
      cut.push_back(g);
  ASSERT_EQ(cut.size(), 1u + 14u);
  Model pruned = remove_groups(m, cut);
  EXPECT_EQ(pruned.cfg.layers[1], (LayerConfig{3, 3, 16, 96}));
  EXPECT_EQ(pruned.cfg.layers[0], (LayerConfig{4, 4, 16, 82}));

  auto stored = load_checkpoint_tensors(test::fixture_model(kModel));
  for (auto& [name, t] : stored) t = t.converted(t.dtype);  // owned, writable
  auto zero_rows = [](Tensor& t, int64_t r0, int64_t n) {
    const size_t row = t.nbytes() / size_t(t.dim(0));
    std::memset(static_cast<uint8_t*>(t.data) + size_t(r0) * row, 0, size_t(n) * row);
  };
  for (const char* suffix : {"weight", "bias"}) {
    zero_rows(stored.at(std::string("transformer.layers.1.attention.query_key_value.") + suffix), 2 * 3 * 16, 3 * 16);
    for (int j = 3; j < 96; j += 7) zero_rows(stored.at(std::string("transformer.layers.0.mlp.dense_h_to_4h.") + suffix), j, 1);
  }
  Model masked = Model::from_tensors(m.cfg, stored, "masked");
  auto want = logits_of(pruned, ids), got = logits_of(masked, ids);
  double d = 0;
  for (size_t i = 0; i < want.size(); i++) d = std::max(d, double(std::fabs(want[i] - got[i])));
  EXPECT_LE(d, 1e-5);
  double moved = 0;
  auto base = logits_of(m, ids);
  for (size_t i = 0; i < want.size(); i++) moved = std::max(moved, double(std::fabs(base[i] - want[i])));
  EXPECT_GT(moved, 1e-3);  // the cut matters

  auto dir = test::temp_dir("glm-v1-pruned");
  save_pruned(m, cut, dir, DType::F32, "");
  std::ifstream cj(dir / "config.json");
  json c = json::parse(cj);
  EXPECT_EQ(c["model_type"], "chatglm");
  EXPECT_EQ(c["head_dim"], 16);
  EXPECT_EQ(c["llmprune_layers"][0]["inner_hidden_size"], 82);
  EXPECT_EQ(c["llmprune_layers"][1]["num_attention_heads"], 3);
  SafetensorsFile f = SafetensorsFile::open(dir / "model.safetensors");
  EXPECT_EQ(f.tensors.at("transformer.layers.1.attention.query_key_value.weight").shape, (std::vector<int64_t>{144, 64}));
  EXPECT_EQ(f.tensors.at("transformer.layers.1.attention.dense.weight").shape, (std::vector<int64_t>{64, 48}));
  EXPECT_EQ(logits_of(Model::load(dir), ids), want);

  std::vector<Group> uni;
  for (const Group& g : groups)
    if (g.kind == UnitKind::Head && g.index == 0) uni.push_back(g);
  ASSERT_EQ(uni.size(), 2u);
  auto dir2 = test::temp_dir("glm-v1-uniform");
  save_pruned(m, uni, dir2, DType::F32, "");
  std::ifstream cj2(dir2 / "config.json");
  json c2 = json::parse(cj2);
  EXPECT_EQ(c2["num_attention_heads"], 3);
  EXPECT_EQ(c2["head_dim"], 16);
  EXPECT_EQ(c2["hidden_size"], 64);
  EXPECT_FALSE(c2.contains("llmprune_layers"));
  EXPECT_EQ(logits_of(Model::load(dir2), ids), logits_of(remove_groups(m, uni), ids));
}

}  // namespace
}  // namespace llmprune

namespace llmprune {
namespace {

// `tune` on v1 writes a PEFT adapter that PEFT applies to the checkpoint AS STORED: for every
// adapted module, W_stored + (alpha / rank) B.A equals the merged model tune wrote, so lora_B's
// rows follow the per-head interleaved query_key_value [q_0 k_0 v_0 q_1 ...], not [Q | K | V]
// (the blocked order gives another tensor: checked below). Reading the adapter back and merging
// gives the same model, and writing it again gives the same file byte for byte.
TEST(GlmV1Lora, TunedAdapterAppliesToTheStoredLayout) {
  const auto model = test::fixture_model(kModel);
  const auto tmp = test::temp_dir("glm-v1-tune");
  const std::string tuned = (tmp / "tuned").string(), adapter = (tmp / "adapter").string();
  auto r = test::run_cli("tune " + model.string() + " --data " + test::fixture_text("kjv.valid.txt").string() + " --out " +
                         tuned + " --max-steps 2 --batch 2 --micro-batch 2 --cutoff-len 16 --lr 1e-2 --dtype f32 --save-adapter " +
                         adapter);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::ifstream acf(std::filesystem::path(adapter) / "adapter_config.json");
  json ac = json::parse(acf);
  EXPECT_EQ(ac["target_modules"], json({"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"}));
  auto stored = load_checkpoint_tensors(model);
  auto merged = load_checkpoint_tensors(tuned);
  SafetensorsFile af = SafetensorsFile::open(std::filesystem::path(adapter) / "adapter_model.safetensors");
  const std::string prefix = "base_model.model.", a_suffix = ".lora_A.weight";
  int modules = 0;
  for (const auto& [name, A] : af.tensors) {
    if (name.size() < a_suffix.size() || name.compare(name.size() - a_suffix.size(), a_suffix.size(), a_suffix) != 0) continue;
    const std::string module = name.substr(prefix.size(), name.size() - prefix.size() - a_suffix.size());
    const Tensor& B = af.tensors.at(prefix + module + ".lora_B.weight");
    const Tensor& W = stored.at(module + ".weight");
    const Tensor& Wm = merged.at(module + ".weight");
    const int64_t rows = W.dim(0), cols = W.dim(1), R = A.dim(0);
    ASSERT_EQ(B.shape, (std::vector<int64_t>{rows, R})) << module;
    const double scale = ac.contains("rank_pattern") && ac["rank_pattern"].contains(module)
                             ? ac["alpha_pattern"][module].get<double>() / ac["rank_pattern"][module].get<double>()
                             : ac["lora_alpha"].get<double>() / ac["r"].get<double>();
    // delta[row] = scale * B[row] . A, for the stored row order and for the blocked one.
    auto delta = [&](int64_t row, int64_t c) {
      double d = 0;
      for (int64_t a = 0; a < R; a++) d += double(B.f32()[row * R + a]) * double(A.f32()[a * cols + c]);
      return scale * d;
    };
    double worst = 0, moved = 0, blocked_worst = 0;
    const bool qkv = module.find("query_key_value") != std::string::npos;
    const int64_t hd = 16, per_part = rows / 3;
    for (int64_t i = 0; i < rows; i++)
      for (int64_t c = 0; c < cols; c++) {
        const double want = double(Wm.f32()[i * cols + c]) - double(W.f32()[i * cols + c]);
        worst = std::max(worst, std::fabs(delta(i, c) - want));
        moved = std::max(moved, std::fabs(want));
        if (qkv) {
          // Row i holds part (i / hd) % 3, head i / (3 hd): its row in a blocked [Q | K | V] B.
          const int64_t part = (i / hd) % 3, head = i / (3 * hd);
          blocked_worst = std::max(blocked_worst, std::fabs(delta(part * per_part + head * hd + i % hd, c) - want));
        }
      }
    EXPECT_GT(moved, 1e-5) << module << ": the tuned weights did not move";
    EXPECT_LE(worst, 1e-3 * moved) << module;  // fp32 rounding of the merged weight
    if (qkv) {
      EXPECT_GT(blocked_worst, 0.1 * moved) << module << ": the test cannot tell the layouts apart";
    }
    modules++;
  }
  EXPECT_EQ(modules, 2 * 4);  // query_key_value, dense, dense_h_to_4h, dense_4h_to_h in 2 layers

  // Load -> merge gives tune's model; save -> the same bytes.
  Model base = Model::load(model);
  LoraConfig lc;
  lc.r = ac["r"].get<int>();
  lc.alpha = ac["lora_alpha"].get<double>();
  LoraAdapters back(base, lc);
  load_lora_weights(back, std::filesystem::path(adapter) / "adapter_model.safetensors");
  Model remerged = merge_lora(base, back);
  Model written = Model::load(tuned);
  for (int l = 0; l < base.cfg.n_layer; l++)
    for (Role role : matrix_roles()) {
      if (written.layers[size_t(l)][role].empty()) continue;
      const Tensor& x = remerged.layers[size_t(l)][role];
      const Tensor& y = written.layers[size_t(l)][role];
      ASSERT_EQ(x.shape, y.shape);
      EXPECT_EQ(std::memcmp(x.data, y.data, x.nbytes()), 0) << layer_tensor_name(*base.arch, role, l);
    }
  auto again = tmp / "again";
  std::filesystem::create_directories(again);
  save_peft_adapter(back, again, "x");
  EXPECT_EQ(test::read_bytes(again / "adapter_model.safetensors"),
            test::read_bytes(std::filesystem::path(adapter) / "adapter_model.safetensors"));
}

}  // namespace
}  // namespace llmprune

namespace llmprune {
namespace {

// Every subcommand on ChatGLM-6B v1 (chatglm-v1-tiny with its 143-piece SentencePiece
// tokenizer, ice_text.model as THUDM ships it, the specials and whitespace escapes inside it):
// block pruning of heads and MLP channels on the interleaved query_key_value, sparsify, LoRA on
// v1's modules, HF export that reloads with the same logits; GGUF is refused (llama.cpp has no
// v1 graph). Every directory written keeps the tokenizer as ice_text.model, byte for byte.
TEST(GlmV1Cli, EverySubcommandRuns) {
  const std::string model = test::fixture_model(kModel).string();
  ASSERT_TRUE(std::filesystem::exists(test::fixture_model(kModel) / "ice_text.model"));
  ASSERT_FALSE(std::filesystem::exists(test::fixture_model(kModel) / "tokenizer.model"));
  auto dir = test::temp_dir("run");
  auto info = test::cli_ok("info " + model).out;  // LayerNorm: its eps is not RMSNorm's
  EXPECT_NE(info.find("layer_norm_eps 1e-05"), std::string::npos) << info;
  EXPECT_EQ(info.find("rms_norm_eps"), std::string::npos) << info;
  const auto p = test::run_every_subcommand(
      model, dir, {"chatglm", "query_key_value.weight[k]", {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"},
                   "transformer.layers.1.attention.query_key_value.weight", {5, 17, 40, 57, 60, 22, 31, 8}});
  std::ifstream pc(p.pruned / "config.json");
  json c = json::parse(pc);
  EXPECT_EQ(c["head_dim"], 16);
  EXPECT_TRUE(c.contains("llmprune_layers"));
  const std::string sp = test::read_bytes(test::fixture_model(kModel) / "ice_text.model");
  const std::string text = "Let there be light:\n\tand   there was" + std::string(85, ' ') + "light.";
  const auto want = load_tokenizer_for_model(model)->encode(text);
  for (const auto& out : {p.pruned, p.tuned, p.hf, dir / "sparse"}) {
    EXPECT_EQ(test::read_bytes(out / "ice_text.model"), sp) << out;
    EXPECT_FALSE(std::filesystem::exists(out / "tokenizer.model")) << out;
    auto tok = load_tokenizer_for_model(out);  // reloads with the family's escapes
    EXPECT_EQ(tok->encode(text), want) << out;
    EXPECT_EQ(tok->decode(want), text) << out;
  }
  test::cli_ok("eval " + p.hf.string() + " --ppl t=" + test::fixture_text("kjv.valid.txt").string() + " --seq-len 32 --max-windows 1");
  test::cli_ok("generate " + p.hf.string() + " --prompt \"And God said\" --max-tokens 2");
  const std::string gguf = (dir / "x.gguf").string();
  auto refused = test::run_cli("export " + model + " --gguf " + gguf);
  EXPECT_EQ(refused.exit_code, 2);
  EXPECT_NE(refused.err.find("llama.cpp has no graph for ChatGLM-6B v1"), std::string::npos) << refused.err;
  EXPECT_FALSE(std::filesystem::exists(gguf));
}

}  // namespace
}  // namespace llmprune

namespace llmprune {
namespace {

// v1's prompt framing is the description's (TokenizerConvention::suffix): THUDM's
// build_inputs_with_special_tokens ends a prompt with [gMASK] <sop> (no BOS), a text scored on
// its own is the reply to an empty prompt ([gMASK] <sop> + text), and Alpaca data is prompt +
// [gMASK] <sop> + response + <eop> with the prompt and its framing masked.
TEST(GlmV1Tokenizer, PromptEndsWithGmaskSop) {
  const auto dir = test::fixture_model(kModel);
  auto tok = load_tokenizer_for_model(dir);
  EXPECT_EQ(tok->vocab_size(), 143);  // ice_text.model's pieces; the model's vocab_size is 144
  EXPECT_EQ(tok->id_to_piece(57), "[gMASK]");
  EXPECT_EQ(tok->id_to_piece(60), "<sop>");
  EXPECT_EQ(tok->bos_id(), 60);  // config.json's bos_token_id
  EXPECT_EQ(tok->eos_id(), 61);
  auto body = tok->encode("And God said");
  ASSERT_FALSE(body.empty());
  std::vector<int32_t> want = body;
  want.insert(want.end(), {57, 60});
  EXPECT_EQ(tok->prompt_ids(body), want);
  EXPECT_EQ(tok->prefix_ids(), (std::vector<int32_t>{57, 60}));
  Model m = Model::load(dir);
  TokenLayout t = token_layout(m, want.data(), 1, int(want.size()), nullptr);
  EXPECT_EQ(t.prefix, (std::vector<int32_t>{int32_t(want.size()) - 1}));  // bidirectional up to <sop>

  const auto tmp = test::temp_dir("alpaca");
  std::ofstream(tmp / "d.json") << R"([{"instruction": "Say it", "input": "", "output": "Let there be light"}])";
  DataOptions opt;
  auto ex = load_examples((tmp / "d.json").string(), *tok, opt);
  ASSERT_EQ(ex.size(), 1u);
  std::vector<int32_t> user = tok->prompt_ids(tok->encode(alpaca_prompt("Say it", ""))), ids = user;
  auto reply = tok->encode("Let there be light");
  ids.insert(ids.end(), reply.begin(), reply.end());
  ids.push_back(61);  // <eop>
  EXPECT_EQ(ex[0].ids, ids);
  for (size_t i = 0; i < ids.size(); i++) EXPECT_EQ(ex[0].labels[i], i < user.size() ? -1 : ids[i]) << i;

  // generate frames the prompt so (its --stats line counts the prompt tokens); --no-bos does not.
  auto framed = test::cli_ok("generate " + dir.string() + " --prompt \"And God said\" --max-tokens 2 --stats");
  EXPECT_NE(framed.err.find(std::to_string(want.size()) + " prompt tokens"), std::string::npos) << framed.err;
  auto bare = test::cli_ok("generate " + dir.string() + " --prompt \"And God said\" --max-tokens 2 --stats --no-bos");
  EXPECT_NE(bare.err.find(std::to_string(body.size()) + " prompt tokens"), std::string::npos) << bare.err;
}

// Depth pruning on v1: removed sub-blocks are identities (the alpha-scaled normalised residual
// goes with them), as the search's masks run them; the saved checkpoint states the removals and
// reloads with identical logits; dropping layer 1 whole equals the same tensors loaded as a
// one-layer model.
TEST(GlmV1, DepthPruningReloadsIdentically) {
  Model m = Model::load(test::fixture_model(kModel));
  const std::vector<int32_t> ids = {5, 17, 40, 57, 60, 22, 31, 8, 9};
  Model p = remove_sublayers(m, {{0, false}, {1, true}});
  EXPECT_EQ(p.cfg.layers[0], (LayerConfig{4, 4, 16, 0}));
  EXPECT_EQ(p.cfg.layers[1], (LayerConfig{0, 0, 16, 96}));
  Runner masked(m);
  masked.skip_sublayers({0, 1}, {1, 0});
  std::vector<float> got(ids.size() * size_t(m.cfg.vocab));
  masked.forward(ids.data(), 1, int(ids.size()), got.data());
  const auto want = logits_of(p, ids);
  EXPECT_LE(max_abs_diff(got, want), 1e-5);
  EXPECT_GT(max_abs_diff(logits_of(m, ids), want), 1e-3);
  auto dir = test::temp_dir("glm-v1-depth");
  save_model_files(p, dir, DType::F32, "");
  std::ifstream cj(dir / "config.json");
  json c = json::parse(cj);
  EXPECT_EQ(c["llmprune_layers"][0]["inner_hidden_size"], 0);
  EXPECT_EQ(c["llmprune_layers"][1]["num_attention_heads"], 0);
  Model back = Model::load(dir);
  EXPECT_EQ(back.cfg.layers, p.cfg.layers);
  EXPECT_EQ(logits_of(back, ids), want);

  Model one = remove_sublayers(m, {{1, true}, {1, false}});
  ASSERT_EQ(one.cfg.n_layer, 1);
  auto stored = load_checkpoint_tensors(test::fixture_model(kModel));
  for (auto it = stored.begin(); it != stored.end();)
    it = it->first.rfind("transformer.layers.1.", 0) == 0 ? stored.erase(it) : std::next(it);
  json cfg1 = json::parse(std::ifstream(test::fixture_model(kModel) / "config.json"));
  cfg1["num_layers"] = 1;
  Model direct = Model::from_tensors(ModelConfig::from_json(cfg1, "one/config.json"), stored, "one");
  EXPECT_EQ(logits_of(one, ids), logits_of(direct, ids));
}

// --compute bf16 on v1 (LayerNorm biases, GELU-tanh, 2D rotary, the prefix mask, interleaved
// q/k/v): the bf16 model equals its fp32 copy bit for bit and stays within bf16_check.h's bound.
TEST(GlmV1, Bf16Compute) {
  Model h = Model::load(test::fixture_model(kModel));
  h.for_each_tensor_mut([](const std::string&, Tensor& t) { t = t.converted(DType::BF16); });
  test::expect_bf16_compute_consistent(h);
}

}  // namespace
}  // namespace llmprune

namespace llmprune {
namespace {

// THUDM's v1 text preprocessing (CHATGLM.md §1.6) is the description's (TokenizerConvention::
// escapes): "\n" <n>, "\t" <|tab|>, a run of k spaces <|blank_k|> (80 at most, longest first).
// tests/golden/chatglm_v1_escapes.json holds the ids of THUDM's _preprocess + SentencePiece
// encode on ice_text.model (tools/chatglm_v1_tokenizer.py) for runs of 1, 2, 3, 79, 80, 81, 83,
// 160 and 165 spaces, newlines and tabs; decoding gives the text back, streamed or whole.
TEST(GlmV1Tokenizer, WhitespaceEscapesMatchThudm) {
  auto tok = load_tokenizer_for_model(test::fixture_model(kModel));
  std::ifstream in(test::source_dir() / "tests/golden/chatglm_v1_escapes.json");
  const json golden = json::parse(in);
  ASSERT_GE(golden["cases"].size(), 5u);
  for (const auto& c : golden["cases"]) {
    const std::string text = c["text"];
    const auto want = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok->encode(text), want) << text;
    EXPECT_EQ(tok->encode_with_specials(text), want) << text;
    std::vector<std::string> pieces;
    for (int32_t id : want) pieces.push_back(tok->id_to_piece(id));
    EXPECT_EQ(pieces, c["pieces"].get<std::vector<std::string>>());
    EXPECT_EQ(tok->decode(want), text);
    StreamDecoder stream(*tok);
    std::string streamed;
    for (int32_t id : want) streamed += stream.push(id);
    EXPECT_EQ(streamed, text);  // "\n", never "<n>", as generate prints it
  }
  // The escapes are pieces of the model: one id each, the text around them unchanged.
  EXPECT_EQ(tok->encode("a\nb"), (std::vector<int32_t>{tok->encode("a")[0], 62, tok->encode("b").back()}));
  WhitespaceEscapes e = {"<n>", "<|tab|>", "<|blank_", "|>", 80};
  EXPECT_EQ(escape_whitespace(std::string(165, ' ') + "x \t", e), "<|blank_80|><|blank_80|><|blank_5|>x <|tab|>");
  EXPECT_EQ(escape_whitespace(std::string(81, ' '), e), "<|blank_80|> ");
  EXPECT_EQ(unescape_whitespace("<|blank_12|><|blank_2|><n>", e), std::string(14, ' ') + "\n");
}

// A v1 directory without its tokenizer names the file it looks for; one with tokenizer.model
// only (what llmprune wrote before ice_text.model was known) still loads, with the escapes.
TEST(GlmV1Tokenizer, IceTextModelIsLookedFor) {
  const auto src = test::fixture_model(kModel);
  const auto dir = test::temp_dir("v1-notok");
  for (const char* f : {"config.json", "model.safetensors"}) std::filesystem::copy_file(src / f, dir / f);
  auto r = test::run_cli("generate " + dir.string() + " --prompt x --max-tokens 1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("no tokenizer.json, ice_text.model or tokenizer.model"), std::string::npos) << r.err;
  std::filesystem::copy_file(src / "ice_text.model", dir / "tokenizer.model");
  EXPECT_EQ(load_tokenizer_for_model(dir)->encode("a\n  b"), load_tokenizer_for_model(src)->encode("a\n  b"));
}

}  // namespace
}  // namespace llmprune
