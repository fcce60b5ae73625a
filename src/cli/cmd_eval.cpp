// llmprune eval MODEL [--ppl FILE,...] [--tasks T,... --task-dir DIR] [--compare MODEL2 ...]:
// perplexity and lm-evaluation-harness-style zero-shot accuracy, one row per model in the
// paper's layout (ppl columns, task columns, average of the task columns). docs/eval.md.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/progress.h"
#include "eval/hash.h"
#include "eval/perplexity.h"
#include "eval/tasks.h"
#include "eval/zeroshot.h"
#include "tokenizer/tokenizer.h"

namespace llmprune::cli {
namespace {
namespace fs = std::filesystem;
using nlohmann::json;

struct EvalArgs {
  std::string model, ppl, tasks, task_dir, bos = "auto", harness = "0.4", save_predictions, save_json, compute = "fp32";
  std::vector<std::string> compare;
  int seq_len = 128, stride = 0, batch = 8, max_length = 0;
  int64_t max_windows = 0, limit = 0;
  bool json = false, markdown = false;
};

struct PplSpec {
  std::string name, file;
};

struct ModelRow {
  std::string label, path;
  int64_t params = 0;
  std::vector<std::pair<std::string, PplResult>> ppl;
  std::vector<TaskResult> tasks;
  json weights;
};

// "NAME=PATH" names a row; a bare PATH (or one that exists with an '=' in it) is its own name.
std::pair<std::string, std::string> split_label(const std::string& spec) {
  auto eq = spec.find('=');
  if (eq == std::string::npos || fs::exists(spec)) return {spec, spec};
  return {spec.substr(0, eq), spec.substr(eq + 1)};
}

json file_entry(const fs::path& p) {
  return {{"path", p.string()}, {"bytes", fs::file_size(p)}, {"xxh64", hex64(xxh64_file(p))}};
}

json hash_weights(const Model& m) {
  json files = json::array();
  std::string all;
  for (auto& f : m.files) {
    files.push_back(file_entry(f));
    all += files.back()["xxh64"].get<std::string>() + "\n";
  }
  // One fingerprint for the whole checkpoint: XXH64 of the per-file digests, one per line.
  return {{"xxh64", hex64(xxh64(all.data(), all.size()))}, {"files", files}};
}

std::string pct(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", 100.0 * v);
  return b;
}
std::string fixed(double v, int prec) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", prec, v);
  return b;
}

double zero_shot_average(const ModelRow& r) {
  double s = 0;
  for (auto& t : r.tasks) s += t.metric();
  return r.tasks.empty() ? 0 : s / double(r.tasks.size());
}

// The paper's table: model, params, ppl columns, task columns (percent), average.
void print_table(const std::vector<ModelRow>& rows, bool markdown) {
  std::vector<std::string> head = {"model", "params"};
  const ModelRow& first = rows.front();
  for (auto& [name, res] : first.ppl) head.push_back(markdown ? name + " \xE2\x86\x93" : name);
  for (auto& t : first.tasks) head.push_back(t.info.display);
  if (!first.tasks.empty()) head.push_back("Average");
  std::vector<std::vector<std::string>> cells;
  for (auto& r : rows) {
    std::vector<std::string> c = {r.label, format_count(double(r.params))};
    for (auto& [name, res] : r.ppl) c.push_back(fixed(res.ppl, 2));
    for (auto& t : r.tasks) c.push_back(pct(t.metric()));
    if (!r.tasks.empty()) c.push_back(pct(zero_shot_average(r)));
    cells.push_back(c);
  }
  if (markdown) {
    auto line = [](const std::vector<std::string>& v) {
      std::string s = "|";
      for (auto& x : v) s += " " + x + " |";
      std::printf("%s\n", s.c_str());
    };
    line(head);
    std::string sep = "|---|";
    for (size_t i = 1; i < head.size(); i++) sep += "---:|";
    std::printf("%s\n", sep.c_str());
    for (auto& c : cells) line(c);
    return;
  }
  std::vector<size_t> w(head.size());
  auto width = [](const std::string& s) { return utf8_length(s); };
  for (size_t i = 0; i < head.size(); i++) {
    w[i] = width(head[i]);
    for (auto& c : cells) w[i] = std::max(w[i], width(c[i]));
  }
  auto line = [&](const std::vector<std::string>& v) {
    std::string s;
    for (size_t i = 0; i < v.size(); i++) {
      std::string pad(w[i] - width(v[i]), ' ');
      s += (i ? "  " : "") + (i == 0 ? v[i] + pad : pad + v[i]);
    }
    std::printf("%s\n", s.c_str());
  };
  line(head);
  for (auto& c : cells) line(c);
}

std::string metric_note(const std::vector<TaskResult>& tasks) {
  std::string s;
  for (auto& t : tasks) s += (s.empty() ? "" : ", ") + t.info.display + " " + t.info.paper_metric;
  return s;
}

std::string convention_note(const EvalArgs& a, const std::vector<TaskResult>& tasks, int max_len) {
  std::string s = a.harness == "0.3" ? "lm-evaluation-harness 0.3 (LLM-Pruner's) tokenisation"
                                     : "lm-evaluation-harness 0.4 tokenisation";
  const bool bos = !tasks.empty() && tasks.front().bos;  // one setting for every task
  s += bos ? ", BOS before each context (add_bos_token=True)" : ", no BOS";
  s += ", context window " + std::to_string(max_len);
  if (a.limit > 0) s += ", first " + std::to_string(a.limit) + " items per task";
  return s;
}

json task_json(const TaskResult& t, const TaskData& d, bool with_hashes) {
  json j = {{"display", t.info.display},
            {"metric", t.info.paper_metric},
            {"score", t.metric()},
            {"acc", t.acc},
            {"acc_norm", t.info.has_acc_norm ? json(t.acc_norm) : json(nullptr)},
            {"n", t.n},
            {"n_total", t.n_total},
            {"bos", t.bos},
            {"forward_passes", t.forwards},
            {"seconds", t.seconds}};
  if (with_hashes) {
    json files = json::array();
    for (auto& f : d.files) files.push_back(file_entry(f));
    j["files"] = files;
  }
  return j;
}

void run_eval(const EvalArgs& a) {
  if (a.ppl.empty() && a.tasks.empty()) throw UserError("nothing to evaluate: give --ppl FILE[,FILE...] and/or --tasks T[,T...]");
  if (a.seq_len < 2) throw UserError("--seq-len must be at least 2");
  if (a.stride < 0 || a.stride > a.seq_len) throw UserError("--stride must be in [1, --seq-len]");
  if (a.batch <= 0) throw UserError("--batch must be positive");
  if (a.limit < 0) throw UserError("--limit must not be negative");
  if (a.max_windows < 0) throw UserError("--max-windows must not be negative (0 = all)");
  if (a.max_length < 0) throw UserError("--max-length must not be negative");
  if (a.json && a.markdown) throw UserError("--json and --markdown are exclusive");
  if (a.bos != "auto" && a.bos != "on" && a.bos != "off") throw UserError("--bos must be auto, on or off");
  if (a.harness != "0.4" && a.harness != "0.3") throw UserError("--harness must be 0.4 or 0.3");
  if (a.harness == "0.3" && a.bos == "on")
    throw UserError("--bos on: lm-evaluation-harness 0.3 never adds BOS for causal models (add_special_tokens=False); "
                    "use --harness 0.4 --bos on for add_bos_token=True");
  if (!a.tasks.empty() && a.task_dir.empty()) throw UserError("--tasks needs --task-dir DIR (one sub-folder per task)");
  if (a.json) Progress::set_enabled(false);

  const kernels::Compute compute = kernels::parse_compute(a.compute);
  std::vector<PplSpec> ppl_specs;
  for (auto& spec : split_list(a.ppl)) {
    // NAME=FILE names the column; a bare FILE is named by its file name.
    if (auto eq = spec.find('='); eq != std::string::npos) ppl_specs.push_back({spec.substr(0, eq), spec.substr(eq + 1)});
    else ppl_specs.push_back({fs::path(spec).filename().string(), spec});
  }
  // Every task file is read and validated before any model is loaded.
  std::vector<TaskData> tasks;
  for (auto& name : split_list(a.tasks)) {
    task_info(name);
    if (!fs::is_directory(a.task_dir)) throw UserError("task directory " + a.task_dir + " not found");
    tasks.push_back(load_task(name, a.task_dir));
  }
  const bool want_json = a.json || !a.save_json.empty();  // --save-json FILE: what --json prints, into FILE
  const bool hashes = want_json || !a.save_predictions.empty();
  const bool legacy = tasks.empty() && a.compare.empty() && !a.markdown;  // the --ppl-only output, unchanged

  ZeroShotOptions zo;
  zo.limit = a.limit;
  zo.bos = a.bos == "auto" ? -1 : a.bos == "on" ? 1 : 0;
  zo.style = a.harness == "0.3" ? HarnessStyle::V03 : HarnessStyle::V04;
  zo.max_len = a.max_length;

  std::vector<std::string> specs = {a.model};
  specs.insert(specs.end(), a.compare.begin(), a.compare.end());
  std::vector<ModelRow> rows;
  std::vector<json> outs;
  int max_len_used = 0;
  for (auto& spec : specs) {
    auto [label, path] = split_label(spec);
    Model m = Model::load(path);
    if (!ppl_specs.empty() && a.seq_len > m.cfg.max_pos)
      throw UserError("--seq-len " + std::to_string(a.seq_len) + " exceeds the context of " + path + " (" +
                      std::to_string(m.cfg.max_pos) + ")");
    auto tok = load_model_tokenizer(path);
    int max_len = a.max_length > 0 ? a.max_length : m.cfg.max_pos;
    max_len_used = max_len;
    Runner r(m, std::max(max_len, a.seq_len));
    r.set_compute(compute);
    ModelRow row;
    row.label = label;
    row.path = path;
    row.params = m.n_params();
    json out;
    out["model"] = path;
    out["params"] = row.params;
    if (!ppl_specs.empty()) {
      PplOptions o;
      o.seq_len = a.seq_len;
      o.stride = a.stride;
      o.batch = a.batch;
      o.max_windows = a.max_windows;
      for (auto& ps : ppl_specs) {
        o.source = ps.file;
        PplResult res = perplexity(r, tokenize_file_with_bos(*tok, ps.file), o);
        row.ppl.emplace_back(ps.name, res);
        out["ppl"][ps.name] = {{"file", ps.file}, {"ppl", res.ppl}, {"nll_sum", res.nll_sum},
                               {"tokens_scored", res.tokens_scored}, {"windows", res.windows},
                               {"seq_len", a.seq_len}, {"stride", a.stride ? a.stride : a.seq_len},
                               {"convention", res.convention}, {"seconds", res.seconds}};
      }
    }
    for (auto& td : tasks) {
      row.tasks.push_back(evaluate_task(r, *tok, td, zo));
      out["tasks"][td.info.name] = task_json(row.tasks.back(), td, hashes);
    }
    if (!tasks.empty()) {
      out["zero_shot_average"] = zero_shot_average(row);
      out["zero_shot_metrics"] = metric_note(row.tasks);
    }
    if (hashes) row.weights = hash_weights(m);
    if (want_json) {
      if (!legacy) out["label"] = label;
      out["weights"] = row.weights;
      out["meta"] = {{"llmprune_version", LLMPRUNE_VERSION},
                     {"seq_len", a.seq_len},
                     {"stride", a.stride ? a.stride : a.seq_len},
                     {"max_windows", a.max_windows},
                     {"task_dir", a.task_dir},
                     {"limit", a.limit},
                     {"bos", a.bos},
                     {"harness", "lm-evaluation-harness " + a.harness},
                     {"max_length", max_len},
                     {"compute", a.compute}};
    }
    rows.push_back(std::move(row));
    outs.push_back(std::move(out));
  }

  if (!a.save_predictions.empty()) {
    json p = {{"llmprune_version", LLMPRUNE_VERSION}, {"models", json::array()}};
    for (size_t i = 0; i < rows.size(); i++) {
      json mj = {{"model", rows[i].path}, {"label", rows[i].label}, {"weights_xxh64", rows[i].weights["xxh64"]}};
      for (auto& t : rows[i].tasks) {
        json items = json::array();
        for (size_t k = 0; k < t.items.size(); k++)
          items.push_back({{"index", k}, {"gold", t.items[k].gold}, {"pred", t.items[k].pred},
                           {"pred_norm", t.items[k].pred_norm}, {"loglik", t.items[k].loglik}});
        mj["tasks"][t.info.name] = {{"acc", t.acc}, {"acc_norm", t.acc_norm}, {"bos", t.bos}, {"items", items}};
      }
      p["models"].push_back(mj);
    }
    atomic_write_file(a.save_predictions, p.dump(1) + "\n");
  }

  if (want_json) {
    const std::string doc = (outs.size() == 1 ? outs[0] : json{{"models", outs}}).dump(2) + "\n";
    if (!a.save_json.empty()) atomic_write_file(a.save_json, doc);
    if (a.json) {
      std::cout << doc;
      return;
    }
  }
  if (legacy) {
    const ModelRow& r = rows[0];
    std::printf("model %s (%s params)\n", a.model.c_str(), format_count(double(r.params)).c_str());
    std::printf("%-24s %12s %10s %12s %9s\n", "dataset", "perplexity", "windows", "tokens", "seconds");
    for (auto& [name, res] : r.ppl)
      std::printf("%-24s %12.4f %10lld %12lld %9.2f\n", name.c_str(), res.ppl, (long long)res.windows,
                  (long long)res.tokens_scored, res.seconds);
    if (!r.ppl.empty()) std::printf("convention: %s\n", r.ppl.front().second.convention.c_str());
    return;
  }
  print_table(rows, a.markdown);
  const ModelRow& r0 = rows.front();
  std::string notes;
  if (!r0.ppl.empty()) notes += "perplexity: " + r0.ppl.front().second.convention + "\n";
  if (!r0.tasks.empty()) {
    notes += "zero-shot: percent, " + metric_note(r0.tasks) + "; Average = mean of the task columns\n";
    notes += "scoring: " + convention_note(a, r0.tasks, max_len_used) + "\n";
  }
  if (a.markdown) {
    std::printf("\n");
    for (size_t p = 0, e; p < notes.size(); p = e + 1) {
      e = notes.find('\n', p);
      std::printf("_%s_  \n", notes.substr(p, e - p).c_str());
    }
    return;
  }
  std::printf("%s", notes.c_str());
  if (!r0.tasks.empty()) {
    std::printf("\n%-24s %-14s %7s %8s %9s %9s\n", "model", "task", "items", "acc", "acc_norm", "seconds");
    for (auto& r : rows)
      for (auto& t : r.tasks)
        std::printf("%-24s %-14s %7lld %8.4f %9s %9.2f\n", r.label.c_str(), t.info.name.c_str(), (long long)t.n, t.acc,
                    t.info.has_acc_norm ? fixed(t.acc_norm, 4).c_str() : "-", t.seconds);
  }
}

void register_eval(CLI::App& app) {
  auto* cmd = app.add_subcommand("eval", "Perplexity of text files and zero-shot accuracy (lm-evaluation-harness style)");
  auto a = std::make_shared<EvalArgs>();
  cmd->add_option("MODEL", a->model, "model directory or .gguf file (NAME=PATH names its row)")->required();
  cmd->add_option("--ppl", a->ppl, "text files, comma-separated; NAME=FILE names a column");
  cmd->add_option("--seq-len", a->seq_len, "perplexity window length in tokens")->capture_default_str();
  cmd->add_option("--stride", a->stride, "window stride (default: seq-len, non-overlapping)");
  cmd->add_option("--batch", a->batch, "windows per forward pass")->capture_default_str();
  add_compute_option(cmd, a->compute);
  cmd->add_option("--max-windows", a->max_windows, "score at most this many windows (0 = all)");
  cmd->add_option("--tasks", a->tasks,
                  "zero-shot tasks, comma-separated: boolq,piqa,hellaswag,winogrande,arc_easy,arc_challenge,"
                  "openbookqa,kjv_cloze");
  cmd->add_option("--task-dir", a->task_dir, "folder with one sub-folder per task (docs/eval.md)");
  cmd->add_option("--limit", a->limit, "score only the first N items of each task (0 = all)");
  cmd->add_option("--bos", a->bos, "BOS before each context: auto (= off, lm-eval's default), on (lm-eval's add_bos_token=True), off")->capture_default_str();
  cmd->add_option("--harness", a->harness, "tokenisation of lm-evaluation-harness 0.4, or 0.3 (LLM-Pruner's fork)")
      ->capture_default_str();
  cmd->add_option("--max-length", a->max_length, "zero-shot context window in tokens (default: the model's)");
  cmd->add_option("--compare", a->compare, "more models, one table row each (NAME=PATH names a row)");
  cmd->add_option("--save-predictions", a->save_predictions, "write per-item predictions and log-likelihoods (JSON)");
  cmd->add_option("--save-json", a->save_json, "also write the JSON (as --json prints it) to this file");
  cmd->add_flag("--json", a->json, "print JSON");
  cmd->add_flag("--markdown", a->markdown, "print the table as Markdown");
  cmd->callback([a] { run_eval(*a); });
}

AutoRegister reg(register_eval);

}  // namespace
}  // namespace llmprune::cli
