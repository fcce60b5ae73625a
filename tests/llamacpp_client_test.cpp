// llama.cpp as a real client of our GGUF exports: node-llama-cpp 3.21.1 (tools/llamacpp, with its
// prebuilt CPU llama.cpp, installed by scripts/install-llamacpp.sh) loads each exported model —
// uniform `llama` and ragged `deci`, f32 and bf16, with and without q/k/v biases and with every bias (attention_bias + mlp_bias),
// depth-pruned (layers without attention or without MLP) — and must agree
// with llmprune on tokenisation, greedy generation (`llmprune generate --temperature 0` on the
// same .gguf) and next-token log-probabilities. docs/export.md, "Checked against llama.cpp".
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "core/fs.h"
#include "graph/groups.h"
#include "io/gguf.h"
#include "model/forward.h"
#include "model/generate.h"
#include "model/gguf_model.h"
#include "model/model.h"
#include "prune/depth.h"
#include "prune/surgery.h"
#include "model_factory.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace llmprune {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

fs::path client_dir() { return test::source_dir() / "tools/llamacpp"; }

int shell(const std::string& cmd) {
  int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
}

// Empty when node-llama-cpp is installed; else why the test cannot run. Only an unreachable npm
// is a reason to skip: with npm working, a missing install is a failure (the build installs it).
std::string missing_client() {
  if (fs::exists(client_dir() / "node_modules/node-llama-cpp/package.json") &&
      fs::exists(client_dir() / "node_modules/@node-llama-cpp/linux-x64/package.json"))
    return "";
  if (shell("command -v node > /dev/null && command -v npm > /dev/null") != 0) return "skip: node/npm not installed";
  if (shell("timeout 60 npm ping > /dev/null 2>&1") != 0) return "skip: npm registry unreachable (npm ping failed)";
  return "fail: tools/llamacpp/node_modules is missing although npm works: run scripts/install-llamacpp.sh";
}

// The fixture model with small random q/k/v biases added (as a qwen2-style checkpoint has them),
// and with `all`, o and gate/up/down biases too (HF LLaMA's attention_bias + mlp_bias).
Model with_qkv_biases(const Model& m, uint32_t seed, bool all = false) {
  std::map<std::string, Tensor> t;
  m.for_each_tensor([&](const std::string& name, const Tensor& x) { t.emplace(name, x); });
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 0.3f);
  auto bias = [&](int64_t n) {
    Tensor b = Tensor::zeros(DType::F32, {n});
    for (int64_t i = 0; i < n; i++) b.f32_mut()[i] = d(rng);
    return b;
  };
  for (int l = 0; l < int(m.cfg.layers.size()); l++) {
    const std::string p = "model.layers." + std::to_string(l) + ".self_attn.";
    t[p + "q_proj.bias"] = bias(m.cfg.layers[size_t(l)].q_dim());
    t[p + "k_proj.bias"] = bias(m.cfg.layers[size_t(l)].kv_dim());
    t[p + "v_proj.bias"] = bias(m.cfg.layers[size_t(l)].kv_dim());
    if (!all) continue;
    const std::string mlp = "model.layers." + std::to_string(l) + ".mlp.";
    t[p + "o_proj.bias"] = bias(m.cfg.hidden);
    t[mlp + "gate_proj.bias"] = bias(m.cfg.layers[size_t(l)].d_ff);
    t[mlp + "up_proj.bias"] = bias(m.cfg.layers[size_t(l)].d_ff);
    t[mlp + "down_proj.bias"] = bias(m.cfg.hidden);
  }
  Model b = Model::from_tensors(m.cfg, std::move(t), "with-biases");
  b.dir = m.dir;
  return b;
}

// kjv-llama-mha with 3 heads of layer 2 and a third of layer 4's MLP removed: ragged, so `deci`.
Model pruned_fixture(const Model& m) {
  std::vector<Group> drop;
  for (auto& g : discover_groups(m, GroupOptions{}))
    if (((g.kind == UnitKind::Head || g.kind == UnitKind::KvGroup) && g.layer == 2 && g.index < 3) ||
        (g.kind == UnitKind::Mlp && g.layer == 4 && g.index % 3 == 0))
      drop.push_back(g);
  Model p = remove_groups(m, drop);
  p.dir = m.dir;
  return p;
}

// Depth pruning (prune/depth.h): layer 1 without attention, layer 3 without MLP (exported with a
// zero one-channel MLP: llama.cpp runs feed_forward_length 0 as the identity), layer 4 gone.
Model depth_pruned_fixture(const Model& m) {
  Model p = remove_sublayers(m, {{1, true}, {3, false}, {4, true}, {4, false}});
  p.dir = m.dir;
  return p;
}

