#include "train/trainer.h"

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>

#include "core/error.h"
#include "core/fs.h"
#include "io/safetensors.h"
#include "kernels/ops.h"
#include "model/backward.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace llmprune {

namespace {

struct NullSink : GradSink {
  void on_layer(int, const LayerF32&, std::array<GradStats, kNumLayerRoles>&) override {}
  bool needs_f32_weights() const override { return false; }
};

std::string fmt_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char buf[64];
  long t = long(s + 0.5);
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else if (t >= 60) std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%lds", t);
  return buf;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

const char* kStateFile = "trainer_state.json";
const char* kAdapterFile = "adapter_model.safetensors";
const char* kOptimFile = "optimizer.safetensors";

// checkpoint-00000012 -> 12; -1 for anything else.
int64_t checkpoint_step(const fs::path& p) {
  std::string n = p.filename().string();
  const std::string pre = "checkpoint-";
  if (n.size() <= pre.size() || n.compare(0, pre.size(), pre) != 0) return -1;
  int64_t v = 0;
  for (size_t i = pre.size(); i < n.size(); i++) {
    if (n[i] < '0' || n[i] > '9') return -1;
    v = v * 10 + (n[i] - '0');
  }
  return v;
}

}  // namespace

int make_batch(const std::vector<const Example*>& ex, std::vector<int32_t>& tokens, std::vector<int32_t>& targets) {
  int T = 0;
  for (auto* e : ex) T = std::max(T, int(e->ids.size()));
  const size_t B = ex.size();
  tokens.assign(B * size_t(T), 0);
  targets.assign(B * size_t(T), -1);
  for (size_t b = 0; b < B; b++) {
    const Example& e = *ex[b];
    std::copy(e.ids.begin(), e.ids.end(), tokens.begin() + int64_t(b * size_t(T)));
    for (size_t t = 0; t + 1 < e.ids.size(); t++) targets[b * size_t(T) + t] = e.labels[t + 1] >= 0 ? e.labels[t + 1] : -1;
  }
  return T;
}

std::vector<uint32_t> epoch_permutation(size_t n, uint64_t seed, int64_t epoch) {
  std::vector<uint32_t> p(n);
  for (size_t i = 0; i < n; i++) p[i] = uint32_t(i);
  const uint64_t key = mix_keys(mix_keys(seed, 0x5f1eu), uint64_t(epoch));
  for (size_t i = n; i-- > 1;) {
    size_t j = size_t(splitmix64(key + i) % (i + 1));
    std::swap(p[i], p[j]);
  }
  return p;
}

void split_validation(std::vector<Example>& all, double val_split, uint64_t seed, std::vector<Example>& val) {
  if (val_split <= 0) return;
  size_t n_val = val_split < 1 ? size_t(std::llround(val_split * double(all.size()))) : size_t(val_split);
  if (n_val == 0) n_val = 1;
  if (n_val >= all.size())
    throw UserError("--val-split " + fmt("%g", val_split) + " leaves no training data (" + std::to_string(all.size()) + " examples)");
  auto perm = epoch_permutation(all.size(), mix_keys(seed, 0x7a1u), 0);
  std::vector<char> is_val(all.size(), 0);
  for (size_t i = 0; i < n_val; i++) is_val[perm[i]] = 1;
  std::vector<Example> train;
  for (size_t i = 0; i < all.size(); i++) (is_val[i] ? val : train).push_back(std::move(all[i]));
  all = std::move(train);
}

Trainer::Trainer(const Model& m, LoraAdapters& lora, TrainOptions opt, LogFn log)
    : m_(m), lora_(lora), opt_(std::move(opt)), log_(std::move(log)) {
  for (auto& p : lora_.pairs()) {
    Moments mo;
    mo.mA.assign(p.A.size(), 0.0f);
    mo.vA.assign(p.A.size(), 0.0f);
    mo.mB.assign(p.B.size(), 0.0f);
    mo.vB.assign(p.B.size(), 0.0f);
    mom_.push_back(std::move(mo));
  }
}

void Trainer::emit(const std::string& s) const {
  if (opt_.quiet) return;
  if (log_) log_(s);
  else std::cerr << s << std::endl;
}

double Trainer::lr_at(const TrainOptions& o, int64_t step, int64_t total, int64_t warmup) {
  if (step < warmup) return o.lr * double(step) / double(std::max<int64_t>(1, warmup));
  if (o.schedule == "constant") return o.lr;
  const double rest = double(std::max<int64_t>(1, total - warmup));
  if (o.schedule == "cosine") {
    double progress = double(step - warmup) / rest;
    return o.lr * std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * 2.0 * 0.5 * progress)));
  }
  return o.lr * std::max(0.0, double(total - step) / rest);
}

