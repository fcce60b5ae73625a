// `--compute bf16` end to end: the bf16 paths of the forward, the gradient pass and the prune
// against fp32 (kept units, perplexity) on both fixtures, and bf16 weights used as stored.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "model/backward.h"
#include "model/forward.h"
#include "model/random_model.h"
#include "bf16_check.h"
#include "test_util.h"

namespace llmprune {
namespace {

using kernels::Compute;

nlohmann::json read_json(const std::filesystem::path& p) {
  std::ifstream f(p);
  return nlohmann::json::parse(f);
}

using Unit = std::tuple<int, std::string, int>;  // layer, kind, index
std::set<Unit> units_of(const nlohmann::json& list) {
  std::set<Unit> s;
  for (auto& u : list) s.insert({u["layer"].get<int>(), u["kind"].get<std::string>(), u["index"].get<int>()});
  return s;
}

double eval_ppl(const std::filesystem::path& model, const std::string& compute) {
  auto r = test::run_cli("eval --json " + model.string() + " --ppl kjv=" + test::fixture_text("kjv.test.txt").string() +
                         " --seq-len 64 --max-windows 16 --compute " + compute);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return nlohmann::json::parse(r.out)["ppl"]["kjv"]["ppl"].get<double>();
}

// Prunes a fixture at 20% with fp32 and with bf16 compute: the same units are kept (>= 99%)
// and the pruned models' perplexities agree within 0.5%.
// `method`: the importance flags after --importance (taylor --taylor element1, or flap with
// least-squares compensation, whose statistics and refit passes then run under bf16 too).
void check_fixture(const std::string& name, const std::string& method, bool refit = false) {
  const std::string tag = method.substr(method.rfind(' ') + 1);
  const auto dir = test::temp_dir(name + "-" + tag);
  // The first 60 kB of the training text: plenty for 8 x 64 tokens, quick to tokenize.
  const auto calib = dir / "calib.txt";
  {
    std::ifstream in(test::fixture_text("kjv.train.txt"), std::ios::binary);
    std::string text(60000, '\0');
    in.read(text.data(), std::streamsize(text.size()));
    std::ofstream(calib, std::ios::binary) << text.substr(0, size_t(in.gcount()));
  }
  std::set<Unit> removed[2];
  double ppl[2];
  size_t n_units = 0;
  for (int c = 0; c < 2; c++) {
    const std::string compute = c ? "bf16" : "fp32";
    const auto out = dir / compute;
    auto r = test::run_cli("prune " + test::fixture_model(name).string() + " --out " + out.string() +
                           " --strategy block --ratio 0.2 --importance " + method + " --calib " + calib.string() +
                           " --calib-samples 8 --calib-seq-len 64 --stat-calib " + calib.string() +
                           " --stat-samples 8 --stat-seq-len 64 --compute " + compute);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto pj = read_json(out / "pruning.json");
    EXPECT_EQ(pj["compute"], compute);
    removed[c] = units_of(pj["removed"]);
    n_units = read_json(out / "importance.json").size();
    ppl[c] = eval_ppl(out, "fp32");
  }
  ASSERT_GT(n_units, 1000u);
  ASSERT_EQ(removed[0].size(), removed[1].size());
  size_t differ = 0;  // units kept by one run and removed by the other
  for (auto& u : removed[0]) differ += removed[1].count(u) ? 0 : 2;
  const double agree = 1.0 - double(differ) / double(n_units);
  EXPECT_GE(agree, 0.99) << name << " " << method << ": " << differ << " of " << n_units << " units differ";
  EXPECT_LE(std::abs(ppl[1] / ppl[0] - 1.0), 0.005) << name << ": pruned-model ppl fp32 " << ppl[0] << " vs bf16 " << ppl[1];
  // The refit ran under bf16: its weights are not the fp32 run's (same units, other rounding).
  if (refit)
    EXPECT_FALSE(test::read_bytes(dir / "fp32" / "model.safetensors") == test::read_bytes(dir / "bf16" / "model.safetensors"))
        << "the bf16 run's refitted weights equal the fp32 run's: the refit did not run under bf16";
  std::printf("[ %s %s: %.2f%% of %zu units agree; pruned ppl %.4f (fp32 compute) vs %.4f (bf16) ]\n", name.c_str(),
              method.c_str(), 100 * agree, n_units, ppl[0], ppl[1]);
}

TEST(ComputeBf16, PruneKeepsTheFp32UnitsMha) { check_fixture("kjv-llama-mha", "taylor --taylor element1"); }
TEST(ComputeBf16, PruneKeepsTheFp32UnitsGqaTied) { check_fixture("kjv-llama-gqa-tied", "taylor --taylor element1"); }
// element2 takes the per-sample (Fisher) statistics path.
TEST(ComputeBf16, PruneKeepsTheFp32UnitsFisherPath) { check_fixture("kjv-llama-gqa-tied", "taylor --taylor element2"); }
// FLAP's statistics pass and the least-squares refit run their forwards under bf16 too.
TEST(ComputeBf16, FlapAndCompensationKeepTheFp32Units) { check_fixture("kjv-llama-gqa-tied", "flap --compensate lstsq", true); }

TEST(ComputeBf16, EvalPerplexityWithinHalfAPercent) {
  const auto m = test::fixture_model("kjv-llama-mha");
  const double f = eval_ppl(m, "fp32"), h = eval_ppl(m, "bf16");
  EXPECT_NE(f, h);  // the bf16 path really ran
  EXPECT_LE(std::abs(h / f - 1.0), 0.005) << f << " vs " << h;
}

// LoRA training on the frozen base with bf16 GEMMs follows the fp32 run's loss.
TEST(ComputeBf16, TuneLossFollowsFp32) {
  const auto dir = test::temp_dir("tune");
  const auto data = dir / "d.txt";
  {
    std::ifstream in(test::fixture_text("kjv.valid.txt"), std::ios::binary);
    std::string text(20000, '\0');
    in.read(text.data(), std::streamsize(text.size()));
    std::ofstream(data, std::ios::binary) << text.substr(0, size_t(in.gcount()));
  }
  double loss[2];
  for (int c = 0; c < 2; c++) {
    const std::string compute = c ? "bf16" : "fp32";
    auto r = test::run_cli("tune " + test::fixture_model("kjv-llama-gqa-tied").string() + " --data " + data.string() +
                           " --out " + (dir / compute).string() + " --max-steps 3 --batch 4 --micro-batch 4 --cutoff-len 64" +
                           " --lr 1e-3 --save-every 0 --eval-every 0 --json --compute " + compute);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    loss[c] = nlohmann::json::parse(r.out)["final_train_loss"].get<double>();
  }
  EXPECT_NE(loss[0], loss[1]);
  EXPECT_NEAR(loss[1], loss[0], 0.005 * loss[0]);
}

TEST(ComputeBf16, UnknownComputeIsAUserError) {
  auto r = test::run_cli("eval " + test::fixture_model("kjv-llama-mha").string() + " --ppl " +
                         test::fixture_text("kjv.test.txt").string() + " --compute fp16");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--compute 'fp16' is not one of fp32, bf16"), std::string::npos) << r.err;
}

// bf16 weights read as stored give exactly what the same values stored as fp32 give (the fp32
// operand is rounded to the same bf16 while packed): forward logits and every gradient.
TEST(ComputeBf16, StoredBf16WeightsEqualTheirFp32Copy) {
  test::expect_bf16_compute_consistent(make_random_model(llama_config(64, 2, 4, 2, 96, 128), DType::BF16, 7));
}

// The same with a bias on every projection (q, k, v, o, gate, up, down; head_dim 24, GQA 4/2).
TEST(ComputeBf16, EveryProjectionBiasUnderBf16Compute) {
  Model m = Model::load(test::fixture_model("llama-bias-tiny"));
  ASSERT_EQ(m.storage_dtype(), DType::BF16);
  for (Role b : {Role::QBias, Role::KBias, Role::VBias, Role::OBias, Role::GateBias, Role::UpBias, Role::DownBias})
    ASSERT_FALSE(m.layers[0][b].empty()) << int(b);
  test::expect_bf16_compute_consistent(m);
}

}  // namespace

namespace test {

namespace {
struct CollectGrads : GradSink {
  std::vector<std::vector<float>> g;
  void on_layer(int, const LayerF32&, std::array<GradStats, kNumLayerRoles>& gr) override {
    for (auto& s : gr) g.push_back(s.g), g.push_back(s.a);
  }
  void on_global(std::array<const float*, kNumGlobalRoles>, std::array<GradStats, kNumGlobalRoles>& gr) override {
    for (auto& s : gr) g.push_back(s.g), g.push_back(s.a);
  }
};

std::vector<float> logits_of(const Model& m, Compute c, const std::vector<int32_t>& tokens, int B, int T) {
  Runner r(m);
  r.set_compute(c);
  std::vector<float> out(size_t(B) * T * size_t(m.cfg.vocab));
  r.forward(tokens.data(), B, T, out.data());
  return out;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float d = 0;
  for (size_t i = 0; i < a.size(); i++) d = std::max(d, std::abs(a[i] - b[i]));
  return d;
}
}  // namespace

// 1. bf16 compute on the bf16 model == bf16 compute on its fp32 copy, bit for bit (logits, and
//    every weight gradient with and without per-sample statistics).
// 2. bf16 compute is close to fp32 compute, and much closer than the model without its biases
//    (a bias the bf16 path dropped would show here), if it has biases.
// 3. Forwards of <= kSmallMMax rows (decode) read the weights as stored whatever --compute says:
//    the same logits in both.
void expect_bf16_compute_consistent(const Model& h) {
  Model f = h;
  f.for_each_tensor_mut([](const std::string&, Tensor& t) { t = t.converted(DType::F32); });
  const int V = h.cfg.vocab, B = 2, T = 9;
  std::vector<int32_t> tokens(size_t(B) * T);
  for (size_t i = 0; i < tokens.size(); i++) tokens[i] = int32_t((i * 37 + 5) % size_t(V));
  const std::vector<float> lh = logits_of(h, Compute::BF16, tokens, B, T), lf = logits_of(f, Compute::BF16, tokens, B, T),
                           l32 = logits_of(f, Compute::F32, tokens, B, T);
  EXPECT_EQ(lh, lf);
  EXPECT_NE(lh, l32);  // fp32 compute differs (activations are not rounded there)
  // bf16 rounding of every GEMM input (~2^-9 relative) compounds over the layers: bounded
  // relative to the logits' own scale, which differs between a random and a trained model.
  float scale = 0;
  for (float v : l32) scale = std::max(scale, std::abs(v));
  EXPECT_LT(max_abs_diff(lh, l32), 2e-2f * std::max(scale, 1.0f));

  Model no_bias = f;
  bool has_bias = false;
  for (auto& L : no_bias.layers)
    for (Role b : {Role::QBias, Role::KBias, Role::VBias, Role::OBias, Role::GateBias, Role::UpBias, Role::DownBias}) {
      Tensor& t = L.w[size_t(b)];
      if (t.empty()) continue;
      has_bias = true;
      t = t.converted(DType::F32);  // its own buffer, then zeros
      std::fill(t.f32_mut(), t.f32_mut() + t.numel(), 0.0f);
    }
  if (has_bias) {
    const float bias_effect = max_abs_diff(logits_of(no_bias, Compute::F32, tokens, B, T), l32);
    EXPECT_LT(max_abs_diff(lh, l32), 0.1f * bias_effect) << "bias effect " << bias_effect;
  }

  const int Td = std::min(5, kernels::kSmallMMax);  // a decode-sized forward: 1 x 5 rows
  EXPECT_EQ(logits_of(h, Compute::BF16, tokens, 1, Td), logits_of(h, Compute::F32, tokens, 1, Td));

  for (bool per_sample : {false, true}) {
    GradOptions o;
    o.compute = Compute::BF16;
    o.per_sample = per_sample;
    CollectGrads ch, cf;
    BackwardResult bh = compute_gradients(h, tokens.data(), B, T, o, ch);
    BackwardResult bf = compute_gradients(f, tokens.data(), B, T, o, cf);
    EXPECT_EQ(bh.loss, bf.loss);
    ASSERT_EQ(ch.g.size(), cf.g.size());
    for (size_t i = 0; i < ch.g.size(); i++) EXPECT_EQ(ch.g[i], cf.g[i]) << "tensor " << i << " per_sample " << per_sample;
  }
}

}  // namespace test
}  // namespace llmprune
