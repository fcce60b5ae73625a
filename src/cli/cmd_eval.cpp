// llmprune eval MODEL --ppl FILE[,FILE...]: perplexity (and, with the evaluation issue, zero-shot tasks).
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "core/fs.h"
#include "core/error.h"
#include "core/progress.h"
#include "eval/perplexity.h"
#include "tokenizer/tokenizer.h"

namespace llmprune::cli {
namespace {

struct EvalArgs {
  std::string model, ppl;
  int seq_len = 128, stride = 0, batch = 8;
  int64_t max_windows = 0;
  bool json = false;
};

void run_eval(const EvalArgs& a) {
  if (a.ppl.empty()) throw UserError("nothing to evaluate: give --ppl FILE[,FILE...]");
  if (a.seq_len < 2) throw UserError("--seq-len must be at least 2");
  if (a.stride < 0 || a.stride > a.seq_len) throw UserError("--stride must be in [1, --seq-len]");
  if (a.batch <= 0) throw UserError("--batch must be positive");
  if (a.json) Progress::set_enabled(false);
  Model m = Model::load(a.model);
  if (a.seq_len > m.cfg.max_pos)
    throw UserError("--seq-len " + std::to_string(a.seq_len) + " exceeds the model's context of " + std::to_string(m.cfg.max_pos));
  auto tok = load_tokenizer(model_dir_of(a.model));
  Runner r(m);
  PplOptions o;
  o.seq_len = a.seq_len;
  o.stride = a.stride;
  o.batch = a.batch;
  o.max_windows = a.max_windows;
  nlohmann::json out;
  out["model"] = a.model;
  out["params"] = m.n_params();
  std::vector<std::pair<std::string, PplResult>> rows;
  for (auto& spec : split_list(a.ppl)) {
    // NAME=FILE names the column; a bare FILE is named by its file name.
    std::string name = spec, file = spec;
    if (auto eq = spec.find('='); eq != std::string::npos) {
      name = spec.substr(0, eq);
      file = spec.substr(eq + 1);
    } else {
      name = std::filesystem::path(spec).filename().string();
    }
    auto ids = tokenize_file_with_bos(*tok, file);
    PplResult res = perplexity(r, ids, o);
    rows.emplace_back(name, res);
    out["ppl"][name] = {{"file", file}, {"ppl", res.ppl}, {"nll_sum", res.nll_sum}, {"tokens_scored", res.tokens_scored},
                        {"windows", res.windows}, {"seq_len", a.seq_len}, {"stride", a.stride ? a.stride : a.seq_len},
                        {"convention", res.convention}, {"seconds", res.seconds}};
  }
  if (a.json) {
    std::cout << out.dump(2) << "\n";
    return;
  }
  std::printf("model %s (%s params)\n", a.model.c_str(), format_count(double(m.n_params())).c_str());
  std::printf("%-24s %12s %10s %12s %9s\n", "dataset", "perplexity", "windows", "tokens", "seconds");
  for (auto& [name, res] : rows)
    std::printf("%-24s %12.4f %10lld %12lld %9.2f\n", name.c_str(), res.ppl, (long long)res.windows,
                (long long)res.tokens_scored, res.seconds);
  if (!rows.empty()) std::printf("convention: %s\n", rows.front().second.convention.c_str());
}

void register_eval(CLI::App& app) {
  auto* cmd = app.add_subcommand("eval", "Perplexity of text files");
  auto a = std::make_shared<EvalArgs>();
  cmd->add_option("MODEL", a->model, "model directory or .gguf file")->required();
  cmd->add_option("--ppl", a->ppl, "text files, comma-separated; NAME=FILE names a column");
  cmd->add_option("--seq-len", a->seq_len, "window length in tokens")->capture_default_str();
  cmd->add_option("--stride", a->stride, "window stride (default: seq-len, non-overlapping)");
  cmd->add_option("--batch", a->batch, "windows per forward pass")->capture_default_str();
  cmd->add_option("--max-windows", a->max_windows, "score at most this many windows (0 = all)");
  cmd->add_flag("--json", a->json, "print JSON");
  cmd->callback([a] { run_eval(*a); });
}

AutoRegister reg(register_eval);

}  // namespace
}  // namespace llmprune::cli