StepResult Trainer::step(const std::vector<std::vector<const Example*>>& mbs, int64_t step_index, double lr) {
  StepResult r;
  r.lr = lr;
  for (auto& mb : mbs)
    for (auto* e : mb) {
      r.scored += e->scored();
      r.tokens += int64_t(e->ids.size());
    }
  if (r.scored == 0) throw RuntimeError("step " + std::to_string(step_index + 1) + ": no learned token in the batch");
  lora_.zero_grad();
  lora_.set_training(true);
  NullSink sink;
  GradOptions go;
  go.per_sample = false;
  go.global_grads = false;
  go.weight_grads = false;
  go.hook = &lora_;
  go.compute = opt_.compute;
  std::vector<int32_t> tokens, targets;
  double loss_sum = 0;
  for (size_t j = 0; j < mbs.size(); j++) {
    if (mbs[j].empty()) continue;
    const int T = make_batch(mbs[j], tokens, targets);
    int64_t count = 0;
    for (auto* e : mbs[j]) count += e->scored();
    if (count == 0) continue;
    go.targets = targets.data();
    lora_.set_grad_scale(float(double(count) / double(r.scored)));
    lora_.set_dropout_key(mix_keys(uint64_t(step_index), uint64_t(j)));
    BackwardResult br = compute_gradients(m_, tokens.data(), int(mbs[j].size()), T, go, sink);
    if (!br.finite || !std::isfinite(br.loss))
      throw RuntimeError("step " + std::to_string(step_index + 1) + ": training loss is not finite (" + fmt("%g", br.loss) + ")");
    loss_sum += br.loss * double(count);
  }
  lora_.set_grad_scale(1.0f);
  r.loss = loss_sum / double(r.scored);
  double sq = 0;
  for (auto& p : lora_.pairs()) {
    for (float g : p.dA) sq += double(g) * g;
    for (float g : p.dB) sq += double(g) * g;
  }
  r.grad_norm = std::sqrt(sq);
  if (!std::isfinite(r.grad_norm))
    throw RuntimeError("step " + std::to_string(step_index + 1) + ": gradient is not finite (loss " + fmt("%g", r.loss) + ")");
  // torch.nn.utils.clip_grad_norm_: coef = max_norm / (norm + 1e-6), applied when < 1.
  float coef = 1.0f;
  if (opt_.max_grad_norm > 0) {
    double c = opt_.max_grad_norm / (r.grad_norm + 1e-6);
    if (c < 1.0) coef = float(c);
  }
  // torch.optim.AdamW (decoupled weight decay, bias-corrected moments).
  adam_step_++;
  const double bc1 = 1.0 - std::pow(opt_.beta1, double(adam_step_));
  const double bc2 = 1.0 - std::pow(opt_.beta2, double(adam_step_));
  const float step_size = float(lr / bc1), bc2_sqrt = float(std::sqrt(bc2));
  const float decay = float(1.0 - lr * opt_.weight_decay), b1 = float(opt_.beta1), b2 = float(opt_.beta2),
              eps = float(opt_.adam_eps);
  auto update = [&](std::vector<float>& p, const std::vector<float>& g, std::vector<float>& m, std::vector<float>& v) {
    const size_t n = p.size();
#pragma omp parallel for if (n > 65536)
    for (size_t i = 0; i < n; i++) {
      const float gi = g[i] * coef;
      p[i] *= decay;
      m[i] = m[i] * b1 + gi * (1.0f - b1);
      v[i] = v[i] * b2 + (1.0f - b2) * gi * gi;
      const float denom = std::sqrt(v[i]) / bc2_sqrt + eps;
      p[i] += -step_size * (m[i] / denom);
    }
  };
  auto& pairs = lora_.pairs();
  for (size_t i = 0; i < pairs.size(); i++) {
    update(pairs[i].A, pairs[i].dA, mom_[i].mA, mom_[i].vA);
    update(pairs[i].B, pairs[i].dB, mom_[i].mB, mom_[i].vB);
  }
  for (auto& p : pairs) {
    for (float v : p.A)
      if (!std::isfinite(v)) throw RuntimeError("step " + std::to_string(step_index + 1) + ": adapter weights became non-finite");
  }
  return r;
}

