#pragma once
// Zero-shot multiple-choice scoring the way lm-evaluation-harness does it: the log-likelihood of
// each choice's continuation given its context; acc = argmax of the log-likelihoods, acc_norm =
// argmax of loglik / (characters of the choice). Choices sharing a context prefix run that prefix
// through the model once (KV cache), then all continuations as one batch.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "eval/tasks.h"
#include "model/forward.h"
#include "tokenizer/tokenizer.h"

namespace llmprune {

// How requests are tokenised (docs/eval.md, Scoring).
//   V04 (default): lm-evaluation-harness 0.4's HF causal model. Trailing whitespace of the context
//     moves to the continuation; context_enc = encode(context); continuation_enc =
//     encode(context + continuation)[len(context_enc):]. No BOS (lm-eval 0.4.0-0.4.9.1's default,
//     add_bos_token=False); with `bos`, [BOS] before both encodings (add_bos_token=True, and the
//     default of lm-eval >= 0.4.9.2 for a tokenizer whose add_bos_token is true, as LLaMA's).
//   V03: lm-evaluation-harness 0.3 (the fork LLM-Pruner's paper numbers come from): context and
//     continuation encoded separately, no BOS (add_special_tokens=False; the CLI refuses --bos on).
// An empty context becomes the single prefix token: V04 BOS (else EOS), V03 EOS.
enum class HarnessStyle { V04, V03 };

struct Request {
  std::vector<int32_t> ctx, cont;  // token ids; cont is what gets scored
};

Request encode_request(const Tokenizer& tok, const std::string& context, const std::string& continuation, bool bos,
                       HarnessStyle style);

// Sums of log-probabilities of each request's continuation, with lm-eval's left truncation:
// input = (ctx + cont)[-(max_len+1):][:-1]. Requests of one item share their common token prefix.
class LoglikScorer {
 public:
  LoglikScorer(Runner& r, int max_len);
  ~LoglikScorer();
  std::vector<double> score(const std::vector<Request>& reqs);
  int64_t forwards() const { return forwards_; }  // forward passes run so far

 private:
  Runner& r_;
  int max_len_;
  std::unique_ptr<KVCache> cache_;
  std::vector<float> prefix_logits_, suffix_logits_;
  std::vector<int32_t> tokens_;
  int64_t forwards_ = 0;
};

struct ZeroShotOptions {
  int64_t limit = 0;  // first N items (0 = all), as lm-eval's --limit
  int bos = -1;       // -1: lm-eval's default (off), 0: off, 1: on
  HarnessStyle style = HarnessStyle::V04;
  int max_len = 0;    // context window; 0 = the model's max_position_embeddings
};

struct ItemResult {
  int gold = 0, pred = 0, pred_norm = 0;
  std::vector<double> loglik;  // [K]
};

struct TaskResult {
  TaskInfo info;
  int64_t n = 0, n_total = 0;  // items scored, items in the file
  double acc = 0, acc_norm = 0;
  bool bos = false;
  double seconds = 0;
  int64_t forwards = 0;
  std::vector<ItemResult> items;
  double metric() const { return info.paper_metric == "acc_norm" ? acc_norm : acc; }
};

TaskResult evaluate_task(Runner& r, const Tokenizer& tok, const TaskData& task, const ZeroShotOptions& opt);

// First index of the maximum (numpy.argmax).
int argmax_first(const std::vector<double>& v);

}  // namespace llmprune
