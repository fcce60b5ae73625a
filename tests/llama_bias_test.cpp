// HF LLaMA checkpoints with `attention_bias` (q, k, v and o biases), `mlp_bias` (gate, up, down
// biases) and an explicit head_dim != hidden / heads: which biases are read is decided by the
// architecture table and config.json; they are saved, merged, exported and reloaded unchanged.
// Logits and every gradient against PyTorch: model_golden_test (llama-bias-tiny); pruning =
// masking: surgery_test. The model: tests/data/models/llama-bias-tiny (tools/reference.py).
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/forward.h"
#include "model/gguf_model.h"
#include "model_factory.h"
#include "test_util.h"
#include "train/lora.h"

namespace llmprune {
namespace {

const char* kModel = "llama-bias-tiny";

const std::vector<Role> kAllBiases = {Role::QBias, Role::KBias, Role::VBias, Role::OBias,
                                      Role::GateBias, Role::UpBias, Role::DownBias};

std::vector<float> logits_of(const Model& m, const std::vector<int32_t>& ids, int B) {
  Runner r(m);
  const int T = int(ids.size()) / B;
  std::vector<float> out(ids.size() * size_t(m.cfg.vocab));
  r.forward(ids.data(), B, T, out.data());
  return out;
}

std::vector<int32_t> some_ids(int n, int vocab) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int i = 0; i < n; i++) ids[size_t(i)] = int32_t((i * 7919 + 13) % vocab);
  return ids;
}

std::vector<float> floats_of(const Tensor& t) {
  std::vector<float> v(size_t(t.numel()));
  to_f32(t.dtype, t.data, v.data(), v.size());
  return v;
}

