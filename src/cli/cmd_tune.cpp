// llmprune tune MODEL --data FILE --out DIR: LoRA recovery fine-tuning (METHOD.md §4). Trains
// low-rank adapters on q/k/v/o/gate/up/down with the base weights frozen, then merges them and
// writes a normal dense HF directory. docs/tune.md describes every option.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/common.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/progress.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"
#include "train/data.h"
#include "train/lora.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace llmprune::cli {
namespace {

struct TuneArgs {
  std::string model, data, out, data_format = "auto", val_file, checkpoint_dir, resume_from, save_adapter, dtype, compute = "fp32";
  double val_split = 0;
  int cutoff_len = 256;
  bool train_on_inputs = false, strict = false, resume = false, force = false, json_out = false, quiet = false;
  std::string lora_targets = "q,k,v,o,gate,up,down";
  int lora_r = 8;
  double lora_alpha = 16, lora_dropout = 0.05;
  TrainOptions t;
};

std::string abs_path(const std::string& p) {
  std::error_code ec;
  auto a = fs::weakly_canonical(fs::absolute(p), ec);
  return ec ? p : a.string();
}

void report_data(const std::string& file, const DataReport& r, size_t kept, bool quiet) {
  if (quiet) return;
  std::cerr << "data " << file << ": " << r.format << ", " << kept << " examples";
  if (r.format == "alpaca") {
    std::cerr << " of " << r.records << " records";
    if (r.truncated) std::cerr << ", " << r.truncated << " cut at --cutoff-len";
  }
  std::cerr << "\n";
  for (auto& p : r.problems) std::cerr << "skipped " << p << "\n";
  if (r.skipped_bad > int64_t(r.problems.size()))
    std::cerr << "skipped " << (r.skipped_bad - int64_t(r.problems.size())) << " more malformed records\n";
  if (r.skipped_bad) std::cerr << "(--strict refuses the file at the first malformed record instead)\n";
  if (r.skipped_no_target)
    std::cerr << "skipped " << r.skipped_no_target << " records whose response starts beyond --cutoff-len\n";
}

void run_tune(TuneArgs& a) {
  auto t0 = std::chrono::steady_clock::now();
  if (a.json_out) Progress::set_enabled(false);
  TrainOptions& t = a.t;
  t.quiet = a.quiet;
  t.compute = kernels::parse_compute(a.compute);
  if (a.cutoff_len < 2) throw UserError("--cutoff-len must be at least 2");
  if (t.batch < 1 || t.micro_batch < 1) throw UserError("--batch and --micro-batch must be positive");
  if (t.batch % t.micro_batch != 0)
    throw UserError("--batch " + std::to_string(t.batch) + " is not a multiple of --micro-batch " + std::to_string(t.micro_batch));
  if (t.epochs < 0 || t.max_steps < 0) throw UserError("--epochs and --max-steps must not be negative");
  if (!(t.lr > 0)) throw UserError("--lr must be positive");
  if (t.weight_decay < 0) throw UserError("--weight-decay must not be negative");
  if (!(t.beta1 >= 0 && t.beta1 < 1) || !(t.beta2 >= 0 && t.beta2 < 1)) throw UserError("--adam-beta1/--adam-beta2 must be in [0, 1)");
  if (!(t.adam_eps > 0)) throw UserError("--adam-eps must be positive");
  if (t.max_grad_norm < 0) throw UserError("--max-grad-norm must not be negative (0 = no clipping)");
  if (t.schedule != "linear" && t.schedule != "cosine" && t.schedule != "constant")
    throw UserError("--schedule must be linear, cosine or constant");
  if (t.warmup_steps < 0) throw UserError("--warmup-steps must not be negative");
  if (t.warmup_ratio != -1 && !(t.warmup_ratio >= 0 && t.warmup_ratio <= 1)) throw UserError("--warmup-ratio must be in [0, 1]");
  if (t.eval_every < 0 || t.save_every < 0 || t.log_every < 0) throw UserError("--eval-every/--save-every/--log-every must not be negative");
  if (t.keep_checkpoints < 1) throw UserError("--keep-checkpoints must be at least 1");
  if (a.val_split < 0) throw UserError("--val-split must not be negative");
  if (a.val_split > 0 && !a.val_file.empty()) throw UserError("--val-split and --val-file are exclusive");
  if (a.val_split >= 1 && a.val_split != std::floor(a.val_split)) throw UserError("--val-split: a fraction in (0, 1) or a whole count");
  if (fs::exists(a.out) && !a.force) throw UserError(a.out + ": output already exists (use --force to replace it)");
  if (!a.save_adapter.empty() && fs::exists(a.save_adapter) && !a.force)
    throw UserError(a.save_adapter + ": output already exists (use --force to replace it)");
  LoraConfig lc;
  lc.r = a.lora_r;
  lc.alpha = a.lora_alpha;
  lc.dropout = a.lora_dropout;
  lc.targets = parse_lora_targets(a.lora_targets);
  lc.seed = t.seed;

  Model model = Model::load(a.model);
  DType out_dtype = model.storage_dtype();
  if (!a.dtype.empty()) {
    std::string d = a.dtype;
    for (auto& c : d) c = char(std::toupper(static_cast<unsigned char>(c)));
    if (d == "FP32" || d == "FLOAT32") d = "F32";
    if (d == "FP16" || d == "FLOAT16") d = "F16";
    if (d == "BFLOAT16") d = "BF16";
    if (!dtype_from_name(d, &out_dtype)) throw UserError("--dtype must be f32, f16 or bf16");
  }
  if (a.cutoff_len > model.cfg.max_pos)
    throw UserError("--cutoff-len " + std::to_string(a.cutoff_len) + " exceeds the model's context of " + std::to_string(model.cfg.max_pos));
  auto tok = load_model_tokenizer(a.model);

  DataOptions dopt;
  dopt.cutoff_len = a.cutoff_len;
  dopt.train_on_inputs = a.train_on_inputs;
  dopt.strict = a.strict;
  dopt.format = a.data_format;
  DataReport drep, vrep;
  std::vector<Example> train = load_examples(a.data, *tok, dopt, &drep);
  std::vector<Example> val;
  if (!a.val_file.empty()) {
    val = load_examples(a.val_file, *tok, dopt, &vrep);
  } else if (a.val_split > 0) {
    split_validation(train, a.val_split, t.seed, val);
  }
  for (auto* set : {&train, &val})
    for (auto& e : *set)
      for (int32_t id : e.ids)
        if (id < 0 || id >= model.cfg.vocab)
          throw UserError(a.data + ": token id " + std::to_string(id) + " is outside the model's vocabulary of " + std::to_string(model.cfg.vocab));
  report_data(a.data, drep, train.size() + (a.val_file.empty() ? val.size() : 0), a.quiet);
  if (!a.val_file.empty()) report_data(a.val_file, vrep, val.size(), a.quiet);

  if (t.checkpoint_dir.empty()) t.checkpoint_dir = a.checkpoint_dir.empty() ? fs::path(a.out + ".ckpt") : fs::path(a.checkpoint_dir);
  if (!a.resume_from.empty()) t.resume_from = a.resume_from;
  t.resume = a.resume;
  t.replace_checkpoints = a.force;
  t.fingerprint = {{"model", abs_path(a.model)},
                   {"model_params", model.n_params()},
                   {"data", abs_path(a.data)},
                   {"data_format", drep.format},
                   {"val", a.val_file.empty() ? json(a.val_split) : json(abs_path(a.val_file))},
                   {"cutoff_len", a.cutoff_len},
                   {"train_on_inputs", a.train_on_inputs}};

  LoraAdapters lora(model, lc);
  Trainer trainer(model, lora, t);
  TrainResult tr = trainer.run(train, val);

  // Merge and write the dense model, then the adapter alone.
  Model merged = merge_lora(model, lora);
  AtomicDir out(a.out, a.force);
  save_model_files(merged, out.path(), out_dtype, model_dir_of(a.model));
  json targets_json = json::array();
  for (Role r : lc.targets)
    if (has_role(*model.arch, r)) targets_json.push_back(hf_module_name(*model.arch, r));  // v1 has no gate
  json settings = {{"data", a.data},
                   {"data_format", drep.format},
                   {"val_file", a.val_file},
                   {"val_split", a.val_split},
                   {"cutoff_len", a.cutoff_len},
                   {"train_on_inputs", a.train_on_inputs},
                   {"lora_targets", targets_json},
                   {"lora_r", lc.r},
                   {"lora_alpha", lc.alpha},
                   {"lora_dropout", lc.dropout},
                   {"lr", t.lr},
                   {"weight_decay", t.weight_decay},
                   {"adam_betas", {t.beta1, t.beta2}},
                   {"adam_eps", t.adam_eps},
                   {"max_grad_norm", t.max_grad_norm},
                   {"schedule", t.schedule},
                   {"warmup_steps", tr.warmup_steps},
                   {"epochs", t.epochs},
                   {"max_steps", t.max_steps},
                   {"batch", t.batch},
                   {"micro_batch", t.micro_batch},
                   {"seed", t.seed}};
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  json tj;
  tj["llmprune_version"] = LLMPRUNE_VERSION;
  tj["source_model"] = a.model;
  tj["settings"] = settings;
  tj["data"] = {{"train_examples", train.size()},
                {"val_examples", val.size()},
                {"records", drep.records},
                {"skipped_malformed", drep.skipped_bad},
                {"skipped_no_response", drep.skipped_no_target},
                {"truncated", drep.truncated}};
  tj["trainable_params"] = lora.n_params();
  tj["model_params"] = model.n_params();
  tj["steps"] = tr.steps;
  tj["steps_per_epoch"] = tr.steps_per_epoch;
  tj["resumed_from_step"] = tr.resumed_from;
  tj["final_train_loss"] = tr.final_loss;
  if (tr.final_val_loss >= 0) {
    tj["final_val_loss"] = tr.final_val_loss;
    tj["final_val_ppl"] = std::exp(tr.final_val_loss);
  }
  if (tr.initial_val_loss >= 0) {
    tj["initial_val_loss"] = tr.initial_val_loss;
    tj["initial_val_ppl"] = std::exp(tr.initial_val_loss);
  }
  tj["train_tokens_per_s"] = tr.tokens_per_s;
  tj["train_seconds"] = tr.seconds;
  tj["seconds"] = secs;
  tj["peak_rss_bytes"] = peak_rss_bytes();
  tj["log"] = tr.log;
  atomic_write_file(out.path() / "tune.json", tj.dump(2) + "\n");
  std::ostringstream csv;
  csv << "step,epoch,loss,lr,grad_norm,tokens,elapsed_s,val_loss\n";
  for (auto& r : tr.log) {
    auto num = [&](const char* k) { return r.contains(k) ? r[k].dump() : std::string(); };
    csv << num("step") << "," << num("epoch") << "," << num("loss") << "," << num("lr") << "," << num("grad_norm") << ","
        << num("tokens") << "," << num("elapsed_s") << "," << num("val_loss") << "\n";
  }
  atomic_write_file(out.path() / "training_log.csv", csv.str());
  if (!a.save_adapter.empty()) {
    AtomicDir ad(a.save_adapter, a.force);
    save_peft_adapter(lora, ad.path(), abs_path(a.model));
    ad.commit();
  }
  out.commit();

  if (a.json_out) {
    std::cout << tj.dump(2) << "\n";
    return;
  }
  std::printf("tuned %s -> %s: %lld steps, train loss %.4f", a.model.c_str(), a.out.c_str(), (long long)tr.steps, tr.final_loss);
  if (tr.final_val_loss >= 0) {
    std::printf(", val loss %.4f (ppl %.3f)", tr.final_val_loss, std::exp(tr.final_val_loss));
    if (tr.initial_val_loss >= 0) std::printf(" from %.4f (ppl %.3f)", tr.initial_val_loss, std::exp(tr.initial_val_loss));
  }
  std::printf("\n%lld LoRA parameters (r %d) merged into %s weights; %.0f training tok/s; time %.1fs, peak memory %s\n",
              (long long)lora.n_params(), lc.r, dtype_name(out_dtype).c_str(), tr.tokens_per_s, secs, human_bytes(double(peak_rss_bytes())).c_str());
  if (!a.save_adapter.empty()) std::printf("adapter (PEFT layout) -> %s\n", a.save_adapter.c_str());
}

void register_tune(CLI::App& app) {
  auto* cmd = app.add_subcommand("tune", "LoRA recovery fine-tuning: train adapters on frozen weights, merge them, save a dense model");
  auto a = std::make_shared<TuneArgs>();
  TrainOptions& t = a->t;
  cmd->add_option("MODEL", a->model, "model directory or .gguf file (typically a pruned model)")->required();
  cmd->add_option("--data", a->data, "training data: Alpaca JSON/JSONL (instruction, input, output) or plain text")->required();
  cmd->add_option("--out,-o", a->out, "output model directory (adapters merged; written atomically)")->required();
  cmd->add_option("--data-format", a->data_format, "auto (.json/.jsonl = alpaca, else text) | alpaca | text")->capture_default_str();
  cmd->add_option("--val-split", a->val_split, "hold out this fraction (0-1) or count (>= 1) of the data for validation");
  cmd->add_option("--val-file", a->val_file, "validation data file (same formats)");
  cmd->add_option("--cutoff-len", a->cutoff_len, "tokens per example (longer ones are cut; text is chunked to it)")->capture_default_str();
  cmd->add_flag("--train-on-inputs", a->train_on_inputs, "Alpaca: learn the prompt too (default: the response only)");
  cmd->add_flag("--strict", a->strict, "refuse the data at the first malformed record (default: report and skip)");
  cmd->add_option("--lora-targets", a->lora_targets, "projections to adapt: q,k,v,o,gate,up,down (or all)")->capture_default_str();
  cmd->add_option("--lora-r", a->lora_r, "LoRA rank")->capture_default_str();
  cmd->add_option("--lora-alpha", a->lora_alpha, "LoRA alpha (scale = alpha / r)")->capture_default_str();
  cmd->add_option("--lora-dropout", a->lora_dropout, "dropout on the adapter input")->capture_default_str();
  cmd->add_option("--lr", t.lr, "peak learning rate (AdamW)")->capture_default_str();
  cmd->add_option("--weight-decay", t.weight_decay, "AdamW decoupled weight decay")->capture_default_str();
  cmd->add_option("--adam-beta1", t.beta1, "AdamW beta1")->capture_default_str();
  cmd->add_option("--adam-beta2", t.beta2, "AdamW beta2")->capture_default_str();
  cmd->add_option("--adam-eps", t.adam_eps, "AdamW epsilon")->capture_default_str();
  cmd->add_option("--max-grad-norm", t.max_grad_norm, "clip the gradient norm to this (0 = off)")->capture_default_str();
  cmd->add_option("--schedule", t.schedule, "learning-rate decay after warm-up: linear | cosine | constant")->capture_default_str();
  cmd->add_option("--warmup-steps", t.warmup_steps, "linear warm-up steps")->capture_default_str();
  cmd->add_option("--warmup-ratio", t.warmup_ratio, "warm-up as a fraction of all steps (overrides --warmup-steps)");
  cmd->add_option("--epochs", t.epochs, "passes over the training data")->capture_default_str();
  cmd->add_option("--max-steps", t.max_steps, "stop after this many optimizer steps (overrides --epochs)");
  cmd->add_option("--batch", t.batch, "examples per optimizer step")->capture_default_str();
  cmd->add_option("--micro-batch", t.micro_batch, "examples per forward/backward (gradient accumulation = batch / micro-batch)")->capture_default_str();
  cmd->add_option("--eval-every", t.eval_every, "validation loss every N steps (0 = only at the end)")->capture_default_str();
  cmd->add_option("--eval-batch", t.eval_batch, "examples per validation forward pass")->capture_default_str();
  cmd->add_option("--save-every", t.save_every, "checkpoint every N steps (0 = none)")->capture_default_str();
  cmd->add_option("--log-every", t.log_every, "progress line on stderr every N steps")->capture_default_str();
  cmd->add_option("--checkpoint-dir", a->checkpoint_dir, "where checkpoints go (default: OUT.ckpt)");
  cmd->add_option("--keep-checkpoints", t.keep_checkpoints, "newest checkpoints kept")->capture_default_str();
  cmd->add_flag("--resume", a->resume, "continue from the newest checkpoint in the checkpoint directory");
  cmd->add_option("--resume-from", a->resume_from, "continue from this checkpoint directory");
  cmd->add_option("--seed", t.seed, "seed: adapter init, data order, dropout, validation split")->capture_default_str();
  add_compute_option(cmd, a->compute);
  cmd->add_option("--save-adapter", a->save_adapter, "also write the adapter alone in PEFT's layout to this directory");
  cmd->add_option("--dtype", a->dtype, "dtype of the merged weights (default: the model's)");
  cmd->add_flag("--force", a->force, "replace --out / --save-adapter if they exist, and an earlier run's checkpoints");
  cmd->add_flag("--json", a->json_out, "print tune.json to stdout");
  cmd->add_flag("--quiet,-q", a->quiet, "no progress lines on stderr");
  cmd->callback([a] { run_tune(*a); });
}

AutoRegister reg(register_tune);

}  // namespace
}  // namespace llmprune::cli
