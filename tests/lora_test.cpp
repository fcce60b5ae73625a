// LoRA recovery (src/train, `llmprune tune`): adapters as a LinearHook, merge, gradients against
// finite differences, AdamW steps against PyTorch (tools/lora_reference.py), kill-and-resume,
// data parsing (Alpaca template, response-only labels, bad records), PEFT adapter layout.
#include <gtest/gtest.h>
#include <omp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "core/error.h"
#include "golden.h"
#include "io/safetensors.h"
#include "kernels/ops.h"
#include "model/backward.h"
#include "model_factory.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"
#include "train/data.h"
#include "train/lora.h"
#include "train/trainer.h"

namespace fs = std::filesystem;

namespace llmprune {
namespace {

// One OpenMP thread (and OMP_NUM_THREADS=1 for the CLI runs) during these tests: on a shared,
// oversubscribed machine the small GEMMs of the fixture models are many times slower with
// spinning worker threads. Results do not depend on the thread count.
struct OneThread {
  int saved;
  std::string saved_env;
  bool had_env;
  OneThread() : saved(omp_get_max_threads()) {
    const char* e = std::getenv("OMP_NUM_THREADS");
    had_env = e != nullptr;
    if (e) saved_env = e;
    omp_set_num_threads(1);
    setenv("OMP_NUM_THREADS", "1", 1);
  }
  ~OneThread() {
    omp_set_num_threads(saved);
    if (had_env) setenv("OMP_NUM_THREADS", saved_env.c_str(), 1);
    else unsetenv("OMP_NUM_THREADS");
  }
};

struct NoSink : GradSink {
  void on_layer(int, const LayerF32&, std::array<GradStats, kNumLayerRoles>&) override {}
};

std::vector<float> logits_of(const Model& m, LinearHook* hook, const std::vector<int32_t>& tokens, int B, int T) {
  Runner r(m, T);
  r.set_hook(hook);
  std::vector<float> out(size_t(B) * T * m.cfg.vocab);
  r.forward(tokens.data(), B, T, out.data());
  return out;
}

std::vector<int32_t> some_tokens(const Model& m, int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = int32_t(rng() % uint32_t(m.cfg.vocab));
  return t;
}

void randomize_B(LoraAdapters& lora, float scale, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  for (auto& p : lora.pairs())
    for (auto& v : p.B) v = d(rng);
}

void write_file(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary);
  f << s;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

TEST(Lora, ZeroBGivesTheBaseModelsLogitsExactly) {
  OneThread one_thread;
  for (const char* name : {"kjv-llama-mha", "kjv-llama-gqa-tied"}) {
    Model m = Model::load(test::fixture_model(name));
    LoraConfig c;  // paper defaults: r 8, alpha 16, dropout 0.05, all seven projections
    LoraAdapters lora(m, c);
    EXPECT_EQ(lora.pairs().size(), size_t(7 * m.cfg.n_layer));
    auto tokens = some_tokens(m, 2 * 24, 5);
    auto base = logits_of(m, nullptr, tokens, 2, 24);
    lora.set_training(true);  // dropout active: still exactly zero with B = 0
    lora.set_dropout_key(3);
    auto with = logits_of(m, &lora, tokens, 2, 24);
    ASSERT_EQ(base.size(), with.size());
    EXPECT_EQ(std::memcmp(base.data(), with.data(), base.size() * 4), 0) << name;
  }
}

TEST(Lora, InitMatchesPeftKaimingUniformBound) {
  OneThread one_thread;
  Model m = Model::load(test::fixture_model("kjv-llama-mha"));
  LoraAdapters lora(m, LoraConfig{});
  for (auto& p : lora.pairs()) {
    const float bound = 1.0f / std::sqrt(float(p.in));
    float mx = 0;
    double mean = 0;
    for (float v : p.A) {
      mx = std::max(mx, std::fabs(v));
      mean += v;
    }
    EXPECT_LE(mx, bound);
    EXPECT_GT(mx, 0.9f * bound);
    EXPECT_LT(std::fabs(mean / double(p.A.size())), 0.05 * bound);
    for (float v : p.B) ASSERT_EQ(v, 0.0f);
  }
  LoraConfig other;
  other.seed = 43;
  LoraAdapters lora2(m, other), lora3(m, LoraConfig{});
  EXPECT_NE(lora2.pairs()[0].A, lora.pairs()[0].A);
  EXPECT_EQ(lora3.pairs()[0].A, lora.pairs()[0].A);
}

TEST(Lora, MergedModelEqualsUnmergedAdapters) {
  OneThread one_thread;
  for (const char* name : {"kjv-llama-mha", "kjv-llama-gqa-tied"}) {
    Model m = Model::load(test::fixture_model(name));
    LoraAdapters lora(m, LoraConfig{});
    randomize_B(lora, 0.05f, 11);
    lora.set_training(false);
    auto tokens = some_tokens(m, 2 * 32, 9);
    auto unmerged = logits_of(m, &lora, tokens, 2, 32);
    auto base = logits_of(m, nullptr, tokens, 2, 32);
    Model merged = merge_lora(m, lora);
    auto after = logits_of(merged, nullptr, tokens, 2, 32);
    double max_diff = 0, max_change = 0;
    for (size_t i = 0; i < after.size(); i++) {
      max_diff = std::max(max_diff, double(std::fabs(after[i] - unmerged[i])));
      max_change = std::max(max_change, double(std::fabs(unmerged[i] - base[i])));
    }
    EXPECT_GT(max_change, 0.05) << name << ": the adapters should change the logits";
    EXPECT_LT(max_diff, 2e-4) << name;
    // Tensors without an adapter are shared, not copied; the base model is untouched.
    EXPECT_EQ(merged.embed().data, m.embed().data);
    EXPECT_NE(merged.layers[0][Role::Q].data, m.layers[0][Role::Q].data);
  }
}

TEST(Lora, MergeIntoBf16RoundsOnce) {
  OneThread one_thread;
  test::RandomModelSpec s = test::RandomModelSpec::uniform(2, 4, 2, 40);
  s.dtype = DType::BF16;
  Model m = test::make_random_model(s);
  LoraConfig c;
  c.r = 4;
  LoraAdapters lora(m, c);
  randomize_B(lora, 0.1f, 2);
  Model merged = merge_lora(m, lora);
  const LoraPair& p = lora.pairs()[0];
  const Tensor& W = m.layers[0][p.role];
  const Tensor& W2 = merged.layers[0][p.role];
  ASSERT_EQ(W2.dtype, DType::BF16);
  std::vector<float> w(size_t(W.numel())), w2(w.size());
  to_f32(W.dtype, W.data, w.data(), w.size());
  to_f32(W2.dtype, W2.data, w2.data(), w2.size());
  for (int o = 0; o < p.out; o++)
    for (int i = 0; i < p.in; i++) {
      double d = 0;
      for (int a = 0; a < p.r; a++) d += double(p.B[size_t(o) * p.r + a]) * p.A[size_t(a) * p.in + i];
      float exact = float(double(w[size_t(o) * p.in + i]) + lora.scale() * d);
      ASSERT_EQ(w2[size_t(o) * p.in + i], bf16_to_f32(f32_to_bf16(exact))) << o << "," << i;
    }
}

// Analytic LoRA gradients (through the hook in the layer-by-layer backward) against central
// finite differences of the same loss, with dropout active (fixed masks), GQA, a ragged MLP and
// masked targets.
TEST(Lora, GradientsMatchFiniteDifferences) {
  OneThread one_thread;
  test::RandomModelSpec s = test::RandomModelSpec::uniform(2, 4, 2, 24);
  s.layers[1].d_ff = 16;
  s.hidden = 24;
  s.vocab = 40;
  s.head_dim = 6;
  s.seed = 3;
  Model m = test::make_random_model(s);
  LoraConfig c;
  c.r = 3;
  c.alpha = 6;
  c.dropout = 0.2;
  LoraAdapters lora(m, c);
  randomize_B(lora, 0.3f, 4);
  lora.set_training(true);
  lora.set_dropout_key(77);
  const int B = 2, T = 9;
  auto tokens = some_tokens(m, B * T, 21);
  std::vector<int32_t> targets(size_t(B) * T, -1);
  for (int b = 0; b < B; b++)
    for (int t = 2 * b; t + 1 < T; t++) targets[size_t(b) * T + t] = tokens[size_t(b) * T + t + 1];
  GradOptions go;
  go.global_grads = false;
  go.weight_grads = false;
  go.hook = &lora;
  go.targets = targets.data();
  NoSink sink;
  auto loss = [&] { return compute_gradients(m, tokens.data(), B, T, go, sink).loss; };
  lora.zero_grad();
  BackwardResult r0 = compute_gradients(m, tokens.data(), B, T, go, sink);
  EXPECT_EQ(r0.scored, int64_t(T - 1) + int64_t(T - 3));
  std::vector<std::vector<float>> gA, gB;
  for (auto& p : lora.pairs()) {
    gA.push_back(p.dA);
    gB.push_back(p.dB);
  }
  // Element-wise on a sample of entries of every adapter.
  const float eps = 1e-2f;
  std::mt19937 rng(8);
  int checked = 0;
  double worst = 0;
  for (size_t k = 0; k < lora.pairs().size(); k++) {
    for (int which = 0; which < 2; which++) {
      for (int rep = 0; rep < 3; rep++) {
        auto& vec = which == 0 ? lora.pairs()[k].A : lora.pairs()[k].B;
        size_t i = rng() % vec.size();
        float keep = vec[i];
        vec[i] = keep + eps;
        double lp = loss();
        vec[i] = keep - eps;
        double lm = loss();
        vec[i] = keep;
        double fd = (lp - lm) / (2 * eps);
        double an = which == 0 ? gA[k][i] : gB[k][i];
        double err = std::fabs(fd - an) / (1e-3 + std::fabs(an));
        worst = std::max(worst, err);
        EXPECT_NEAR(an, fd, 2e-4 + 2e-2 * std::fabs(fd)) << "pair " << k << (which ? " B" : " A") << "[" << i << "]";
        checked++;
      }
    }
  }
  EXPECT_EQ(checked, int(lora.pairs().size()) * 6);
  // Directional derivative along a random direction over all parameters at once.
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<std::vector<float>> dirA, dirB;
  double an = 0;
  for (size_t k = 0; k < lora.pairs().size(); k++) {
    auto& p = lora.pairs()[k];
    dirA.emplace_back(p.A.size());
    dirB.emplace_back(p.B.size());
    for (size_t i = 0; i < p.A.size(); i++) an += double(gA[k][i]) * (dirA[k][i] = d(rng));
    for (size_t i = 0; i < p.B.size(); i++) an += double(gB[k][i]) * (dirB[k][i] = d(rng));
  }
  auto shift = [&](float h) {
    for (size_t k = 0; k < lora.pairs().size(); k++) {
      auto& p = lora.pairs()[k];
      for (size_t i = 0; i < p.A.size(); i++) p.A[i] += h * dirA[k][i];
      for (size_t i = 0; i < p.B.size(); i++) p.B[i] += h * dirB[k][i];
    }
  };
  const float h = 2e-3f;
  shift(h);
  double lp = loss();
  shift(-2 * h);
  double lm = loss();
  shift(h);
  double fd = (lp - lm) / (2 * h);
  EXPECT_NEAR(an, fd, 1e-2 * std::fabs(fd) + 1e-4);
}

// The hook's grad_scale weights a micro-batch's gradient; accumulation adds.
TEST(Lora, GradientsAccumulateWithScale) {
  OneThread one_thread;
  test::RandomModelSpec s = test::RandomModelSpec::uniform(1, 2, 2, 16);
  Model m = test::make_random_model(s);
  LoraConfig c;
  c.r = 2;
  c.dropout = 0;
  LoraAdapters lora(m, c);
  randomize_B(lora, 0.2f, 1);
  auto tokens = some_tokens(m, 10, 2);
  GradOptions go;
  go.global_grads = false;
  go.weight_grads = false;
  go.hook = &lora;
  NoSink sink;
  lora.zero_grad();
  compute_gradients(m, tokens.data(), 1, 10, go, sink);
  auto g1 = lora.pairs()[0].dA;
  lora.zero_grad();
  lora.set_grad_scale(0.25f);
  compute_gradients(m, tokens.data(), 1, 10, go, sink);
  lora.set_grad_scale(0.5f);
  compute_gradients(m, tokens.data(), 1, 10, go, sink);
  for (size_t i = 0; i < g1.size(); i++) EXPECT_NEAR(lora.pairs()[0].dA[i], 0.75f * g1[i], 1e-6f + 1e-5f * std::fabs(g1[i]));
}

TEST(Lora, AdamWStepsMatchPyTorch) {
  OneThread one_thread;
  auto g = golden::GoldenFile::load((test::source_dir() / "tests/golden/lora_kjv-llama-mha.lpgd").string());
  Model m = Model::load(test::fixture_model("kjv-llama-mha"));
  LoraConfig c;
  c.r = int(g.get("cfg/r").scalar());
  c.alpha = g.get("cfg/alpha").scalar();
  c.dropout = 0;
  LoraAdapters lora(m, c);
  for (auto& p : lora.pairs()) {
    const auto& a = g.get("init/A/" + std::to_string(p.layer) + "/" + lora_target_name(p.role));
    ASSERT_EQ(a.values.size(), p.A.size());
    for (size_t i = 0; i < p.A.size(); i++) p.A[i] = float(a.values[i]);
  }
  const auto& ids = g.get("data/ids");
  const auto& labels = g.get("data/labels");
  const auto& lens = g.get("data/len");
  const int E = int(ids.shape[0]), Lmax = int(ids.shape[1]);
  std::vector<Example> ex(static_cast<size_t>(E));
  for (int e = 0; e < E; e++)
    for (int t = 0; t < int(lens.values[size_t(e)]); t++) {
      ex[size_t(e)].ids.push_back(int32_t(ids.values[size_t(e) * Lmax + t]));
      ex[size_t(e)].labels.push_back(int32_t(labels.values[size_t(e) * Lmax + t]));
    }
  TrainOptions o;
  o.lr = g.get("cfg/lr").scalar();
  o.weight_decay = g.get("cfg/weight_decay").scalar();
  o.beta1 = g.get("cfg/beta1").scalar();
  o.beta2 = g.get("cfg/beta2").scalar();
  o.adam_eps = g.get("cfg/eps").scalar();
  o.max_grad_norm = g.get("cfg/max_grad_norm").scalar();
  o.schedule = "linear";
  o.quiet = true;
  const int64_t warmup = int64_t(g.get("cfg/warmup").scalar()), total = int64_t(g.get("cfg/total_steps").scalar());
  const int micro = int(g.get("cfg/micro_batch").scalar()), per_step = int(g.get("cfg/step_examples").scalar());
  Trainer tr(m, lora, o);
  const auto& loss = g.get("step/loss");
  const auto& norm = g.get("step/grad_norm");
  const auto& lrs = g.get("step/lr");
  for (int64_t s = 0; s < total; s++) {
    std::vector<std::vector<const Example*>> mbs;
    for (int j = 0; j < per_step; j += micro) {
      std::vector<const Example*> mb;
      for (int k = j; k < j + micro; k++) mb.push_back(&ex[size_t(s * per_step + k)]);
      mbs.push_back(mb);
    }
    double lr = Trainer::lr_at(o, s, total, warmup);
    EXPECT_NEAR(lr, lrs.values[size_t(s)], 1e-12);
    StepResult r = tr.step(mbs, s, lr);
    EXPECT_NEAR(r.loss, loss.values[size_t(s)], 2e-5 * loss.values[size_t(s)]) << "step " << s;
    EXPECT_NEAR(r.grad_norm, norm.values[size_t(s)], 1e-4 * norm.values[size_t(s)]) << "step " << s;
  }
  EXPECT_EQ(tr.adam_steps(), total);
  const double final_loss = tr.evaluate(ex);
  EXPECT_NEAR(final_loss, g.get("final/loss").scalar(), 2e-5 * final_loss);
  EXPECT_LT(final_loss, loss.values[0]);
  for (int l : {0, m.cfg.n_layer - 1})
    for (Role r : {Role::Q, Role::K, Role::V, Role::O, Role::Gate, Role::Up, Role::Down}) {
      const LoraPair* p = lora.find(l, r);
      ASSERT_NE(p, nullptr);
      const std::string key = std::to_string(l) + "/" + lora_target_name(r);
      EXPECT_TRUE(golden::allclose(p->A, g.get("final/A/" + key), 2e-5, 1e-3));
      EXPECT_TRUE(golden::allclose(p->B, g.get("final/B/" + key), 2e-5, 1e-3));
    }
}

TEST(Lora, ScheduleFollowsTransformers) {
  OneThread one_thread;
  TrainOptions o;
  o.lr = 1.0;
  o.schedule = "linear";
  EXPECT_DOUBLE_EQ(Trainer::lr_at(o, 0, 100, 10), 0.0);
  EXPECT_DOUBLE_EQ(Trainer::lr_at(o, 5, 100, 10), 0.5);
  EXPECT_DOUBLE_EQ(Trainer::lr_at(o, 10, 100, 10), 1.0);
  EXPECT_DOUBLE_EQ(Trainer::lr_at(o, 55, 100, 10), 0.5);
  EXPECT_DOUBLE_EQ(Trainer::lr_at(o, 0, 100, 0), 1.0);
  o.schedule = "cosine";
  EXPECT_DOUBLE_EQ(Trainer::lr_at(o, 10, 100, 10), 1.0);
  EXPECT_NEAR(Trainer::lr_at(o, 55, 100, 10), 0.5, 1e-12);
  EXPECT_NEAR(Trainer::lr_at(o, 100, 100, 10), 0.0, 1e-12);
  o.schedule = "constant";
  EXPECT_DOUBLE_EQ(Trainer::lr_at(o, 99, 100, 10), 1.0);
}

TEST(Lora, StepLossDoesNotDependOnMicroBatchSplit) {
  OneThread one_thread;
  Model m = Model::load(test::fixture_model("kjv-llama-gqa-tied"));
  auto tok = load_tokenizer(test::fixture_model("kjv-llama-gqa-tied"));
  DataOptions d;
  d.cutoff_len = 20;
  auto ex = load_examples(test::fixture_text("kjv.valid.txt").string(), *tok, d);
  ex.resize(4);
  ex[1].ids.resize(11);  // unequal lengths: padding inside micro-batches
  ex[1].labels.resize(11);
  std::vector<std::vector<float>> results;
  for (int micro : {1, 2, 4}) {
    LoraConfig c;
    c.dropout = 0;
    LoraAdapters lora(m, c);
    randomize_B(lora, 0.02f, 5);
    TrainOptions o;
    o.quiet = true;
    Trainer tr(m, lora, o);
    std::vector<std::vector<const Example*>> mbs;
    for (int i = 0; i < 4; i += micro) {
      std::vector<const Example*> mb;
      for (int k = i; k < i + micro; k++) mb.push_back(&ex[size_t(k)]);
      mbs.push_back(mb);
    }
    StepResult r = tr.step(mbs, 0, 1e-3);
    results.push_back({float(r.loss), float(r.grad_norm), lora.pairs()[3].A[7], lora.pairs()[40].B[5]});
  }
  for (size_t i = 1; i < results.size(); i++)
    for (size_t k = 0; k < 4; k++) EXPECT_NEAR(results[i][k], results[0][k], 1e-5 * std::fabs(results[0][k]) + 1e-8) << i << " " << k;
}

// ---------------------------------------------------------------------------------------- data

TEST(LoraData, AlpacaTemplatesAreAlpacaLoras) {
  OneThread one_thread;
  EXPECT_EQ(alpaca_prompt("Name a color.", ""),
            "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
            "### Instruction:\nName a color.\n\n### Response:\n");
  EXPECT_EQ(alpaca_prompt("Add.", "2 and 3"),
            "Below is an instruction that describes a task, paired with an input that provides further context. Write a "
            "response that appropriately completes the request.\n\n### Instruction:\nAdd.\n\n### Input:\n2 and 3\n\n### Response:\n");
  // Braces in the fields are not placeholders.
  EXPECT_NE(alpaca_prompt("{input}", "x").find("### Instruction:\n{input}\n"), std::string::npos);
}

TEST(LoraData, ResponseOnlyLabelsAndEos) {
  OneThread one_thread;
  auto tok = load_tokenizer(test::fixture_model("kjv-llama-mha"));
  auto dir = test::temp_dir("alpaca");
  write_file(dir / "d.json", R"([{"instruction": "Say it.", "input": "", "output": "And God said"},
                                 {"instruction": "Go on.", "input": "Let there be", "output": "light"}])");
  DataOptions o;
  DataReport rep;
  auto ex = load_examples((dir / "d.json").string(), *tok, o, &rep);
  ASSERT_EQ(ex.size(), 2u);
  EXPECT_EQ(rep.format, "alpaca");
  for (int i = 0; i < 2; i++) {
    const std::string prompt = i == 0 ? alpaca_prompt("Say it.", "") : alpaca_prompt("Go on.", "Let there be");
    const std::string full = prompt + (i == 0 ? "And God said" : "light");
    std::vector<int32_t> want{tok->bos_id()};
    for (int32_t id : tok->encode(full)) want.push_back(id);
    want.push_back(tok->eos_id());
    EXPECT_EQ(ex[size_t(i)].ids, want);
    const size_t user_len = 1 + tok->encode(prompt).size();
    for (size_t t = 0; t < want.size(); t++) EXPECT_EQ(ex[size_t(i)].labels[t], t < user_len ? -1 : want[t]) << t;
  }
  o.train_on_inputs = true;
  auto all = load_examples((dir / "d.json").string(), *tok, o);
  EXPECT_EQ(all[0].labels, all[0].ids);
  // Cut at cutoff_len: no EOS appended; a record whose response starts beyond it is skipped.
  o.train_on_inputs = false;
  const size_t prompt0 = 1 + tok->encode(alpaca_prompt("Say it.", "")).size();
  o.cutoff_len = int(prompt0) + 2;
  auto cut = load_examples((dir / "d.json").string(), *tok, o, &rep);
  EXPECT_EQ(rep.skipped_no_target, 1);  // the second prompt (with input) is longer than the cutoff
  EXPECT_EQ(rep.truncated, 2);
  ASSERT_EQ(cut.size(), 1u);
  EXPECT_EQ(cut[0].ids.size(), prompt0 + 2);
  EXPECT_NE(cut[0].ids.back(), tok->eos_id());
  EXPECT_EQ(cut[0].scored(), 2);
  // Nothing usable at all: refused, naming the file.
  o.cutoff_len = 8;
  EXPECT_THROW(load_examples((dir / "d.json").string(), *tok, o), UserError);
}

TEST(LoraData, BadRecordsAreNamedAndSkippedOrRefused) {
  OneThread one_thread;
  auto tok = load_tokenizer(test::fixture_model("kjv-llama-mha"));
  auto dir = test::temp_dir("bad");
  const auto f = (dir / "d.jsonl").string();
  write_file(f, "{\"instruction\": \"a\", \"output\": \"b\"}\n"
                "{\"instruction\": \"a\", \"output\": \n"
                "\n"
                "{\"instruction\": \"a\"}\n"
                "{\"instruction\": 3, \"output\": \"b\"}\n"
                "[1, 2]\n"
                "{\"instruction\": \"  \", \"output\": \"b\"}\n"
                "{\"instruction\": \"x\", \"input\": null, \"output\": \"y\", \"extra\": 1}\n");
  DataOptions o;
  DataReport rep;
  auto ex = load_examples(f, *tok, o, &rep);
  EXPECT_EQ(ex.size(), 2u);
  EXPECT_EQ(rep.records, 7);
  EXPECT_EQ(rep.skipped_bad, 5);
  ASSERT_EQ(rep.problems.size(), 5u);
  EXPECT_EQ(rep.problems[0].rfind(f + ": record 1 (line 2): invalid JSON", 0), 0u) << rep.problems[0];
  EXPECT_EQ(rep.problems[1], f + ": record 2 (line 4): 'output' is missing");
  EXPECT_EQ(rep.problems[2], f + ": record 3 (line 5): 'instruction' is not a string (number)");
  EXPECT_EQ(rep.problems[3], f + ": record 4 (line 6): not a JSON object (array)");
  EXPECT_EQ(rep.problems[4], f + ": record 5 (line 7): 'instruction' is empty");
  o.strict = true;
  try {
    load_examples(f, *tok, o);
    FAIL() << "strict mode accepted a bad record";
  } catch (const UserError& e) {
    EXPECT_EQ(std::string(e.what()).rfind(f + ": record 1 (line 2): invalid JSON", 0), 0u) << e.what();
  }
  // A JSON array: record = array index.
  const auto g = (dir / "d.json").string();
  write_file(g, R"([{"instruction": "a", "output": "b"}, {"instruction": "a", "output": ["b"]}])");
  try {
    load_examples(g, *tok, o);
    FAIL();
  } catch (const UserError& e) {
    EXPECT_EQ(std::string(e.what()), g + ": record 1: 'output' is not a string (array)");
  }
  write_file(g, R"([{"instruction": "a", "output": "b"},)");
  EXPECT_THROW(load_examples(g, *tok, o), UserError);
  // The CLI: --strict exits 2 with one line naming file and record.
  auto r = test::run_cli("tune " + test::fixture_model("kjv-llama-mha").string() + " --data " + f + " --out " +
                         (dir / "o").string() + " --strict --max-steps 1 --quiet");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("record 1 (line 2)"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir / "o"));
}