// The model's tensors by HF name (views), for building variants with Model::from_tensors.
std::map<std::string, Tensor> tensors_of(const Model& m) {
  std::map<std::string, Tensor> out;
  m.for_each_tensor([&](const std::string& name, const Tensor& t) { out[name] = t; });
  return out;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const UserError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(LlamaBias, LoadsEveryBiasWithExplicitHeadDim) {
  Model m = Model::load(test::fixture_model(kModel));
  EXPECT_EQ(m.cfg.hidden, 64);
  EXPECT_EQ(m.cfg.head_dim, 24);  // not 64 / 4
  ASSERT_EQ(m.cfg.layers.size(), 2u);
  EXPECT_EQ(m.cfg.layers[1], (LayerConfig{4, 2, 24, 96}));
  for (const LayerWeights& L : m.layers)
    for (Role r : kAllBiases) {
      ASSERT_FALSE(L[r].empty()) << role_desc(*m.arch, r).name;
      EXPECT_EQ(L[r].shape, (std::vector<int64_t>{L[role_desc(*m.arch, r).bias_of].dim(0)}));
    }
  // Attention: q 96x64, k/v 48x64, o 64x96 and their biases; MLP: 3 x 96x64 and biases.
  ParamCounts p = count_params(m);
  EXPECT_EQ(p.attention, 2 * (96 * 64 + 96 + 2 * (48 * 64 + 48) + 64 * 96 + 64));
  EXPECT_EQ(p.mlp, 2 * (3 * 96 * 64 + 96 + 96 + 64));
  EXPECT_EQ(p.total, m.n_params());
}

TEST(LlamaBias, ConfigKeysDecideWhichBiasesAreRead) {
  Model m = Model::load(test::fixture_model(kModel));
  auto with = [&](const std::string& key, const nlohmann::json& value) {
    ModelConfig cfg = m.cfg;
    if (value.is_null()) cfg.raw.erase(key);
    else cfg.raw[key] = value;
    return cfg;
  };
  // A bias the config switches off is an unexpected tensor, naming the key.
  std::string e = error_of([&] { Model::from_tensors(with("attention_bias", false), tensors_of(m), "dir"); });
  EXPECT_NE(e.find("unexpected tensor 'model.layers.0.self_attn."), std::string::npos) << e;
  EXPECT_NE(e.find("config.json sets attention_bias to false"), std::string::npos) << e;
  e = error_of([&] { Model::from_tensors(with("mlp_bias", false), tensors_of(m), "dir"); });
  EXPECT_NE(e.find("mlp_bias"), std::string::npos) << e;
  e = error_of([&] { Model::from_tensors(with("mlp_bias", "yes"), tensors_of(m), "dir"); });
  EXPECT_NE(e.find("dir/config.json: field 'mlp_bias' must be true or false"), std::string::npos) << e;
  // A bias the config switches on must be there.
  auto t = tensors_of(m);
  t.erase("model.layers.1.self_attn.o_proj.bias");
  e = error_of([&] { Model::from_tensors(m.cfg, t, "dir"); });
  EXPECT_NE(e.find("missing tensor 'model.layers.1.self_attn.o_proj.bias'"), std::string::npos) << e;
  // Without the keys (older checkpoints) whatever biases are present are read.
  Model k = Model::from_tensors(with("attention_bias", nullptr), t, "dir");
  EXPECT_TRUE(k.layers[1][Role::OBias].empty());
  EXPECT_FALSE(k.layers[0][Role::OBias].empty());
  EXPECT_FALSE(k.layers[1][Role::DownBias].empty());
  // Qwen2 has q/k/v biases only: an o bias is not part of it.
  ModelConfig qwen = m.cfg;
  qwen.model_type = "qwen2";
  qwen.raw.erase("attention_bias");
  qwen.raw.erase("mlp_bias");
  e = error_of([&] { Model::from_tensors(qwen, tensors_of(m), "dir"); });
  EXPECT_NE(e.find("(qwen2 has no "), std::string::npos) << e;
}

TEST(LlamaBias, SaveWritesTheSwitchesAndReloadsIdentically) {
  Model m = Model::load(test::fixture_model(kModel));
  auto dir = test::temp_dir("saved");
  save_model_files(m, dir, DType::F32, test::fixture_model(kModel));
  std::ifstream in(dir / "config.json");
  auto j = nlohmann::json::parse(in);
  EXPECT_EQ(j["attention_bias"], true);
  EXPECT_EQ(j["mlp_bias"], true);
  EXPECT_EQ(j["head_dim"], 24);
  Model r = Model::load(dir);
  for (Role b : kAllBiases) EXPECT_EQ(floats_of(r.layers[1][b]), floats_of(m.layers[1][b])) << role_desc(*m.arch, b).name;
  auto ids = some_ids(24, m.cfg.vocab);
  EXPECT_EQ(logits_of(r, ids, 2), logits_of(m, ids, 2));
  // Some of a switch's biases only: the key is left out so the loader reads what is there.
  auto t = tensors_of(m);
  for (int l = 0; l < 2; l++) t.erase("model.layers." + std::to_string(l) + ".self_attn.o_proj.bias");
  ModelConfig cfg = m.cfg;
  cfg.raw.erase("attention_bias");
  Model partial = Model::from_tensors(cfg, t, "dir");
  auto dir2 = test::temp_dir("partial");
  save_model_files(partial, dir2, DType::F32, {});
  std::ifstream in2(dir2 / "config.json");
  auto j2 = nlohmann::json::parse(in2);
  EXPECT_FALSE(j2.contains("attention_bias"));
  EXPECT_EQ(j2["mlp_bias"], true);
  Model r2 = Model::load(dir2);
  EXPECT_TRUE(r2.layers[0][Role::OBias].empty());
  EXPECT_FALSE(r2.layers[0][Role::QBias].empty());
}

// LoRA adapts the weight matrices only (PEFT bias="none"): merging leaves every bias as it was,
// and the merged model computes what the base model plus adapters computes.
TEST(LlamaBias, LoraMergeKeepsBiases) {
  Model m = Model::load(test::fixture_model(kModel));
  m.for_each_tensor_mut([](const std::string&, Tensor& t) { t = t.converted(DType::F32); });  // merge without bf16 rounding
  LoraConfig lc;
  lc.r = 4;
  lc.dropout = 0;
  LoraAdapters lora(m, lc);
  EXPECT_EQ(int(lora.pairs().size()), 2 * 7);
  for (auto& p : lora.pairs())
    for (size_t i = 0; i < p.B.size(); i++) p.B[i] = 0.05f * float(int((i * 37 + p.layer * 5) % 11) - 5);
  lora.set_training(false);
  Model merged = merge_lora(m, lora);
  for (size_t l = 0; l < m.layers.size(); l++)
    for (Role b : kAllBiases) EXPECT_EQ(floats_of(merged.layers[l][b]), floats_of(m.layers[l][b]));
  auto ids = some_ids(20, m.cfg.vocab);
  Runner with_hook(m);
  with_hook.set_hook(&lora);
  std::vector<float> a(ids.size() * size_t(m.cfg.vocab));
  with_hook.forward(ids.data(), 1, int(ids.size()), a.data());
  auto b = logits_of(merged, ids, 1);
  double worst = 0;  // fp32 summation order only
  for (size_t i = 0; i < a.size(); i++) worst = std::max(worst, std::fabs(double(a[i]) - b[i]));
  EXPECT_LT(worst, 1e-3);
  auto base = logits_of(m, ids, 1);
  double moved = 0;  // the adapters do change the output
  for (size_t i = 0; i < a.size(); i++) moved = std::max(moved, std::fabs(double(a[i]) - base[i]));
  EXPECT_GT(moved, 10 * worst);
  // PEFT's adapter: lora_A / lora_B for the projections, no bias tensors.
  auto dir = test::temp_dir("peft");
  save_peft_adapter(lora, dir, "base");
  auto file = SafetensorsFile::open(dir / "adapter_model.safetensors");
  EXPECT_EQ(file.tensors.size(), 2u * 2 * 7);
  for (auto& [n, t] : file.tensors) EXPECT_EQ(n.find(".bias"), std::string::npos) << n;
}

TEST(LlamaBias, GgufCarriesEveryBiasLlamaCppReads) {
  // llama.cpp's llama/deci architectures read bq, bk, bv, bo, ffn_gate_b, ffn_up_b, ffn_down_b;
  // it sizes bq by the hidden size, so q_dim must equal hidden here (4 heads x 8 = 32).
  auto spec = test::RandomModelSpec::uniform(2, 4, 2, 24);
  spec.attention_bias = spec.mlp_bias = true;
  Model m = test::make_random_model(spec);
  auto out = test::temp_dir("gguf") / "bias.gguf";
  export_gguf(m, nullptr, out, DType::F32);
  Model g = Model::load(out);
  for (size_t l = 0; l < m.layers.size(); l++)
    for (Role b : kAllBiases) EXPECT_EQ(floats_of(g.layers[l][b]), floats_of(m.layers[l][b])) << role_desc(*m.arch, b).name;
  auto ids = some_ids(16, m.cfg.vocab);
  EXPECT_EQ(logits_of(g, ids, 1), logits_of(m, ids, 1));
  // Back to HF: the switches come back from the tensors.
  auto dir = test::temp_dir("hf");
  save_model_files(g, dir, DType::F32, {});
  std::ifstream in(dir / "config.json");
  auto j = nlohmann::json::parse(in);
  EXPECT_EQ(j["attention_bias"], true);
  EXPECT_EQ(j["mlp_bias"], true);
  // head_dim 24 with 4 heads: q (and bq) has 96 rows for hidden 64. The llama.cpp we test against
  // (tests/llamacpp_client_test.cpp) sizes bq by the q projection, so this exports and round-trips.
  Model tiny = Model::load(test::fixture_model(kModel));
  const auto tiny_gguf = test::temp_dir("tiny") / "t.gguf";
  export_gguf(tiny, nullptr, tiny_gguf, DType::F32);
  Model tg = Model::load(tiny_gguf);
  EXPECT_EQ(tg.layers[0][Role::QBias].dim(0), 96);
  EXPECT_EQ(logits_of(tg, ids, 1), logits_of(tiny, ids, 1));
}

}  // namespace
}  // namespace llmprune

