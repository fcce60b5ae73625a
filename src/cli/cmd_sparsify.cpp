// llmprune sparsify MODEL --out DIR: the magnitude-pruning baselines (docs/sparsify.md).
// Unstructured methods (l1, random, wanda; optional N:M) zero single weights of the projections
// and save a model of the same shape; `ln` (torch's ln_structured) picks whole rows/columns of
// single matrices by their Ln norm and removes (or zeroes) their dependency groups.
// Writes the model plus sparsify.json (achieved sparsity per tensor and overall).
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/progress.h"
#include "eval/perplexity.h"
#include "importance/importance.h"
#include "prune/calibration.h"
#include "prune/sparsify.h"
#include "tokenizer/tokenizer.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace llmprune::cli {
namespace {

struct SparsifyArgs {
  std::string model, out, method = "l1", scope, nm, targets, dim = "rows";
  double amount = -1;
  int n = 2;
  bool keep_shape = false, force = false, json = false;
  std::string calib, calib_sampling = "random";
  int calib_samples = 10, calib_seq_len = 64;
  uint64_t seed = 0;
  // which optional flags were given
  bool scope_set = false, n_set = false, dim_set = false;
};

std::string pct(double num, double den) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f%%", den > 0 ? 100.0 * num / den : 0.0);
  return b;
}