struct Case {
  std::string name;
  Model model;
  DType dtype;
  std::string arch;  // expected general.architecture
  // llmprune reads llama / deci GGUF files back; others (phi3) are compared with the model exported.
  bool reads_back() const { return arch == "llama" || arch == "deci"; }
};

// log P(ids[i+1] | ids[..i]) by llmprune's forward pass, in double.
std::vector<double> llmprune_logprobs(const Model& m, const std::vector<int32_t>& ids) {
  const int T = int(ids.size()), V = m.cfg.vocab;
  Runner r(m, T);  // RoPE tables for all T positions (the phi3 model's context is capped at its window, 48)
  std::vector<float> logits(size_t(T) * size_t(V));
  r.forward(ids.data(), 1, T, logits.data());
  std::vector<double> lp;
  for (int i = 0; i + 1 < T; i++) {
    const float* x = logits.data() + size_t(i) * size_t(V);
    double mx = *std::max_element(x, x + V), z = 0;
    for (int v = 0; v < V; v++) z += std::exp(double(x[v]) - mx);
    lp.push_back(double(x[ids[size_t(i) + 1]]) - mx - std::log(z));
  }
  return lp;
}

TEST(LlamaCppClient, NodeLlamaCppAgreesWithLlmprune) {
  const std::string missing = missing_client();
  if (missing.rfind("skip: ", 0) == 0) GTEST_SKIP() << "node-llama-cpp not available: " << missing.substr(6);
  ASSERT_TRUE(missing.empty()) << missing.substr(6);

  const fs::path mha_dir = test::fixture_model("kjv-llama-mha");
  Model mha = Model::load(mha_dir);
  Model pruned = pruned_fixture(mha);
  std::vector<Case> cases;
  cases.push_back({"mha-f32", Model::load(mha_dir), DType::F32, "llama"});
  cases.push_back({"gqa-tied-bf16", Model::load(test::fixture_model("kjv-llama-gqa-tied")), DType::BF16, "llama"});
  cases.push_back({"demo-bf16", Model::load(test::source_dir() / "models/kjv-demo"), DType::BF16, "llama"});
  cases.push_back({"bias-f32", with_qkv_biases(mha, 7), DType::F32, "llama"});
  cases.push_back({"pruned-f32", pruned_fixture(mha), DType::F32, "deci"});
  cases.push_back({"pruned-bf16", pruned_fixture(mha), DType::BF16, "deci"});
  // Pruned heads with biases: the q bias has 5 heads' rows, not hidden-size rows.
  cases.push_back({"pruned-bias-f32", with_qkv_biases(pruned, 11), DType::F32, "deci"});
  // attention_bias + mlp_bias: bo and the three ffn biases too, uniform and pruned.
  cases.push_back({"all-bias-f32", with_qkv_biases(mha, 13, true), DType::F32, "llama"});
  cases.push_back({"pruned-all-bias-f32", with_qkv_biases(pruned, 17, true), DType::F32, "deci"});
  // Attention-free and MLP-free layers: deci's head_count 0 / feed_forward_length 0.
  cases.push_back({"depth-f32", depth_pruned_fixture(mha), DType::F32, "deci"});
  cases.push_back({"depth-bf16", depth_pruned_fixture(Model::load(test::fixture_model("kjv-llama-gqa-tied"))), DType::BF16, "deci"});
  // Phi-3 (fused qkv_proj / gate_up_proj kept fused as attn_qkv / ffn_up), GQA 4/2, untied.
  // general.name is the directory's name, and llama.cpp's vocab loader, for a name containing
  // "phi3", sets attributes on "<|endoftext|>", which the KJV vocabulary lacks ("error loading
  // model vocabulary: _Map_base::at"; real Phi-3 vocabularies have it): another name here.
  const fs::path phi3_dir = test::temp_dir("phi") / "tiny-fused";
  fs::copy(test::fixture_model("phi3-tiny"), phi3_dir);
  cases.push_back({"fused-phi-f32", Model::load(phi3_dir), DType::F32, "phi3"});

  auto tok = load_tokenizer(mha_dir);  // every case shares the fixture SentencePiece tokenizer
  const std::string prompt = "In the beginning God";
  const std::vector<std::string> strings = {
      "In the beginning God created the heaven and the earth.",
      "And God said, Let there be light: and there was light.",
      "Numbers 123 4567 and punctuation!?;: (x) [y] {z}",
      "ALLCAPS lowercase MiXeD hyphen-ated don't,\ttab and\nnewline",
      // Last: extra spaces (leading, trailing, a run), which SentencePiece's
      // remove_extra_whitespaces drops and llama.cpp keeps (checked below).
      "  three  spaces   here  ",
  };
  const std::string spaces_normalised = "three spaces here";
  std::vector<int32_t> prompt_ids = {tok->bos_id()};
  for (int32_t id : tok->encode(prompt)) prompt_ids.push_back(id);
  std::string text;
  {
    std::ifstream in(test::fixture_text("kjv.test.txt"));
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::vector<int32_t> score_ids = {tok->bos_id()};
  for (int32_t id : tok->encode(text.substr(0, 1200))) score_ids.push_back(id);
  score_ids.resize(std::min<size_t>(score_ids.size(), 120));
  const int n_predict = 32;

  const fs::path dir = test::temp_dir("gguf");
  json req = {{"runs", json::array()}};
  for (auto& c : cases) {
    const fs::path out = dir / (c.name + ".gguf");
    export_gguf(c.model, tok.get(), out, c.dtype);
    auto with_normalised = strings;
    with_normalised.push_back(spaces_normalised);
    req["runs"].push_back({{"model", out.string()}, {"strings", with_normalised}, {"prompt", prompt},
                           {"prompt_tokens", prompt_ids}, {"n_predict", n_predict}, {"score_tokens", score_ids}});
  }
  atomic_write_file(dir / "request.json", req.dump());
  const int rc = shell("cd '" + client_dir().string() + "' && timeout 600 node check_gguf.mjs < '" +
                       (dir / "request.json").string() + "' > '" + (dir / "result.json").string() + "' 2> '" +
                       (dir / "stderr.txt").string() + "'");
  ASSERT_EQ(rc, 0) << read_text_file((dir / "stderr.txt").string());
  json res = json::parse(read_text_file((dir / "result.json").string()));
  EXPECT_EQ(res["node_llama_cpp"], "3.21.1");
  ASSERT_EQ(res["runs"].size(), cases.size());
  std::printf("node-llama-cpp %s, llama.cpp %s\n", res["node_llama_cpp"].get<std::string>().c_str(),
              res["llama_cpp_release"].get<std::string>().c_str());

  for (size_t ci = 0; ci < cases.size(); ci++) {
    const Case& c = cases[ci];
    const json& r = res["runs"][ci];
    SCOPED_TRACE(c.name);
    const fs::path file = dir / (c.name + ".gguf");
    EXPECT_EQ(gguf::GGUFFile::open(file.string()).get_string("general.architecture"), c.arch);
    Model g = c.reads_back() ? Model::load(file) : c.model;
    EXPECT_EQ(g.cfg.uniform(), c.arch != "deci");
    EXPECT_EQ(r["bos"], tok->bos_id());
    EXPECT_EQ(r["eos"], tok->eos_id());
    EXPECT_EQ(r["prepends_bos"], true);  // tokenizer.ggml.add_bos_token from tokenizer_config.json

    // Tokenisation.
    const size_t n_plain = strings.size() - 1;
    for (size_t s = 0; s < n_plain; s++)
      EXPECT_EQ(r["tokens"][s].get<std::vector<int32_t>>(), tok->encode(strings[s])) << strings[s];
    // The fixture's tokenizer.model normalises with remove_extra_whitespaces (exported as
    // tokenizer.ggml.remove_extra_whitespaces); llama.cpp's SPM tokenizer applies only
    // add_space_prefix, so extra spaces become "▁" tokens there. Without them both agree.
    // (LLaMA's own tokenizer.model has the option off.) docs/export.md, "Known differences".
    ASSERT_TRUE(gguf::GGUFFile::open(file.string()).get_bool("tokenizer.ggml.remove_extra_whitespaces"));
    EXPECT_EQ(tok->encode(strings[n_plain]), tok->encode(spaces_normalised));
    EXPECT_EQ(r["tokens"][n_plain + 1].get<std::vector<int32_t>>(), tok->encode(spaces_normalised));
    EXPECT_NE(r["tokens"][n_plain].get<std::vector<int32_t>>(), tok->encode(strings[n_plain]));

    // Greedy generation: by hand (BOS + prompt, evaluate at temperature 0) and through
    // LlamaCompletion given tokens, both equal to `llmprune generate --temperature 0` on the file.
    auto greedy = r["greedy_evaluate"].get<std::vector<int32_t>>();
    EXPECT_EQ(r["greedy_completion"].get<std::vector<int32_t>>(), greedy);
    Runner run(g);
    GenerateOptions go;
    go.max_tokens = n_predict;
    go.eos_id = tok->eos_id();
    auto ours = generate(run, prompt_ids, go, [](int32_t) {});
    EXPECT_EQ(greedy, ours);
    EXPECT_GE(greedy.size(), size_t(n_predict));
    const std::string cli_model = c.reads_back() ? file.string() : c.model.dir.string();
    auto cli = test::run_cli("generate '" + cli_model + "' -p '" + prompt + "' -n " + std::to_string(n_predict) +
                             " --temperature 0");
    ASSERT_EQ(cli.exit_code, 0) << cli.err;
    std::string node_text = prompt;
    StreamDecoder dec(*tok, prompt_ids);
    for (int32_t id : greedy) node_text += dec.push(id);
    EXPECT_EQ(cli.out, node_text + "\n");
    // LlamaCompletion given the prompt as a STRING tokenises it with "trimLeadingSpace": the
    // first word loses SentencePiece's dummy-prefix space, so it sees other tokens (and continues
    // differently). docs/export.md tells users to pass model.tokenize(prompt) instead.
    EXPECT_NE(r["string_prompt_tokens"].get<std::vector<int32_t>>(), tok->encode(prompt));

    // Next-token log-probabilities over 120 tokens of kjv.test.txt, from llama.cpp's full
    // distribution (F32 KV cache) against llmprune's forward pass on the same .gguf.
    EXPECT_EQ(r["distribution_size"], g.cfg.vocab);
    EXPECT_LT(r["max_prob_sum_error"].get<double>(), 1e-4);
    auto theirs = r["logprobs"].get<std::vector<double>>();
    auto mine = llmprune_logprobs(g, score_ids);
    ASSERT_EQ(theirs.size(), mine.size());
    double nll_a = 0, nll_b = 0, max_rel = 0;
    for (size_t i = 0; i < mine.size(); i++) {
      nll_a -= mine[i];
      nll_b -= theirs[i];
      max_rel = std::max(max_rel, std::fabs(mine[i] - theirs[i]) / std::max(1.0, std::fabs(mine[i])));
    }
    const double ppl_a = std::exp(nll_a / double(mine.size())), ppl_b = std::exp(nll_b / double(mine.size()));
    const double ppl_rel = std::fabs(ppl_a - ppl_b) / ppl_a;
    std::printf("%-16s %-5s ppl llmprune %.5f llama.cpp %.5f (rel %.1e), max per-token |dlogp|/max(1,|logp|) %.1e\n",
                c.name.c_str(), c.arch.c_str(), ppl_a, ppl_b, ppl_rel, max_rel);
    // bf16: llama.cpp's CPU matmul rounds the activations to bf16 for bf16 weights; llmprune
    // multiplies bf16 weights with f32 activations.
    const double tol = c.dtype == DType::F32 ? 1e-3 : 2e-2;
    EXPECT_LT(ppl_rel, tol);
    EXPECT_LT(max_rel, tol);
  }
}

// Exports m (f32) and checks that llama.cpp loads it as `arch` and that its next-token
// log-probabilities over score_ids equal llmprune's forward pass on m (1e-3 relative).
void expect_llamacpp_logprobs_agree(const Model& m, const Tokenizer& tok, const std::vector<int32_t>& score_ids,
                                    const std::string& arch, const std::string& name) {
  const fs::path dir = test::temp_dir(name);
  const fs::path file = dir / (name + ".gguf");
  export_gguf(m, &tok, file, DType::F32);
  EXPECT_EQ(gguf::GGUFFile::open(file.string()).get_string("general.architecture"), arch);
  json req = {{"runs", json::array({json{{"model", file.string()}, {"strings", json::array({"In the beginning"})},
                                          {"prompt", "In the beginning"}, {"prompt_tokens", score_ids},
                                          {"n_predict", 4}, {"score_tokens", score_ids}}})}};
  atomic_write_file(dir / "request.json", req.dump());
  const int rc = shell("cd '" + client_dir().string() + "' && timeout 300 node check_gguf.mjs < '" + (dir / "request.json").string() +
                       "' > '" + (dir / "result.json").string() + "' 2> '" + (dir / "stderr.txt").string() + "'");
  ASSERT_EQ(rc, 0) << read_text_file((dir / "stderr.txt").string());
  const json r = json::parse(read_text_file((dir / "result.json").string()))["runs"][0];
  EXPECT_EQ(r["distribution_size"], m.cfg.vocab);
  auto theirs = r["logprobs"].get<std::vector<double>>();
  auto mine = llmprune_logprobs(m, score_ids);
  ASSERT_EQ(theirs.size(), mine.size());
  double max_rel = 0;
  for (size_t i = 0; i < mine.size(); i++)
    max_rel = std::max(max_rel, std::fabs(mine[i] - theirs[i]) / std::max(1.0, std::fabs(mine[i])));
  std::printf("%s as %s, f32: max per-token |dlogp|/max(1,|logp|) %.1e over %zu tokens\n", name.c_str(), arch.c_str(), max_rel,
              mine.size());
  EXPECT_LT(max_rel, 1e-3);
}

std::vector<int32_t> kjv_test_ids(const Tokenizer& tok) {
  std::string text;
  {
    std::ifstream in(test::fixture_text("kjv.test.txt"));
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::vector<int32_t> ids = tok.prefix_ids();
  for (int32_t id : tok.encode(text.substr(0, 1200))) ids.push_back(id);
  ids.resize(std::min<size_t>(ids.size(), 120));
  return ids;
}

// ChatGLM3 (kjv-chatglm3, THUDM's format) as llama.cpp's chatglm: the file loads (its
// SentencePiece vocabulary has the piece "eop", which the appended special "eop" would repeat:
// llama.cpp aborts on a repeated token string, so the special is written "<eop>"), and the
// log-probabilities over [gMASK] sop + 118 tokens of kjv.test.txt agree.
TEST(LlamaCppClient, ChatglmGgufAgreesWithLlmprune) {
  const std::string missing = missing_client();
  if (missing.rfind("skip: ", 0) == 0) GTEST_SKIP() << "node-llama-cpp not available: " << missing.substr(6);
  ASSERT_TRUE(missing.empty()) << missing.substr(6);
  const fs::path model_dir = test::fixture_model("kjv-chatglm3");
  auto tok = load_tokenizer_for_model(model_dir);  // [gMASK] sop, then SentencePiece alone
  expect_llamacpp_logprobs_agree(Model::load(model_dir), *tok, kjv_test_ids(*tok), "chatglm", "chatglm3");
}

// transformers-native GLM (GlmForCausalLM) as llama.cpp's converter writes it: chatglm with
// attn_q / attn_k / attn_v (+ biases) and ffn_up = gate_up_proj, half-head rotary.
TEST(LlamaCppClient, GlmGgufAgreesWithLlmprune) {
  const std::string missing = missing_client();
  if (missing.rfind("skip: ", 0) == 0) GTEST_SKIP() << "node-llama-cpp not available: " << missing.substr(6);
  ASSERT_TRUE(missing.empty()) << missing.substr(6);
  auto s = test::RandomModelSpec::uniform(2, 4, 2, 48);
  s.model_type = "glm";
  s.hidden = 64;
  s.head_dim = 16;  // 4 x 16 = hidden: llama.cpp's chatglm graph needs it
  s.vocab = 4096;
  s.qkv_bias = true;
  s.seed = 5;
  const fs::path dir = test::temp_dir("glm-model") / "glm-tiny";
  fs::create_directories(dir);
  save_model_files(test::make_random_model(s), dir, DType::F32, "");
  fs::copy_file(test::fixture_model("phi3-tiny") / "tokenizer.model", dir / "tokenizer.model");
  auto tok = load_tokenizer_for_model(dir);
  expect_llamacpp_logprobs_agree(Model::load(dir), *tok, kjv_test_ids(*tok), "chatglm", "glm");
}

// GLM-4-0414 (glm4-tiny: head size 8 with hidden 40 and 4 heads, GQA, q/k/v biases) as
// llama.cpp's glm4: post_attention_norm / post_ffw_norm, attn_q/k/v apart, ffn_up = gate_up_proj.
TEST(LlamaCppClient, Glm4GgufAgreesWithLlmprune) {
  const std::string missing = missing_client();
  if (missing.rfind("skip: ", 0) == 0) GTEST_SKIP() << "node-llama-cpp not available: " << missing.substr(6);
  ASSERT_TRUE(missing.empty()) << missing.substr(6);
  const fs::path model_dir = test::fixture_model("glm4-tiny");
  auto tok = load_tokenizer_for_model(model_dir);
  expect_llamacpp_logprobs_agree(Model::load(model_dir), *tok, kjv_test_ids(*tok), "glm4", "glm4");
}

}  // namespace
}  // namespace llmprune
