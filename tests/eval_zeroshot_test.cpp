// Zero-shot scoring on the fixture model: the PyTorch goldens of tools/eval_reference.py (per-item
// predictions; the kjv_cloze one also reproduces the fixtures README's acc/acc_norm), the shared-prefix KV-cache path
// against plain full forwards, lm-eval's tokenisation rules, and the `eval` CLI.
#include <gtest/gtest.h>

#include <omp.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "eval/tasks.h"
#include "eval/zeroshot.h"
#include "test_util.h"

namespace llmprune {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

fs::path fixture_tasks() { return test::shared_dir() / "fixtures/tasks"; }

// One OpenMP thread for this scope, in-process and for CLI children (OMP_NUM_THREADS). Scoring
// runs thousands of few-token forwards, each a string of OpenMP barriers; on an oversubscribed
// machine (several builds on two cores) spinning threads make them 20-40x slower than one
// thread (kjv_cloze x300: 270 s vs 7 s). These tests check numbers and plumbing, not threading.
class SingleThread {
 public:
  SingleThread() : prev_(omp_get_max_threads()) {
    if (const char* e = std::getenv("OMP_NUM_THREADS")) env_ = e, had_env_ = true;
    omp_set_num_threads(1);
    ::setenv("OMP_NUM_THREADS", "1", 1);
  }
  ~SingleThread() {
    omp_set_num_threads(prev_);
    if (had_env_) ::setenv("OMP_NUM_THREADS", env_.c_str(), 1);
    else ::unsetenv("OMP_NUM_THREADS");
  }