void run_sparsify(const SparsifyArgs& a) {
  if (a.json) Progress::set_enabled(false);
  if (a.out.empty()) throw UserError("--out DIR is required");
  SparsifyOptions o;
  o.method = parse_sparsify_method(a.method);
  const bool ln = o.method == SparsifyMethod::Ln;
  if (!a.nm.empty()) {
    if (ln) throw UserError("--nm applies to --method l1, random or wanda, not ln");
    if (a.amount != -1) throw UserError("--nm N:M fixes the amount (N/M); give --amount or --nm, not both");
    if (a.scope_set) throw UserError("--nm N:M selects within groups of M inputs of each row; --scope does not apply");
    auto [n, m] = parse_nm(a.nm, "--nm");
    o.nm_n = n;
    o.nm_m = m;
    o.amount = double(n) / m;
  } else {
    if (a.amount == -1) throw UserError("give --amount (fraction in [0, 1)) or --nm N:M");
    if (!(a.amount >= 0 && a.amount < 1)) throw UserError("--amount must be in [0, 1)");
    o.amount = a.amount;
  }
  // Wanda compares weights within each output row (Sun et al.); the others rank whole tensors
  // as torch's l1_unstructured does.
  o.scope = a.scope_set ? parse_sparsity_scope(a.scope)
                        : (o.method == SparsifyMethod::Wanda ? SparsityScope::PerRow : SparsityScope::PerTensor);
  if (ln && a.scope_set) throw UserError("--scope applies to unstructured methods; ln ranks the units of each layer");
  if (!ln && (a.n_set || a.dim_set || a.keep_shape)) throw UserError("--n, --dim and --keep-shape apply to --method ln only");
  if (a.n != 1 && a.n != 2) throw UserError("--n must be 1 or 2");
  if (a.dim == "rows") o.ln_dim = 0;
  else if (a.dim == "cols") o.ln_dim = 1;
  else throw UserError("--dim '" + a.dim + "' must be rows or cols");
  o.ln_norm = a.n;
  o.ln_keep_shape = a.keep_shape;
  o.seed = a.seed;
  if (!a.targets.empty()) {
    auto names = split_list(a.targets);
    if (names.empty()) throw UserError("--targets is empty (use q,k,v,o,gate,up,down)");
    for (auto& nme : names) {
      Role r;
      if (!role_from_short_name(nme, &r)) throw UserError("--targets '" + nme + "' is not one of q, k, v, o, gate, up, down");
      if (std::find(o.targets.begin(), o.targets.end(), r) == o.targets.end()) o.targets.push_back(r);
    }
  }
  const bool wanda = o.method == SparsifyMethod::Wanda;
  if (!wanda && !a.calib.empty()) throw UserError("--calib is read by --method wanda only");
  if (a.calib_samples <= 0) throw UserError("--calib-samples must be positive");
  if (a.calib_seq_len < 2) throw UserError("--calib-seq-len must be at least 2");
  if (a.calib_sampling != "random" && a.calib_sampling != "sequential")
    throw UserError("--calib-sampling must be random or sequential");
  if (wanda && a.calib.empty()) throw UserError("--method wanda needs --calib FILE (calibration text)");
  if (fs::exists(a.out) && !a.force) throw UserError(a.out + ": output already exists (use --force to replace it)");

  Model model = Model::load(a.model);
  const ParamCounts before = count_params(model);
  std::vector<int32_t> calib;
  if (wanda) {
    CalibOptions co;
    co.file = a.calib;
    co.samples = a.calib_samples;
    co.seq_len = a.calib_seq_len;
    co.random = a.calib_sampling == "random";
    co.seed = a.seed;
    calib = read_calibration_windows(a.model, model.cfg.max_pos, co);
  }
  SparsifyReport rep = sparsify_model(model, o, calib, a.calib_samples, a.calib_seq_len);
  const ParamCounts after = count_params(model);

  AtomicDir out(a.out, a.force);
  save_model_files(model, out.path(), model.storage_dtype(), model_dir_of(a.model));
  std::vector<std::string> target_names;
  for (Role r : o.targets.empty() ? default_sparsify_targets(o) : o.targets) target_names.push_back(role_desc(*model.arch, r).name);
  json sj;
  sj["llmprune_version"] = LLMPRUNE_VERSION;
  sj["source_model"] = a.model;
  json settings = {{"method", sparsify_method_name(o.method)}, {"amount", o.amount}, {"targets", target_names}, {"seed", a.seed}};
  if (!ln) settings["scope"] = o.nm_m ? "n:m" : sparsity_scope_name(o.scope);
  if (o.nm_m) settings["nm"] = std::to_string(o.nm_n) + ":" + std::to_string(o.nm_m);
  if (ln) {
    settings["n"] = o.ln_norm;
    settings["dim"] = a.dim;
    settings["keep_shape"] = o.ln_keep_shape;
  }
  if (wanda)
    settings.update({{"calib", a.calib}, {"calib_samples", a.calib_samples}, {"calib_seq_len", a.calib_seq_len},
                     {"calib_sampling", a.calib_sampling}});
  sj["settings"] = settings;
  sj["tie_break"] = "equal scores: lower flat index first (global scope: tensors in model order)";
  json tensors = json::array();
  for (auto& t : rep.tensors)
    tensors.push_back({{"name", t.name}, {"layer", t.layer}, {"role", role_desc(*model.arch, t.role).name}, {"numel", t.numel},
                       {"zeroed", t.zeroed}, {"zeros", t.zeros}, {"sparsity", t.numel ? double(t.zeros) / double(t.numel) : 0.0}});
  sj["tensors"] = tensors;
  if (ln) {
    json units = json::array();
    for (auto& u : rep.ln_units)
      units.push_back({{"layer", u.layer}, {"kind", unit_kind_name(u.kind)}, {"before", u.before}, {"removed", u.removed}});
    sj["units"] = units;
  }
  sj["target_params"] = rep.target_params;
  sj["target_zeroed"] = rep.target_zeroed;
  sj["target_zeros"] = rep.target_zeros;
  sj["target_sparsity"] = rep.target_params ? double(rep.target_zeros) / double(rep.target_params) : 0.0;
  sj["params_before"] = before.total;
  sj["params_after"] = after.total;
  sj["fraction_removed"] = 1.0 - double(after.total) / double(before.total);
  sj["model_zeros"] = rep.model_zeros_after;
  sj["model_sparsity"] = double(rep.model_zeros_after) / double(after.total);
  // Zeroed or removed, as a fraction of the original parameters (the results table's column).
  sj["fraction_zeroed_or_removed"] = double(before.total - after.total + rep.model_zeros_after) / double(before.total);
  sj["calib_tokens"] = rep.calib_tokens;
  sj["seconds"] = rep.seconds;
  sj["peak_rss_bytes"] = peak_rss_bytes();
  atomic_write_file(out.path() / "sparsify.json", sj.dump(2) + "\n");
  out.commit();

  if (a.json) {
    std::cout << sj.dump(2) << "\n";
    return;
  }
  std::printf("sparsified %s -> %s (%s, %s)\n", a.model.c_str(), a.out.c_str(), sparsify_method_name(o.method).c_str(),
              ln ? ("L" + std::to_string(o.ln_norm) + " " + a.dim + (o.ln_keep_shape ? ", zeroed" : ", removed")).c_str()
                 : settings["scope"].get<std::string>().c_str());
  if (!rep.tensors.empty()) {
    std::printf("\n %-40s %12s %12s %9s\n", "tensor", "weights", "zeroed", "sparsity");
    for (auto& t : rep.tensors)
      std::printf(" %-40s %12lld %12lld %9s\n", t.name.c_str(), (long long)t.numel, (long long)t.zeroed,
                  pct(double(t.zeros), double(t.numel)).c_str());
    std::printf(" %-40s %12lld %12lld %9s\n", "targeted tensors", (long long)rep.target_params, (long long)rep.target_zeroed,
                pct(double(rep.target_zeros), double(rep.target_params)).c_str());
  }
  if (ln) {
    std::printf("\n layer  kind       before  removed\n");
    for (auto& u : rep.ln_units)
      std::printf(" %5s  %-9s %7d  %7d\n", u.layer < 0 ? "all" : std::to_string(u.layer).c_str(), unit_kind_name(u.kind), u.before,
                  u.removed);
  }
  std::printf("\nparameters %s -> %s (%.2f%% removed); zeros %s of the model (%s)\n", format_count(double(before.total)).c_str(),
              format_count(double(after.total)).c_str(), 100.0 * (1.0 - double(after.total) / double(before.total)),
              format_count(double(rep.model_zeros_after)).c_str(),
              pct(double(rep.model_zeros_after), double(after.total)).c_str());
  std::printf("time %.1fs, peak memory %s\n", rep.seconds, human_bytes(double(peak_rss_bytes())).c_str());
}