namespace llmprune {
namespace {

// Every subcommand on the bias model, end to end through the CLI.
TEST(LlamaBias, EverySubcommandRuns) {
  const std::string model = test::fixture_model(kModel).string();
  auto dir = test::temp_dir("run");  // not "cli": run_cli uses (and removes) that one
  // A few KJV chapters: enough windows for eval, calibration and a few tune steps.
  std::string text;
  {
    std::ifstream in(test::fixture_text("kjv.valid.txt"));
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  text.resize(20000);
  const std::string txt = (dir / "text.txt").string();
  {
    std::ofstream out(txt);
    out << text;
  }
  auto ok = [&](const std::string& args) {
    auto r = test::run_cli(args);
    EXPECT_EQ(r.exit_code, 0) << args << "\n" << r.out << r.err;
    return r;
  };
  auto info = ok("info " + model);
  EXPECT_NE(info.out.find("biases       q, k, v, o, gate, up, down"), std::string::npos) << info.out;
  ok("eval " + model + " --ppl t=" + txt);
  ok("generate " + model + " --prompt \"And God said\" --max-tokens 8");
  ok("groups " + model);
  const std::string calib = " --importance taylor --taylor element1 --calib " + txt + " --calib-samples 4 --calib-seq-len 32";
  const std::string block = (dir / "block").string(), channel = (dir / "channel").string(), layer = (dir / "layer").string();
  ok("prune " + model + " --out " + block + " --strategy block --ratio 0.5" + calib);
  ok("prune " + model + " --out " + channel + " --strategy channel --ratio 0.25" + calib);
  ok("prune " + model + " --out " + layer + " --strategy layer --drop-layers 1" + calib);
  for (const std::string& p : {block, channel, layer}) {
    Model pm = Model::load(p);
    for (Role b : kAllBiases) EXPECT_FALSE(pm.layers[0][b].empty()) << p << " " << role_desc(*pm.arch, b).name;
  }
  EXPECT_EQ(Model::load(channel).layers[0][Role::DownBias].dim(0), 48);  // pruned with the hidden channels
  ok("sparsify " + model + " --out " + (dir / "sparse").string() + " --method l1 --amount 0.5");
  const std::string tuned = (dir / "tuned").string();
  ok("tune " + block + " --data " + txt + " --out " + tuned + " --max-steps 2 --batch 2 --micro-batch 2 --cutoff-len 32");
  const std::string hf = (dir / "hf").string();
  ok("export " + tuned + " --hf " + hf);
  Model t = Model::load(tuned), h = Model::load(hf);
  auto ids = some_ids(16, t.cfg.vocab);
  EXPECT_EQ(logits_of(h, ids, 1), logits_of(t, ids, 1));
  // GGUF with every bias (q's 96 rows for hidden 64 included), read back with the same logits.
  const std::string gguf = (dir / "x.gguf").string();
  ok("export " + tuned + " --gguf " + gguf);
  EXPECT_EQ(logits_of(Model::load(gguf), ids, 1), logits_of(t, ids, 1));
}

}  // namespace
}  // namespace llmprune
