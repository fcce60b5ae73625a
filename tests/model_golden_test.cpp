// The engine against the PyTorch reference (tools/reference.py -> tests/golden/*.lpgd):
// logits and loss for fixed ids, perplexity of the fixture test text, and every weight's
// gradient and Fisher diagonal on the calibration batch.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "eval/perplexity.h"
#include "golden.h"
#include "model/backward.h"
#include "grad_check.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace llmprune {
namespace {

golden::GoldenFile load_golden(const std::string& model) {
  return golden::GoldenFile::load((test::source_dir() / "tests/golden" / (model + ".lpgd")).string());
}

std::vector<int32_t> ids_of(const golden::GoldenTensor& t) { return std::vector<int32_t>(t.values.begin(), t.values.end()); }

class ModelGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelGolden, LogitsAndLoss) {
  auto g = load_golden(GetParam());
  Model m = Model::load(test::fixture_model(GetParam()));
  auto ids = ids_of(g.get("fwd/ids"));
  const int B = int(g.get("fwd/ids").shape[0]), T = int(g.get("fwd/ids").shape[1]);
  Runner r(m);
  std::vector<float> logits(size_t(B) * T * m.cfg.vocab);
  r.forward(ids.data(), B, T, logits.data());
  std::vector<double> got(logits.begin(), logits.end());
  EXPECT_TRUE(golden::allclose(got.data(), g.get("fwd/logits"), 2e-4, 1e-3));
  NllResult n = sequence_nll(r, ids.data(), B, T);
  EXPECT_NEAR(n.nll_sum / double(n.count), g.get("fwd/loss").values[0], 1e-5);
}

TEST_P(ModelGolden, PerplexityOfTestText) {
  auto g = load_golden(GetParam());
  Model m = Model::load(test::fixture_model(GetParam()));
  auto tok = load_tokenizer(test::fixture_model(GetParam()));
  auto ids = tokenize_file_with_bos(*tok, test::fixture_text("kjv.test.txt").string());
  EXPECT_EQ(double(ids.size()), g.get("ppl/n_tokens").values[0]);
  Runner r(m);
  PplOptions o;
  o.seq_len = 128;
  PplResult res = perplexity(r, ids, o);
  EXPECT_EQ(double(res.windows), g.get("ppl/kjv_test_128_windows").values[0]);
  EXPECT_EQ(double(res.tokens_scored), g.get("ppl/kjv_test_128_count").values[0]);
  const double ref = g.get("ppl/kjv_test_128").values[0];
  EXPECT_LT(std::abs(res.ppl - ref) / ref, 1e-3) << "ppl " << res.ppl << " vs reference " << ref;
}

TEST(ModelGoldenSliding, StrideHalfWindow) {
  auto g = load_golden("kjv-llama-gqa-tied");
  Model m = Model::load(test::fixture_model("kjv-llama-gqa-tied"));
  auto tok = load_tokenizer(test::fixture_model("kjv-llama-gqa-tied"));
  auto ids = tokenize_file_with_bos(*tok, test::fixture_text("kjv.test.txt").string());
  Runner r(m);
  PplOptions o;
  o.seq_len = 128;
  o.stride = 64;
  PplResult res = perplexity(r, ids, o);
  EXPECT_EQ(double(res.windows), g.get("ppl/kjv_test_s64_windows").values[0]);
  EXPECT_EQ(double(res.tokens_scored), g.get("ppl/kjv_test_s64_count").values[0]);
  const double ref = g.get("ppl/kjv_test_s64").values[0];
  EXPECT_LT(std::abs(res.ppl - ref) / ref, 1e-3) << "ppl " << res.ppl << " vs reference " << ref;
}

using test::CollectSink;

::testing::AssertionResult strided_close(const std::vector<float>& full, const golden::GoldenTensor& ref, int64_t stride,
                                         double atol, double rtol) {
  std::vector<double> got;
  for (size_t i = 0; i < ref.values.size(); i++) got.push_back(full.at(i * size_t(stride)));
  return golden::allclose(got.data(), ref, atol, rtol);
}

TEST_P(ModelGolden, GradientsAndFisherOfCalibrationLoss) {
  auto g = load_golden(GetParam());
  Model m = Model::load(test::fixture_model(GetParam()));
  auto ids = ids_of(g.get("calib/ids"));
  const int B = int(g.get("calib/ids").shape[0]), T = int(g.get("calib/ids").shape[1]);
  CollectSink sink(m);
  GradOptions opt;
  opt.per_sample = true;
  BackwardResult res = compute_gradients(m, ids.data(), B, T, opt, sink);
  EXPECT_NEAR(res.loss, g.get("calib/loss").values[0], 1e-5);
  int checked = 0;
  m.for_each_tensor([&](const std::string& name, const Tensor&) {
    ASSERT_TRUE(sink.grads.count(name)) << "no gradient for " << name;
    const GradStats& st = sink.grads[name];
    // Gradients are O(1e-3..1e-1); the scale-aware atol covers fp32 accumulation-order noise.
    double gmax = 0;
    for (double v : g.get("grad/" + name).values) gmax = std::max(gmax, std::abs(v));
    EXPECT_TRUE(strided_close(st.g, g.get("grad/" + name), int64_t(g.get("gradstride/" + name).values[0]), 1e-4 * gmax, 1e-3))
        << name;
    if (g.has("fisher/" + name)) {
      double amax = 0;
      for (double v : g.get("fisher/" + name).values) amax = std::max(amax, std::abs(v));
      EXPECT_TRUE(strided_close(st.a, g.get("fisher/" + name), int64_t(g.get("fisherstride/" + name).values[0]), 1e-4 * amax, 2e-3))
          << name;
    }
    checked++;
  });
  // The fixtures have 6 layers of 9 tensors; the bias model 2 layers of 16 (7 biases).
  EXPECT_GE(checked, GetParam() == "llama-bias-tiny" ? 2 + 2 * 16 : 51);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ModelGolden, ::testing::Values("kjv-llama-mha", "kjv-llama-gqa-tied", "llama-bias-tiny"),
                         [](const auto& info) {
                           return info.param == "kjv-llama-mha" ? std::string("mha")
                                  : info.param == "kjv-llama-gqa-tied" ? std::string("gqa_tied")
                                                                        : std::string("llama_bias");
                         });

}  // namespace
}  // namespace llmprune
