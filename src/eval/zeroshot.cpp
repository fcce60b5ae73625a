#include "eval/zeroshot.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/progress.h"

namespace llmprune {

Request encode_request(const Tokenizer& tok, const std::string& context, const std::string& continuation, bool bos,
                       HarnessStyle style) {
  Request r;
  if (context.empty()) {
    // lm-eval: an empty context is replaced by one prefix token (prefix_token_id / eot_token_id).
    int32_t prefix = style == HarnessStyle::V04 && tok.bos_id() >= 0 ? tok.bos_id() : tok.eos_id();
    if (prefix < 0) prefix = tok.bos_id();
    if (prefix < 0) throw UserError("empty context and the tokenizer has neither BOS nor EOS");
    r.ctx = {prefix};
    r.cont = tok.encode(continuation);
    return r;
  }
  std::vector<int32_t> head;
  if (bos) head = tok.prefix_ids();
  if (style == HarnessStyle::V03) {
    r.ctx = head;
    auto c = tok.encode(context);
    r.ctx.insert(r.ctx.end(), c.begin(), c.end());
    r.cont = tok.encode(continuation);
    return r;
  }
  std::string ctx = py_rstrip(context), cont = context.substr(ctx.size()) + continuation;
  if (ctx.empty()) {  // all-whitespace context: lm-eval would tokenise "" here; keep it as a prefix token
    ctx = context;
    cont = continuation;
  }
  r.ctx = head;
  auto c = tok.encode(ctx);
  r.ctx.insert(r.ctx.end(), c.begin(), c.end());
  auto whole = tok.encode(ctx + cont);
  // Split the joint encoding at the context's token count (lm-eval does not check that the
  // context's tokens are a prefix of the joint ones; neither do we).
  size_t skip = r.ctx.size() - head.size();
  if (whole.size() > skip) r.cont.assign(whole.begin() + long(skip), whole.end());
  return r;
}

LoglikScorer::LoglikScorer(Runner& r, int max_len) : r_(r), max_len_(max_len) {}
LoglikScorer::~LoglikScorer() = default;

namespace {
// log_softmax(x)[t] for one row of logits, accumulated in double.
double log_prob(const float* x, int V, int32_t t) {
  float mx = -INFINITY;
  for (int j = 0; j < V; j++) mx = std::max(mx, x[j]);
  double s = 0;
  for (int j = 0; j < V; j++) s += std::exp(double(x[j] - mx));
  return double(x[t] - mx) - std::log(s);
}
}  // namespace

std::vector<double> LoglikScorer::score(const std::vector<Request>& reqs) {
  const int K = int(reqs.size());
  const int V = r_.model().cfg.vocab;
  if (K == 0) return {};
  // Per request: seq = (ctx + cont)[-(max_len+1):]; the model reads inp = seq[:-1] (length L) and
  // position f + j predicts continuation token j, where f = L - n is the last context position.
  std::vector<std::vector<int32_t>> inp(static_cast<size_t>(K));
  std::vector<int> n(static_cast<size_t>(K)), f(static_cast<size_t>(K));
  for (int k = 0; k < K; k++) {
    const Request& q = reqs[size_t(k)];
    n[size_t(k)] = int(q.cont.size());
    if (q.ctx.empty()) throw RuntimeError("internal: empty context encoding");
    if (q.cont.empty()) throw UserError("a continuation encodes to no tokens (the context's tokens absorbed it)");
    if (n[size_t(k)] > max_len_)
      throw UserError("a continuation of " + std::to_string(n[size_t(k)]) + " tokens exceeds the context window of " +
                      std::to_string(max_len_));
    std::vector<int32_t> seq = q.ctx;
    seq.insert(seq.end(), q.cont.begin(), q.cont.end());
    if (seq.size() > size_t(max_len_) + 1) seq.erase(seq.begin(), seq.end() - (max_len_ + 1));
    seq.pop_back();
    f[size_t(k)] = int(seq.size()) - n[size_t(k)];
    for (int32_t t : seq)
      if (t < 0 || t >= V) throw RuntimeError("token id " + std::to_string(t) + " outside the model's vocabulary");
    inp[size_t(k)] = std::move(seq);
  }
  // P = common token prefix of all inputs, at most min(f) + 1 so every scored position is either
  // the prefix's last (P-1) or inside the per-choice suffix.
  int P = *std::min_element(f.begin(), f.end()) + 1;
  for (int k = 1; k < K; k++) {
    int p = 0;
    while (p < P && inp[size_t(k)][size_t(p)] == inp[0][size_t(p)]) p++;
    P = p;
  }
  int maxL = 0;
  for (auto& s : inp) maxL = std::max(maxL, int(s.size()));
  const int Ts = maxL - P;  // suffix length of the batch (right-padded; causal, so padding is inert)
  if (!cache_ || cache_->B < K || cache_->max_T < maxL) {
    int B = cache_ ? std::max(cache_->B, K) : K;
    int T = std::min(max_len_, std::max(maxL, cache_ ? 2 * cache_->max_T : 256));
    T = std::max(T, maxL);
    cache_.reset();
    cache_ = std::make_unique<KVCache>(r_.model(), B, T);
  }
  cache_->len = 0;
  if (P > 0) {
    prefix_logits_.resize(size_t(V));
    r_.forward(inp[0].data(), 1, P, prefix_logits_.data(), cache_.get(), /*last_only=*/true);
    forwards_++;
    // Every choice row starts from the same cached prefix: copy row 0's K/V to rows 1..K-1.
    for (size_t l = 0; l < cache_->k.size(); l++) {
      size_t kd = cache_->k[l].size() / (size_t(cache_->B) * size_t(cache_->max_T));
      size_t row = size_t(cache_->max_T) * kd;
      for (int b = 1; b < K; b++) {
        std::memcpy(cache_->k[l].data() + size_t(b) * row, cache_->k[l].data(), sizeof(float) * size_t(P) * kd);
        std::memcpy(cache_->v[l].data() + size_t(b) * row, cache_->v[l].data(), sizeof(float) * size_t(P) * kd);
      }
    }
  }
  if (Ts > 0) {
    tokens_.assign(size_t(K) * size_t(Ts), 0);
    for (int k = 0; k < K; k++) {
      const auto& s = inp[size_t(k)];
      for (int t = 0; t < Ts; t++) {
        size_t src = std::min(size_t(P + t), s.size() - 1);  // pad with the row's last token
        tokens_[size_t(k) * size_t(Ts) + size_t(t)] = s[src];
      }
    }
    suffix_logits_.resize(size_t(K) * size_t(Ts) * size_t(V));
    r_.forward(tokens_.data(), K, Ts, suffix_logits_.data(), cache_.get());
    forwards_++;
  }
  std::vector<double> out(size_t(K), 0.0);
  for (int k = 0; k < K; k++) {
    const Request& q = reqs[size_t(k)];
    double sum = 0;
    for (int j = 0; j < n[size_t(k)]; j++) {
      int pos = f[size_t(k)] + j;
      const float* row = pos == P - 1 ? prefix_logits_.data()
                                      : suffix_logits_.data() + (size_t(k) * size_t(Ts) + size_t(pos - P)) * size_t(V);
      sum += log_prob(row, V, q.cont[size_t(j)]);
    }
    out[size_t(k)] = sum;
  }
  return out;
}

int argmax_first(const std::vector<double>& v) {
  int best = 0;
  for (size_t i = 1; i < v.size(); i++)
    if (v[i] > v[size_t(best)]) best = int(i);
  return best;
}

TaskResult evaluate_task(Runner& r, const Tokenizer& tok, const TaskData& task, const ZeroShotOptions& opt) {
  auto t0 = std::chrono::steady_clock::now();
  TaskResult res;
  res.info = task.info;
  res.n_total = int64_t(task.items.size());
  res.n = opt.limit > 0 ? std::min(opt.limit, res.n_total) : res.n_total;
  res.bos = opt.bos == 1;  // lm-eval encodes without special tokens unless add_bos_token=True
  if (res.bos && tok.bos_id() < 0) res.bos = false;  // nothing to prepend (as an HF tokenizer without BOS)
  int max_len = opt.max_len > 0 ? opt.max_len : r.model().cfg.max_pos;
  LoglikScorer scorer(r, max_len);
  Progress prog(task.info.name, res.n, "item");
  int64_t correct = 0, correct_norm = 0;
  for (int64_t i = 0; i < res.n; i++) {
    const McItem& it = task.items[size_t(i)];
    std::vector<Request> reqs;
    for (size_t k = 0; k < it.conts.size(); k++)
      reqs.push_back(encode_request(tok, it.contexts[k], it.conts[k], res.bos, opt.style));
    ItemResult ir;
    ir.gold = it.gold;
    try {
      ir.loglik = scorer.score(reqs);
    } catch (const UserError& e) {
      throw UserError(it.where + ": " + e.what());
    }
    std::vector<double> norm(ir.loglik.size());
    for (size_t k = 0; k < norm.size(); k++) norm[k] = ir.loglik[k] / double(std::max<size_t>(1, utf8_length(it.choices[k])));
    ir.pred = argmax_first(ir.loglik);
    ir.pred_norm = argmax_first(norm);
    correct += ir.pred == ir.gold;
    correct_norm += ir.pred_norm == ir.gold;
    res.items.push_back(std::move(ir));
    prog.add(1);
  }
  prog.finish();
  res.forwards = scorer.forwards();
  if (res.n > 0) {
    res.acc = double(correct) / double(res.n);
    res.acc_norm = double(correct_norm) / double(res.n);
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace llmprune
