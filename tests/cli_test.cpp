// The foundation subcommands as a user runs them: info, eval --ppl, generate; and the KV cache.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "model/generate.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace llmprune {
namespace {

TEST(Cli, InfoJsonReportsShapesAndParams) {
  auto r = test::run_cli("info --json " + test::fixture_model("kjv-llama-gqa-tied").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["params"]["total"], 5278976);
  EXPECT_EQ(j["layers"].size(), 6u);
  EXPECT_EQ(j["layers"][0]["heads"], 8);
  EXPECT_EQ(j["layers"][0]["kv_heads"], 2);
  EXPECT_EQ(j["layers"][0]["mlp"], 704);
  EXPECT_EQ(j["tied_embeddings"], true);
  EXPECT_EQ(j["dtype"], "F32");
}

TEST(Cli, EvalPplJsonStatesTheConvention) {
  auto r = test::run_cli("eval --json " + test::fixture_model("kjv-llama-mha").string() + " --ppl kjv=" +
                         test::fixture_text("kjv.test.txt").string() + " --seq-len 64 --max-windows 10");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["ppl"]["kjv"]["windows"], 10);
  EXPECT_EQ(j["ppl"]["kjv"]["tokens_scored"], 10 * 63);
  EXPECT_GT(j["ppl"]["kjv"]["ppl"].get<double>(), 5.0);
  EXPECT_LT(j["ppl"]["kjv"]["ppl"].get<double>(), 60.0);
  EXPECT_NE(j["ppl"]["kjv"]["convention"].get<std::string>().find("BOS once"), std::string::npos);
}

TEST(Cli, GenerateGreedyIsDeterministicAndKeepsSpaces) {
  std::string cmd = "generate " + test::fixture_model("kjv-llama-mha").string() + " --prompt 'And God said' --max-tokens 12";
  auto a = test::run_cli(cmd), b = test::run_cli(cmd);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_EQ(a.out.rfind("And God said ", 0), 0u) << a.out;  // the continuation starts with its space
  auto bad = test::run_cli("generate " + test::fixture_model("kjv-llama-mha").string() + " --prompt x --top-p 0");
  EXPECT_EQ(bad.exit_code, 2);
}

TEST(Generate, KvCacheMatchesFullRecompute) {
  // Greedy decoding through the KV cache must pick the same tokens as recomputing the whole
  // sequence at every step.
  for (const char* name : {"kjv-llama-mha", "kjv-llama-gqa-tied"}) {
    Model m = Model::load(test::fixture_model(name));
    auto tok = load_tokenizer(test::fixture_model(name));
    std::vector<int32_t> prompt = {tok->bos_id()};
    for (int32_t id : tok->encode("In the beginning God")) prompt.push_back(id);
    Runner r(m);
    GenerateOptions o;
    o.max_tokens = 16;
    auto cached = generate(r, prompt, o, nullptr);
    std::vector<int32_t> seq = prompt;
    std::vector<int32_t> full;
    for (int i = 0; i < 16; i++) {
      std::vector<float> logits(size_t(seq.size()) * size_t(m.cfg.vocab));
      r.forward(seq.data(), 1, int(seq.size()), logits.data());
      const float* last = logits.data() + (seq.size() - 1) * size_t(m.cfg.vocab);
      int32_t best = int32_t(std::max_element(last, last + m.cfg.vocab) - last);
      full.push_back(best);
      seq.push_back(best);
    }
    EXPECT_EQ(cached, full) << name;
  }
}

TEST(Generate, TopPSamplingStaysInTheNucleus) {
  std::vector<float> logits = {5.0f, 4.0f, -10.0f, -10.0f};
  uint64_t state = 3;
  for (int i = 0; i < 200; i++) {
    auto l = logits;
    int32_t id = sample_token(l, 1.0f, 0.9f, &state);
    EXPECT_TRUE(id == 0 || id == 1);
  }
  auto l = logits;
  EXPECT_EQ(sample_token(l, 0.0f, 1.0f, &state), 0);
}

}  // namespace
}  // namespace llmprune