double Trainer::evaluate(const std::vector<Example>& val) {
  if (val.empty()) return -1;
  const bool was = lora_.training();
  lora_.set_training(false);
  int maxT = 0;
  for (auto& e : val) maxT = std::max(maxT, int(e.ids.size()));
  Runner runner(m_, maxT);
  runner.set_hook(&lora_);
  runner.set_compute(opt_.compute);
  const int V = m_.cfg.vocab;
  double nll = 0;
  int64_t count = 0;
  std::vector<int32_t> tokens, targets;
  std::vector<float> logits, losses;
  const size_t bs = size_t(std::max(1, opt_.eval_batch));
  for (size_t i = 0; i < val.size(); i += bs) {
    std::vector<const Example*> mb;
    for (size_t j = i; j < std::min(val.size(), i + bs); j++) mb.push_back(&val[j]);
    const int T = make_batch(mb, tokens, targets);
    const int N = int(mb.size()) * T;
    logits.resize(size_t(N) * V);
    losses.resize(size_t(N));
    runner.forward(tokens.data(), int(mb.size()), T, logits.data());
    kernels::cross_entropy_forward(losses.data(), logits.data(), targets.data(), N, V);
    for (int n = 0; n < N; n++)
      if (targets[size_t(n)] >= 0) {
        nll += losses[size_t(n)];
        count++;
      }
  }
  lora_.set_training(was);
  return count ? nll / double(count) : -1;
}

void Trainer::save_checkpoint(const fs::path& dir, int64_t step, const json& state) const {
  AtomicDir out(dir, true);
  std::string base = opt_.fingerprint.contains("model") ? opt_.fingerprint["model"].get<std::string>() : "";
  save_peft_adapter(lora_, out.path(), base);
  SafetensorsWriter w;
  w.set_metadata("format", "pt");
  const auto& pairs = lora_.pairs();
  for (size_t i = 0; i < pairs.size(); i++) {
    const LoraPair& p = pairs[i];
    const Moments* mo = &mom_[i];
    auto add = [&](const std::string& name, const std::vector<float>* v, std::vector<int64_t> shape) {
      w.add(name, DType::F32, std::move(shape), [v](void* dst) { std::memcpy(dst, v->data(), v->size() * 4); });
    };
    const std::string a = lora_.peft_name(p, true), b = lora_.peft_name(p, false);
    add(a + ".exp_avg", &mo->mA, {p.r, p.in});
    add(a + ".exp_avg_sq", &mo->vA, {p.r, p.in});
    add(b + ".exp_avg", &mo->mB, {p.out, p.r});
    add(b + ".exp_avg_sq", &mo->vB, {p.out, p.r});
  }
  w.write(out.path() / kOptimFile);
  atomic_write_file(out.path() / kStateFile, state.dump(1) + "\n");
  out.commit();
}

json Trainer::load_checkpoint(const fs::path& dir) {
  refuse_incomplete_output(dir);  // a checkpoint-N.tmp-<pid> a killed run was writing
  const fs::path state_file = dir / kStateFile;
  json state;
  try {
    state = json::parse(read_text_file(state_file.string()));
  } catch (const json::exception& e) {
    throw input_error(state_file.string(), std::string("invalid JSON: ") + e.what());
  }
  if (!state.is_object() || !state.contains("step") || !state["step"].is_number_integer() || !state.contains("adam_step"))
    throw input_error(state_file.string(), "not a trainer state (step / adam_step missing)");
  load_lora_weights(lora_, dir / kAdapterFile);
  SafetensorsFile f = SafetensorsFile::open(dir / kOptimFile);
  const auto& pairs = lora_.pairs();
  for (size_t i = 0; i < pairs.size(); i++) {
    const std::string a = lora_.peft_name(pairs[i], true), b = lora_.peft_name(pairs[i], false);
    auto get = [&](const std::string& name, std::vector<float>& dst) {
      auto it = f.tensors.find(name);
      if (it == f.tensors.end()) throw input_error((dir / kOptimFile).string(), "missing tensor '" + name + "'");
      if (size_t(it->second.numel()) != dst.size() || it->second.dtype != DType::F32)
        throw input_error((dir / kOptimFile).string(), "tensor '" + name + "' has the wrong shape or dtype");
      std::memcpy(dst.data(), it->second.data, dst.size() * 4);
    };
    get(a + ".exp_avg", mom_[i].mA);
    get(a + ".exp_avg_sq", mom_[i].vA);
    get(b + ".exp_avg", mom_[i].mB);
    get(b + ".exp_avg_sq", mom_[i].vB);
  }
  adam_step_ = state["adam_step"].get<int64_t>();
  return state;
}