TEST(LoraData, TextIsChunkedAtCutoff) {
  OneThread one_thread;
  auto tok = load_tokenizer(test::fixture_model("kjv-llama-mha"));
  DataOptions o;
  o.cutoff_len = 64;
  DataReport rep;
  auto ex = load_examples(test::fixture_text("kjv.valid.txt").string(), *tok, o, &rep);
  EXPECT_EQ(rep.format, "text");
  auto all = tok->encode(slurp(test::fixture_text("kjv.valid.txt")));
  ASSERT_GT(ex.size(), 10u);
  EXPECT_EQ(ex[0].ids[0], tok->bos_id());
  EXPECT_EQ(ex[0].ids.size(), 64u);
  EXPECT_EQ(ex[1].ids[0], all[63]);  // consecutive, no overlap, BOS only once
  EXPECT_EQ(ex[1].labels, ex[1].ids);
  size_t total = 0;
  for (auto& e : ex) total += e.ids.size();
  EXPECT_EQ(total, all.size() + 1 - ((all.size() + 1) % 64 == 1 ? 1 : 0));
}

// ---------------------------------------------------------------------------- adapter layout

TEST(Lora, PeftAdapterLayoutRoundTrips) {
  OneThread one_thread;
  Model m = Model::load(test::fixture_model("kjv-llama-gqa-tied"));
  LoraConfig c;
  c.targets = parse_lora_targets("q_proj, v,down");
  EXPECT_THROW(parse_lora_targets("q,x"), UserError);
  LoraAdapters lora(m, c);
  randomize_B(lora, 0.1f, 3);
  auto dir = test::temp_dir("peft");
  save_peft_adapter(lora, dir, "base");
  auto f = SafetensorsFile::open(dir / "adapter_model.safetensors");
  EXPECT_EQ(f.tensors.size(), size_t(2 * 3 * m.cfg.n_layer));
  const Tensor& a = f.tensors.at("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  EXPECT_EQ(a.shape, (std::vector<int64_t>{8, 256}));
  EXPECT_EQ(a.dtype, DType::F32);
  EXPECT_EQ(f.tensors.at("base_model.model.model.layers.5.self_attn.v_proj.lora_B.weight").shape, (std::vector<int64_t>{64, 8}));
  EXPECT_EQ(f.tensors.at("base_model.model.model.layers.2.mlp.down_proj.lora_A.weight").shape, (std::vector<int64_t>{8, 704}));
  auto j = nlohmann::json::parse(slurp(dir / "adapter_config.json"));
  EXPECT_EQ(j["peft_type"], "LORA");
  EXPECT_EQ(j["r"], 8);
  EXPECT_EQ(j["lora_alpha"], 16);
  EXPECT_EQ(j["target_modules"], nlohmann::json({"q_proj", "v_proj", "down_proj"}));
  EXPECT_EQ(j["task_type"], "CAUSAL_LM");
  LoraConfig c2 = c;
  c2.seed = 99;
  LoraAdapters back(m, c2);
  load_lora_weights(back, dir / "adapter_model.safetensors");
  for (size_t i = 0; i < lora.pairs().size(); i++) {
    EXPECT_EQ(back.pairs()[i].A, lora.pairs()[i].A);
    EXPECT_EQ(back.pairs()[i].B, lora.pairs()[i].B);
  }
}

// Adapters on a pruned (ragged) model follow each layer's own widths.
TEST(Lora, RaggedLayersGetTheirOwnShapes) {
  OneThread one_thread;
  test::RandomModelSpec s = test::RandomModelSpec::uniform(3, 4, 2, 32);
  s.layers[1] = LayerConfig{2, 1, 0, 12};
  s.layers[2].d_ff = 0;
  Model m = test::make_random_model(s);
  LoraAdapters lora(m, LoraConfig{});
  EXPECT_EQ(lora.find(1, Role::Q)->out, 2 * 8);
  EXPECT_EQ(lora.find(1, Role::K)->out, 8);
  EXPECT_EQ(lora.find(1, Role::O)->in, 16);
  EXPECT_EQ(lora.find(1, Role::Down)->in, 12);
  EXPECT_EQ(lora.find(2, Role::Gate), nullptr);
  randomize_B(lora, 0.1f, 1);
  lora.set_training(false);
  auto tokens = some_tokens(m, 12, 3);
  auto unmerged = logits_of(m, &lora, tokens, 1, 12);
  auto merged = logits_of(merge_lora(m, lora), nullptr, tokens, 1, 12);
  for (size_t i = 0; i < merged.size(); i++) ASSERT_NEAR(merged[i], unmerged[i], 1e-4);
}

// ------------------------------------------------------------------------------------- the CLI

std::string tune_args(const fs::path& data, const fs::path& out, const fs::path& ckpt, const std::string& lr = "1e-3") {
  return "tune " + test::fixture_model("kjv-llama-mha").string() + " --data " + data.string() + " --out " + out.string() +
         " --checkpoint-dir " + ckpt.string() +
         " --max-steps 12 --batch 4 --micro-batch 2 --cutoff-len 48 --save-every 2 --warmup-steps 3 --lr " + lr +
         " --lora-r 4 --val-split 8 --eval-every 5 --seed 7 --log-every 1";
}

std::vector<float> adapter_values(const fs::path& file) {
  auto f = SafetensorsFile::open(file);
  std::vector<float> out;
  for (auto& [name, t] : f.tensors) {
    std::vector<float> v(size_t(t.numel()));
    to_f32(t.dtype, t.data, v.data(), v.size());
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

TEST(LoraCli, KillAndResumeEqualsAnUninterruptedRun) {
  OneThread one_thread;
  auto dir = test::temp_dir("resume");
  // A small text corpus: the first 24 KB of the training text.
  std::string text = slurp(test::fixture_text("kjv.train.txt")).substr(0, 24000);
  write_file(dir / "train.txt", text.substr(0, text.rfind('\n') + 1));

  // Uninterrupted.
  auto a = test::run_cli(tune_args(dir / "train.txt", dir / "full", dir / "full.ckpt") + " --save-adapter " + (dir / "full.adapter").string());
  ASSERT_EQ(a.exit_code, 0) << a.err;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model", "tune.json", "training_log.csv"})
    EXPECT_TRUE(fs::exists(dir / "full" / f)) << f;
  EXPECT_NE(a.err.find("step 12/12"), std::string::npos) << a.err;
  EXPECT_NE(a.err.find("tok/s"), std::string::npos);
  EXPECT_NE(a.err.find("eta"), std::string::npos);
  auto tj = nlohmann::json::parse(slurp(dir / "full" / "tune.json"));
  EXPECT_EQ(tj["steps"], 12);
  EXPECT_LT(tj["final_val_loss"].get<double>(), tj["initial_val_loss"].get<double>());
  const std::string csv = slurp(dir / "full" / "training_log.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 1 + 1 + 12);  // header, step 0 validation, 12 steps

  // Interrupted: SIGKILL once checkpoint 4 exists, then --resume.
  const std::string cmd = "exec '" + std::string(LLMPRUNE_BIN) + "' " + tune_args(dir / "train.txt", dir / "part", dir / "part.ckpt") +
                          " --save-adapter " + (dir / "part.adapter").string() + " > " + (dir / "part.out").string() + " 2> " +
                          (dir / "part.err").string();
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", cmd.c_str(), (char*)nullptr);
    _exit(127);
  }
  bool killed = false;
  for (int i = 0; i < 60000 && !killed; i++) {
    if (fs::exists(dir / "part.ckpt" / "checkpoint-00000004" / "trainer_state.json")) {
      kill(pid, SIGKILL);
      killed = true;
      break;
    }
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) break;
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  int status = 0;
  if (killed) waitpid(pid, &status, 0);
  ASSERT_TRUE(killed) << "the run ended before it could be killed: " << slurp(dir / "part.err");
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_FALSE(fs::exists(dir / "part"));  // no half-written output
  auto latest = Trainer::latest_checkpoint(dir / "part.ckpt");
  ASSERT_FALSE(latest.empty());
  // A fresh run into a checkpoint directory of another run is refused (its checkpoints would be
  // mixed up with the new ones).
  auto fresh = test::run_cli(tune_args(dir / "train.txt", dir / "other", dir / "part.ckpt"));
  EXPECT_EQ(fresh.exit_code, 2);
  EXPECT_NE(fresh.err.find("holds checkpoints of an earlier run"), std::string::npos) << fresh.err;
  // A resume with a different setting is refused, naming it.
  auto bad = test::run_cli(tune_args(dir / "train.txt", dir / "part", dir / "part.ckpt", "2e-3") + " --resume");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("checkpoint was made with lr = 0.001"), std::string::npos) << bad.err;
  auto b = test::run_cli(tune_args(dir / "train.txt", dir / "part", dir / "part.ckpt") + " --save-adapter " +
                         (dir / "part.adapter").string() + " --resume");
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_NE(b.err.find("resuming from"), std::string::npos) << b.err;
  auto full = adapter_values(dir / "full.adapter" / "adapter_model.safetensors");
  auto part = adapter_values(dir / "part.adapter" / "adapter_model.safetensors");
  ASSERT_EQ(full.size(), part.size());
  double max_diff = 0;
  for (size_t i = 0; i < full.size(); i++) max_diff = std::max(max_diff, double(std::fabs(full[i] - part[i])));
  EXPECT_LE(max_diff, 1e-6);
  auto tb = nlohmann::json::parse(slurp(dir / "part" / "tune.json"));
  EXPECT_GE(tb["resumed_from_step"].get<int>(), 4);
  EXPECT_NEAR(tb["final_val_loss"].get<double>(), tj["final_val_loss"].get<double>(), 1e-6);
  EXPECT_EQ(tb["log"].size(), tj["log"].size());

  // The merged output equals base + the saved adapter.
  Model base = Model::load(test::fixture_model("kjv-llama-mha"));
  LoraConfig c;
  c.r = 4;
  LoraAdapters lora(base, c);
  load_lora_weights(lora, dir / "full.adapter" / "adapter_model.safetensors");
  lora.set_training(false);
  Model merged = Model::load(dir / "full");
  auto tokens = some_tokens(base, 32, 1);
  auto x = logits_of(base, &lora, tokens, 1, 32), y = logits_of(merged, nullptr, tokens, 1, 32);
  for (size_t i = 0; i < x.size(); i++) ASSERT_NEAR(x[i], y[i], 2e-4);
}

TEST(LoraCli, UsageErrorsExit2) {
  OneThread one_thread;
  const std::string m = test::fixture_model("kjv-llama-mha").string();
  const std::string d = test::fixture_text("kjv.valid.txt").string();
  auto dir = test::temp_dir("usage");
  struct Case {
    std::string args, needle;
  } cases[] = {
      {"--batch 6 --micro-batch 4", "not a multiple"},
      {"--lora-targets q,zz", "unknown projection 'zz'"},
      {"--lora-dropout 1", "--lora-dropout"},
      {"--schedule step", "--schedule"},
      {"--cutoff-len 4096", "exceeds the model's context"},
      {"--resume", "no checkpoint"},
      {"--val-split 0.5 --val-file " + d, "exclusive"},
  };
  for (auto& c : cases) {
    auto r = test::run_cli("tune " + m + " --data " + d + " --out " + (dir / "o").string() + " --max-steps 1 " + c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << c.args << "\n" << r.err;
  }
  auto nan = test::run_cli("tune " + m + " --data " + d + " --out " + (dir / "n").string() +
                           " --max-steps 6 --batch 2 --micro-batch 2 --cutoff-len 32 --lr 1e30 --max-grad-norm 0 --warmup-steps 0 --quiet");
  EXPECT_EQ(nan.exit_code, 1) << nan.err;
  EXPECT_NE(nan.err.find("llmprune: error: step "), std::string::npos) << nan.err;
  EXPECT_NE(nan.err.find("not finite"), std::string::npos) << nan.err;
  EXPECT_NE(nan.err.find("no checkpoint was written"), std::string::npos) << nan.err;
  EXPECT_FALSE(fs::exists(dir / "n"));
}

}  // namespace
}  // namespace llmprune