void register_sparsify(CLI::App& app) {
  auto* cmd = app.add_subcommand("sparsify", "Magnitude-pruning baselines: zero single weights (l1, random, wanda, N:M) or Ln-structured rows/columns");
  auto a = std::make_shared<SparsifyArgs>();
  cmd->add_option("MODEL", a->model, "model directory or .gguf file")->required();
  cmd->add_option("--out,-o", a->out, "output model directory (written atomically)")->required();
  cmd->add_option("--method", a->method, "l1 | random | wanda | ln")->capture_default_str();
  cmd->add_option("--amount", a->amount, "fraction of weights zeroed (unstructured) or of units removed (ln), in [0, 1)");
  auto* scope = cmd->add_option("--scope", a->scope, "per-tensor | per-row | global (default per-row for wanda, else per-tensor)");
  cmd->add_option("--nm", a->nm, "N:M pattern: zero N of every M consecutive inputs of each row (e.g. 2:4)");
  cmd->add_option("--targets", a->targets, "projections: q,k,v,o,gate,up,down (default all; ln: see docs/sparsify.md)");
  auto* n = cmd->add_option("--n", a->n, "ln: norm order 1 or 2")->capture_default_str();
  auto* dim = cmd->add_option("--dim", a->dim, "ln: rows (output features) | cols (input features)")->capture_default_str();
  cmd->add_flag("--keep-shape", a->keep_shape, "ln: zero the chosen groups' slices instead of removing them");
  cmd->add_option("--calib", a->calib, "calibration text file (wanda)");
  cmd->add_option("--calib-samples", a->calib_samples, "calibration windows")->capture_default_str();
  cmd->add_option("--calib-seq-len", a->calib_seq_len, "tokens per calibration window")->capture_default_str();
  cmd->add_option("--calib-sampling", a->calib_sampling, "random | sequential")->capture_default_str();
  cmd->add_option("--seed", a->seed, "seed for calibration sampling and --method random")->capture_default_str();
  cmd->add_flag("--force", a->force, "replace --out if it exists");
  cmd->add_flag("--json", a->json, "print sparsify.json to stdout instead of the table");
  cmd->callback([a, scope, n, dim] {
    a->scope_set = scope->count() > 0;
    a->n_set = n->count() > 0;
    a->dim_set = dim->count() > 0;
    run_sparsify(*a);
  });
}

AutoRegister reg(register_sparsify);

}  // namespace
}  // namespace llmprune::cli