// Deletes a checkpoint directory, its trainer state first: a run killed half-way leaves a
// directory latest_checkpoint() no longer picks, never a partial checkpoint that --resume reads.
static void remove_checkpoint(const fs::path& dir) {
  std::error_code ec;
  fs::remove(dir / kStateFile, ec);
  fs::remove_all(dir, ec);
}

fs::path Trainer::latest_checkpoint(const fs::path& ckpt_dir) {
  fs::path best;
  int64_t best_step = -1;
  std::error_code ec;
  if (!fs::is_directory(ckpt_dir, ec)) return best;
  for (auto& e : fs::directory_iterator(ckpt_dir, ec)) {
    int64_t s = checkpoint_step(e.path());
    if (s > best_step && e.is_directory() && fs::exists(e.path() / kStateFile)) {
      best_step = s;
      best = e.path();
    }
  }
  return best;
}

TrainResult Trainer::run(const std::vector<Example>& train, const std::vector<Example>& val) {
  if (train.empty()) throw UserError("no training examples");
  if (opt_.batch < 1 || opt_.micro_batch < 1) throw UserError("--batch and --micro-batch must be positive");
  TrainResult res;
  const size_t n = train.size();
  const int64_t spe = int64_t((n + size_t(opt_.batch) - 1) / size_t(opt_.batch));
  const int64_t total = opt_.max_steps > 0 ? opt_.max_steps : int64_t(opt_.epochs) * spe;
  if (total <= 0) throw UserError("nothing to train: --epochs and --max-steps give 0 steps");
  const int64_t warmup = opt_.warmup_ratio >= 0 ? int64_t(std::ceil(opt_.warmup_ratio * double(total))) : opt_.warmup_steps;
  res.total_steps = total;
  res.warmup_steps = warmup;
  res.steps_per_epoch = spe;

  // Everything a resumed run must share with the run that wrote the checkpoint.
  json fp = opt_.fingerprint;
  const LoraConfig& lc = lora_.config();
  json targets = json::array();
  for (Role r : lc.targets) targets.push_back(lora_target_name(r));
  fp["lora_r"] = lc.r;
  fp["lora_alpha"] = lc.alpha;
  fp["lora_dropout"] = lc.dropout;
  fp["lora_targets"] = targets;
  fp["seed"] = opt_.seed;
  fp["batch"] = opt_.batch;
  fp["micro_batch"] = opt_.micro_batch;
  fp["lr"] = opt_.lr;
  fp["weight_decay"] = opt_.weight_decay;
  fp["adam_betas"] = {opt_.beta1, opt_.beta2};
  fp["adam_eps"] = opt_.adam_eps;
  fp["max_grad_norm"] = opt_.max_grad_norm;
  fp["schedule"] = opt_.schedule;
  fp["warmup_steps"] = warmup;
  fp["total_steps"] = total;
  fp["train_examples"] = int64_t(n);
  fp["train_digest"] = std::to_string(examples_digest(train));

  int64_t start = 0;
  double elapsed_before = 0;
  int64_t tokens_before = 0;
  if (opt_.resume || !opt_.resume_from.empty()) {
    fs::path dir = opt_.resume_from;
    if (dir.empty()) {
      if (opt_.checkpoint_dir.empty()) throw UserError("--resume needs a checkpoint directory");
      dir = latest_checkpoint(opt_.checkpoint_dir);
      if (dir.empty()) throw UserError(opt_.checkpoint_dir.string() + ": no checkpoint to resume from");
    }
    json state = load_checkpoint(dir);
    const std::string sf = (dir / kStateFile).string();
    const json& saved = state.contains("fingerprint") ? state["fingerprint"] : json::object();
    for (auto& [key, value] : fp.items()) {
      if (!saved.contains(key)) throw input_error(sf, "checkpoint has no setting '" + key + "'");
      if (saved[key] != value)
        throw input_error(sf, "checkpoint was made with " + key + " = " + saved[key].dump() + ", this run has " + value.dump());
    }
    start = state["step"].get<int64_t>();
    if (start > total) throw input_error(sf, "checkpoint step " + std::to_string(start) + " is beyond the run's " + std::to_string(total) + " steps");
    if (state.contains("log") && state["log"].is_array()) res.log = state["log"];
    for (auto& r : res.log)
      if (r.value("step", int64_t(-1)) == 0 && r.contains("val_loss")) res.initial_val_loss = r["val_loss"].get<double>();
    elapsed_before = state.value("elapsed_seconds", 0.0);
    tokens_before = state.value("tokens_seen", int64_t(0));
    res.resumed_from = start;
    emit("resuming from " + dir.string() + " at step " + std::to_string(start) + "/" + std::to_string(total));
  }
  if (!opt_.checkpoint_dir.empty() && opt_.save_every > 0) {
    if (start == 0 && !latest_checkpoint(opt_.checkpoint_dir).empty()) {
      // A fresh run must not mix its checkpoints with an earlier run's (the newest-kept rule
      // would then delete the new ones).
      if (!opt_.replace_checkpoints)
        throw UserError(opt_.checkpoint_dir.string() + ": holds checkpoints of an earlier run (continue it with --resume, or --force to start over)");
      std::error_code ec;
      for (auto& e : fs::directory_iterator(opt_.checkpoint_dir, ec))
        if (checkpoint_step(e.path()) >= 0) remove_checkpoint(e.path());
    }
    fs::create_directories(opt_.checkpoint_dir);
    // Temporary directories left by killed runs (<name>.tmp-<pid> of a dead process).
    std::error_code ec;
    for (auto& e : fs::directory_iterator(opt_.checkpoint_dir, ec)) {
      std::string name = e.path().filename().string();
      size_t p = name.rfind(".tmp-");
      if (p == std::string::npos || name.compare(0, 11, "checkpoint-") != 0) continue;
      long pid = std::atol(name.c_str() + p + 5);
      if (pid > 0 && ::kill(pid_t(pid), 0) != 0 && errno == ESRCH) fs::remove_all(e.path(), ec);
    }
  }

  {
    double base_params = double(m_.n_params());
    emit("tune: " + std::to_string(n) + " training examples" + (val.empty() ? "" : ", " + std::to_string(val.size()) + " validation") +
         "; " + std::to_string(total) + " steps (" + std::to_string(spe) + " per epoch), batch " + std::to_string(opt_.batch) +
         " = micro-batch " + std::to_string(opt_.micro_batch) + " x " + std::to_string((opt_.batch + opt_.micro_batch - 1) / opt_.micro_batch) +
         "; lr " + fmt("%.3g", opt_.lr) + " " + opt_.schedule + ", warm-up " + std::to_string(warmup) + "; LoRA r " +
         std::to_string(lc.r) + " alpha " + fmt("%g", lc.alpha) + ", " + std::to_string(lora_.n_params()) + " trainable parameters (" +
         fmt("%.2f", 100.0 * double(lora_.n_params()) / base_params) + "% of " + fmt("%.0f", base_params) + ")");
    if (warmup >= total) emit("note: the warm-up (" + std::to_string(warmup) + " steps) covers the whole run; see --warmup-steps");
  }

  if (!val.empty() && start == 0) {
    res.initial_val_loss = evaluate(val);
    res.log.push_back({{"step", 0}, {"val_loss", res.initial_val_loss}});
    emit("step 0/" + std::to_string(total) + "  val loss " + fmt("%.4f", res.initial_val_loss) + " (ppl " + fmt("%.3f", std::exp(res.initial_val_loss)) + ")");
  }

  const auto t0 = std::chrono::steady_clock::now();
  auto now_s = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  std::vector<uint32_t> perm;
  int64_t perm_epoch = -1;
  double window_loss = 0;
  int64_t window_steps = 0, window_tokens = 0;
  double window_t0 = 0;
  double last_val = -1;
  for (int64_t s = start; s < total; s++) {
    const int64_t epoch = s / spe, k = s % spe;
    if (epoch != perm_epoch) {
      perm = epoch_permutation(n, opt_.seed, epoch);
      perm_epoch = epoch;
    }
    std::vector<std::vector<const Example*>> mbs;
    const size_t b0 = size_t(k) * size_t(opt_.batch), b1 = std::min(n, b0 + size_t(opt_.batch));
    for (size_t i = b0; i < b1; i += size_t(opt_.micro_batch)) {
      std::vector<const Example*> mb;
      for (size_t j = i; j < std::min(b1, i + size_t(opt_.micro_batch)); j++) mb.push_back(&train[perm[j]]);
      mbs.push_back(std::move(mb));
    }
    const double lr = lr_at(opt_, s, total, warmup);
    StepResult sr;
    try {
      sr = step(mbs, s, lr);
    } catch (const RuntimeError& e) {
      // Stop; the newest checkpoint on disk is the last good state (never overwritten here).
      fs::path last = opt_.checkpoint_dir.empty() ? fs::path() : latest_checkpoint(opt_.checkpoint_dir);
      throw RuntimeError(std::string(e.what()) + (last.empty() ? "; no checkpoint was written" : "; last good checkpoint: " + last.string()));
    }
    res.tokens += sr.tokens;
    const double t = now_s();
    json rec = {{"step", s + 1},
                {"epoch", double(s + 1) / double(spe)},
                {"loss", sr.loss},
                {"lr", sr.lr},
                {"grad_norm", sr.grad_norm},
                {"tokens", sr.tokens},
                {"elapsed_s", elapsed_before + t}};
    window_loss += sr.loss;
    window_steps++;
    window_tokens += sr.tokens;
    const bool last = s + 1 == total;
    if (opt_.eval_every > 0 && (s + 1) % opt_.eval_every == 0 && !val.empty() && !last) {
      last_val = evaluate(val);
      rec["val_loss"] = last_val;
    }
    res.log.push_back(rec);
    if ((opt_.log_every > 0 && (s + 1) % opt_.log_every == 0) || last || s == start) {
      const double tps = double(window_tokens) / std::max(1e-9, t - window_t0);
      const double eta = t / double(s + 1 - start) * double(total - s - 1);
      std::string line = "step " + std::to_string(s + 1) + "/" + std::to_string(total) + "  epoch " + fmt("%.2f", double(s + 1) / double(spe)) +
                         "  loss " + fmt("%.4f", window_loss / double(window_steps)) + "  lr " + fmt("%.3g", sr.lr) + "  grad " +
                         fmt("%.3g", sr.grad_norm) + "  " + fmt("%.0f", tps) + " tok/s  eta " + fmt_duration(eta);
      if (rec.contains("val_loss")) line += "  val loss " + fmt("%.4f", last_val);
      emit(line);
      res.final_loss = window_loss / double(window_steps);
      window_loss = 0;
      window_steps = 0;
      window_tokens = 0;
      window_t0 = t;
    } else if (rec.contains("val_loss")) {
      emit("step " + std::to_string(s + 1) + "/" + std::to_string(total) + "  val loss " + fmt("%.4f", last_val));
    }
    if (opt_.save_every > 0 && (s + 1) % opt_.save_every == 0 && !last) {
      if (opt_.checkpoint_dir.empty()) throw UserError("--save-every needs a checkpoint directory");
      char name[64];
      std::snprintf(name, sizeof name, "checkpoint-%08lld", (long long)(s + 1));
      json state = {{"step", s + 1},
                    {"total_steps", total},
                    {"steps_per_epoch", spe},
                    {"epoch", double(s + 1) / double(spe)},
                    {"adam_step", adam_step_},
                    {"tokens_seen", tokens_before + res.tokens},
                    {"elapsed_seconds", elapsed_before + t},
                    {"rng", {{"kind", "counter-based splitmix64: order(seed, epoch), dropout(seed, step, micro-batch)"},
                             {"seed", opt_.seed},
                             {"next_step", s + 1}}},
                    {"fingerprint", fp},
                    {"log", res.log}};
      save_checkpoint(opt_.checkpoint_dir / name, s + 1, state);
      // Keep the newest keep_checkpoints complete ones.
      std::vector<std::pair<int64_t, fs::path>> all;
      std::error_code ec;
      for (auto& e : fs::directory_iterator(opt_.checkpoint_dir, ec)) {
        int64_t cs = checkpoint_step(e.path());
        if (cs >= 0 && e.is_directory()) all.emplace_back(cs, e.path());
      }
      std::sort(all.begin(), all.end());
      const size_t keep = size_t(std::max(1, opt_.keep_checkpoints));
      for (size_t i = 0; i + keep < all.size(); i++) remove_checkpoint(all[i].second);
    }
  }
  res.steps = total;
  res.seconds = now_s();
  res.tokens_per_s = res.seconds > 0 ? double(res.tokens) / res.seconds : 0;
  if (!val.empty()) {
    res.final_val_loss = evaluate(val);
    res.log.back()["val_loss"] = res.final_val_loss;
    emit("final val loss " + fmt("%.4f", res.final_val_loss) + " (ppl " + fmt("%.3f", std::exp(res.final_val_loss)) + ")" +
         (res.initial_val_loss >= 0 ? ", before tuning " + fmt("%.4f", res.initial_val_loss) : std::string()));
  }
  return res;
}

}  // namespace llmprune