 private:
  int prev_;
  std::string env_;
  bool had_env_ = false;
};

struct Fixture {
  Model m;
  std::unique_ptr<Tokenizer> tok;
  std::unique_ptr<Runner> r;
  explicit Fixture(const std::string& name = "kjv-llama-mha") : m(Model::load(test::fixture_model(name))) {
    tok = load_tokenizer(test::fixture_model(name));
    r = std::make_unique<Runner>(m);
  }
};

Fixture& mha() {
  static Fixture f;
  return f;
}

// Log-likelihood of one request by a plain full forward (no cache, no sharing).
double plain_loglik(Runner& r, const Request& q) {
  std::vector<int32_t> seq = q.ctx;
  seq.insert(seq.end(), q.cont.begin(), q.cont.end());
  const int T = int(seq.size()) - 1, V = r.model().cfg.vocab, n = int(q.cont.size());
  std::vector<float> logits(size_t(T) * size_t(V));
  r.forward(seq.data(), 1, T, logits.data());
  double s = 0;
  for (int j = 0; j < n; j++) {
    const float* x = logits.data() + size_t(T - n + j) * size_t(V);
    double mx = *std::max_element(x, x + V), z = 0;
    for (int v = 0; v < V; v++) z += std::exp(double(x[v]) - mx);
    s += double(x[q.cont[size_t(j)]]) - mx - std::log(z);
  }
  return s;
}

class EvalGolden : public ::testing::TestWithParam<std::string> {};

// "piqa": the default options against the no-BOS golden (lm-eval 0.4's add_bos_token=False);
// "piqa_bos": --bos on against the golden written with BOS (add_bos_token=True).
TEST_P(EvalGolden, MatchesPyTorchReference) {
  const std::string name = GetParam();
  const bool bos_on = name.size() > 4 && name.compare(name.size() - 4, 4, "_bos") == 0;
  const std::string task = bos_on ? name.substr(0, name.size() - 4) : name;
  SingleThread one;
  std::ifstream in(test::source_dir() / "tests/golden" / ("eval_" + name + ".json"));
  ASSERT_TRUE(in) << "missing golden; run /usr/bin/python3 tools/eval_reference.py";
  json g = json::parse(in);
  ASSERT_EQ(g["bos"].get<bool>(), bos_on) << "golden written with the other BOS setting";
  auto& f = mha();
  TaskData d = load_task(task, fixture_tasks());
  ZeroShotOptions o;
  o.limit = g["limit"].get<int64_t>();
  if (bos_on) o.bos = 1;  // else the default
  TaskResult res = evaluate_task(*f.r, *f.tok, d, o);
  EXPECT_EQ(res.bos, bos_on);
  ASSERT_EQ(res.n, g["n"].get<int64_t>());
  double max_diff = 0;
  for (size_t i = 0; i < res.items.size(); i++) {
    const json& gi = g["items"][i];
    EXPECT_EQ(res.items[i].gold, gi["gold"].get<int>()) << "item " << i;
    EXPECT_EQ(res.items[i].pred, gi["pred"].get<int>()) << "item " << i;
    EXPECT_EQ(res.items[i].pred_norm, gi["pred_norm"].get<int>()) << "item " << i;
    auto ll = gi["loglik"].get<std::vector<double>>();
    ASSERT_EQ(ll.size(), res.items[i].loglik.size());
    for (size_t k = 0; k < ll.size(); k++) max_diff = std::max(max_diff, std::fabs(ll[k] - res.items[i].loglik[k]));
  }
  EXPECT_EQ(res.acc, g["acc"].get<double>());
  EXPECT_EQ(res.acc_norm, g["acc_norm"].get<double>());
  // float32 PyTorch vs float32 engine with double accumulation of the log-softmax.
  EXPECT_LT(max_diff, 2e-3);
  if (task == "kjv_cloze") {
    // The fixtures README: acc 0.673, acc_norm 0.660 on the first 300 items (PyTorch reference),
    // i.e. 202 and 198 correct; the golden holds exactly those 300 items.
    ASSERT_EQ(res.n, 300);
    EXPECT_FALSE(res.bos);
    EXPECT_EQ(int(std::lround(res.acc * 300)), 202);
    EXPECT_EQ(int(std::lround(res.acc_norm * 300)), 198);
  }
  std::printf("[%s] n=%lld acc=%.4f acc_norm=%.4f max |dloglik|=%.2e, %lld forwards, %.2f s\n", name.c_str(),
              (long long)res.n, res.acc, res.acc_norm, max_diff, (long long)res.forwards, res.seconds);
}

INSTANTIATE_TEST_SUITE_P(Eval, EvalGolden,
                         ::testing::Values("kjv_cloze", "piqa", "winogrande", "arc_easy", "boolq", "openbookqa",
                                           "piqa_bos", "winogrande_bos"));

TEST(EvalZeroShot, SharedPrefixEqualsPlainForward) {
  SingleThread one;
  auto& f = mha();
  const int V = f.m.cfg.vocab;
  LoglikScorer s(*f.r, f.m.cfg.max_pos);
  auto check = [&](const std::vector<Request>& reqs) {
    auto got = s.score(reqs);
    for (size_t k = 0; k < reqs.size(); k++) EXPECT_NEAR(got[k], plain_loglik(*f.r, reqs[k]), 2e-4) << "request " << k;
  };
  auto enc = [&](const std::string& c, const std::string& t, bool bos) {
    return encode_request(*f.tok, c, t, bos, HarnessStyle::V04);
  };
  // Same context, continuations of different lengths (1..many tokens).
  check({enc("In the beginning God created", " the heaven and the earth.", true), enc("In the beginning God created", " man", true),
         enc("In the beginning God created", " all things that are in the sea and the dry land", true)});
  // Different contexts (WinoGrande-like), shared first tokens.
  check({enc("And Moses said unto Aaron", " go thou.", true), enc("And Moses said unto the people", " go thou.", true)});
  // No common prefix at all (no BOS, first words differ): everything in the suffix batch.
  check({enc("Moses spake", " unto them", false), enc("Aaron spake", " unto them", false)});
  // One request alone; then a larger item after a smaller one (the cache grows).
  check({enc("Blessed are the meek", " for they shall inherit the earth", true)});
  std::string longctx;
  for (int i = 0; i < 40; i++) longctx += "and the LORD spake unto Moses, saying, ";
  check({enc(longctx, " Speak unto the children of Israel", true), enc(longctx, " Go", true)});
  // Left truncation to the window (lm-eval keeps the last max_len+1 tokens).
  LoglikScorer small(*f.r, 16);
  Request q = enc(longctx, " Speak unto the children of Israel", true);
  std::vector<int32_t> all = q.ctx;
  all.insert(all.end(), q.cont.begin(), q.cont.end());
  Request cut;
  cut.ctx.assign(all.end() - 17, all.end() - long(q.cont.size()));
  cut.cont = q.cont;
  EXPECT_NEAR(small.score({q})[0], plain_loglik(*f.r, cut), 2e-4);
  (void)V;
}

TEST(EvalZeroShot, EncodingRules) {
  auto& f = mha();
  const Tokenizer& t = *f.tok;
  // v0.4: BOS + context; continuation = joint encoding split at the context's length.
  Request a = encode_request(t, "Question: x\nAnswer:", " yes", true, HarnessStyle::V04);
  ASSERT_FALSE(a.ctx.empty());
  EXPECT_EQ(a.ctx[0], t.bos_id());
  auto ctx = t.encode("Question: x\nAnswer:");
  EXPECT_EQ(std::vector<int32_t>(a.ctx.begin() + 1, a.ctx.end()), ctx);
  auto whole = t.encode("Question: x\nAnswer: yes");
  EXPECT_EQ(a.cont, std::vector<int32_t>(whole.begin() + long(ctx.size()), whole.end()));
  // Trailing spaces of the context move into the continuation.
  Request b = encode_request(t, "Question: x\nAnswer: ", "yes", true, HarnessStyle::V04);
  EXPECT_EQ(b.ctx, a.ctx);
  EXPECT_EQ(b.cont, a.cont);
  // BOS off.
  Request c = encode_request(t, "Question: x\nAnswer:", " yes", false, HarnessStyle::V04);
  EXPECT_EQ(c.ctx, ctx);
  // v0.3: separate encodings, so SentencePiece's dummy prefix applies to the continuation too.
  Request d = encode_request(t, "Question: x\nAnswer:", " yes", false, HarnessStyle::V03);
  EXPECT_EQ(d.ctx, ctx);
  EXPECT_EQ(d.cont, t.encode(" yes"));
  // Empty context: the prefix token alone (BOS).
  Request e = encode_request(t, "", " yes", false, HarnessStyle::V04);
  EXPECT_EQ(e.ctx, std::vector<int32_t>{t.bos_id()});
  EXPECT_EQ(e.cont, t.encode(" yes"));
}

// ------------------------------------------------------------------ CLI

std::string model_path(const std::string& name = "kjv-llama-mha") { return test::fixture_model(name).string(); }

TEST(EvalCli, TasksJsonWithMetadata) {
  SingleThread one;
  auto r = test::run_cli("eval " + model_path() + " --tasks kjv_cloze,piqa --task-dir " + fixture_tasks().string() +
                         " --limit 10 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_EQ(j["tasks"]["kjv_cloze"]["n"], 10);
  EXPECT_EQ(j["tasks"]["kjv_cloze"]["bos"], false);
  EXPECT_EQ(j["tasks"]["piqa"]["bos"], false);  // lm-eval 0.4's add_bos_token=False
  EXPECT_EQ(j["tasks"]["piqa"]["n_total"], 1838);
  EXPECT_TRUE(j["tasks"]["piqa"]["acc_norm"].is_number());
  EXPECT_EQ(j["tasks"]["piqa"]["files"].size(), 2u);
  EXPECT_EQ(j["tasks"]["piqa"]["files"][0]["xxh64"].get<std::string>().size(), 16u);
  EXPECT_EQ(j["weights"]["files"].size(), 1u);
  EXPECT_EQ(j["weights"]["xxh64"].get<std::string>().size(), 16u);
  EXPECT_EQ(j["meta"]["llmprune_version"], LLMPRUNE_VERSION);
  EXPECT_EQ(j["meta"]["limit"], 10);
  EXPECT_EQ(j["meta"]["max_length"], 2048);
  double avg = (j["tasks"]["kjv_cloze"]["score"].get<double>() + j["tasks"]["piqa"]["score"].get<double>()) / 2;
  EXPECT_DOUBLE_EQ(j["zero_shot_average"].get<double>(), avg);
}

// --bos on is lm-eval's add_bos_token=True; lm-eval 0.3 (--harness 0.3) never adds BOS, so it
// scores without one by default and refuses --bos on.
TEST(EvalCli, BosOnAndHarness03) {
  SingleThread one;
  const std::string base = "eval " + model_path() + " --tasks piqa --task-dir " + fixture_tasks().string() + " --limit 3";
  auto on = test::run_cli(base + " --bos on --json");
  ASSERT_EQ(on.exit_code, 0) << on.err;
  EXPECT_EQ(json::parse(on.out)["tasks"]["piqa"]["bos"], true);
  auto text = test::run_cli(base + " --bos on");
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("lm-evaluation-harness 0.4 tokenisation, BOS before each context (add_bos_token=True)"),
            std::string::npos) << text.out;
  auto v03 = test::run_cli(base + " --harness 0.3");
  ASSERT_EQ(v03.exit_code, 0) << v03.err;
  EXPECT_NE(v03.out.find("lm-evaluation-harness 0.3 (LLM-Pruner's) tokenisation, no BOS"), std::string::npos) << v03.out;
  auto bad = test::run_cli(base + " --harness 0.3 --bos on");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--bos on: lm-evaluation-harness 0.3 never adds BOS"), std::string::npos) << bad.err;
}

TEST(EvalCli, CompareMarkdownTable) {
  SingleThread one;
  auto r = test::run_cli("eval mha=" + model_path() + " --compare gqa=" + model_path("kjv-llama-gqa-tied") +
                         " --ppl test=" + test::fixture_text("kjv.test.txt").string() +
                         " --max-windows 4 --tasks kjv_cloze --task-dir " + fixture_tasks().string() +
                         " --limit 10 --markdown");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("| model | params | test \xE2\x86\x93 | KJV-cloze | Average |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("|---|---:|---:|---:|---:|"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| mha | 6.84M |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| gqa | 5.28M |"), std::string::npos) << r.out;
}

TEST(EvalCli, PplOnlyOutputUnchanged) {
  SingleThread one;
  auto r = test::run_cli("eval " + model_path() + " --ppl " + test::fixture_text("kjv.test.txt").string() +
                         " --max-windows 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("model " + model_path() + " (", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("dataset                    perplexity    windows       tokens   seconds"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("convention: BOS once + whole text, windows of 128 tokens"), std::string::npos) << r.out;
}

TEST(EvalCli, MissingTaskFilesAreUserErrors) {
  auto dir = test::temp_dir("cli");
  auto r = test::run_cli("eval " + model_path() + " --tasks piqa --task-dir " + dir.string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("task folder " + (dir / "piqa").string() + " not found"), std::string::npos) << r.err;
  r = test::run_cli("eval " + model_path() + " --tasks piqa");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--task-dir"), std::string::npos) << r.err;
  r = test::run_cli("eval " + model_path() + " --tasks nope --task-dir " + dir.string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown task \"nope\""), std::string::npos) << r.err;
}

}  // namespace
}  // namespace llmprune
