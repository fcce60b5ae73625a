// llmprune prune MODEL --out DIR: estimate group importance on calibration text, remove the
// least important groups physically, save a smaller dense HF model plus pruning.json. The
// pipeline is prune::run (prune/pipeline.h); this file parses flags and prints its summary.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "core/fs.h"
#include "core/progress.h"
#include "prune/pipeline.h"
#include "report/report.h"

namespace llmprune::cli {
namespace {

struct PruneArgs : PruneSpec {
  bool json = false;
  std::string report;
};

void run_prune(const PruneArgs& a) {
  if (a.json) Progress::set_enabled(false);
  const PruneSummary sum = prune::run(a);
  if (!a.report.empty()) write_report({a.out}, a.report);
  if (a.json) {
    std::cout << sum.to_json().dump(2) << "\n";
    return;
  }
  const PruneSettings& st = sum.settings;
  const bool sublayer = st.strategy == "sublayer", by_ppl = st.importance == "ppl";
  if (sublayer) {
    std::printf("pruned %s -> %s (sublayer, %s)\n", a.model.c_str(), a.out.c_str(),
                by_ppl ? "BlockPruner: greedy by calibration perplexity" : "Block Influence, one shot");
    std::printf("\n step  removed          calib ppl%s\n", by_ppl ? "  candidates" : "  BI");
    std::printf("    0  -             %10.4f\n", sum.calib_ppl_before.value_or(0.0));
    for (const RemovedUnit& u : sum.removed) {
      const std::string what = "layer " + std::to_string(u.layer) + " " + u.kind;
      if (by_ppl) std::printf(" %4d  %-13s %10.4f  %10d\n", u.step, what.c_str(), u.calib_ppl.value_or(0.0), u.candidates_scored.value_or(0));
      else std::printf(" %4d  %-13s %10.4f  %.5f\n", u.step, what.c_str(), u.calib_ppl.value_or(0.0), u.score);
    }
  } else {
    std::printf("pruned %s -> %s (%s, %s, reduction %s)\n", a.model.c_str(), a.out.c_str(), st.strategy.c_str(),
                st.criterion.c_str(), st.reduction.c_str());
  }
  std::printf("\n layer  heads        kv_heads     mlp_width\n");
  for (const PrunedLayer& row : sum.layers)
    std::printf(" %5d  %3d -> %-4d  %3d -> %-4d  %5d -> %-5d%s\n", row.layer, row.heads_before, row.heads_after,
                row.kv_heads_before, row.kv_heads_after, row.mlp_before, row.mlp_after, row.removed ? "  (layer removed)" : "");
  if (sum.hidden_after != sum.hidden_before) std::printf(" hidden %d -> %d\n", sum.hidden_before, sum.hidden_after);
  std::printf("\nparameters %s -> %s (%.2f%% removed)\n", format_count(double(sum.params_before)).c_str(),
              format_count(double(sum.params_after)).c_str(), 100.0 * sum.fraction_removed());
  if (sublayer) {
    std::printf("time %.1fs (search %.1fs), peak memory %s\n", sum.seconds, sum.search_seconds.value_or(0.0),
                human_bytes(double(sum.peak_rss_bytes)).c_str());
    return;
  }
  std::printf("time %.1fs, peak memory %s\n", sum.seconds, human_bytes(double(sum.peak_rss_bytes)).c_str());
  std::printf("memory estimate %s\n", sum.memory_estimate.describe().c_str());
  if (sum.gradient_flops > 0)
    std::printf("importance %.1fs (%.1f GFLOP/s over %.2f TFLOP of gradient passes, %s, activations %s), save %.1fs\n",
                sum.importance_seconds, sum.gradient_flops / sum.importance_seconds / 1e9, sum.gradient_flops / 1e12,
                sum.compute.c_str(), sum.activations.c_str(), sum.save_seconds);
  if (!a.report.empty()) std::printf("report %s\n", a.report.c_str());
}

void register_prune(CLI::App& app) {
  auto* cmd = app.add_subcommand("prune", "Structural pruning: score coupled groups, remove the least important, save a smaller dense model");
  auto a = std::make_shared<PruneArgs>();
  cmd->add_option("MODEL", a->model, "model directory or .gguf file")->required();
  cmd->add_option("--out,-o", a->out, "output model directory (written atomically)")->required();
  cmd->add_option("--strategy", a->strategy,
                  "block (heads + MLP channels) | channel (hidden width) | layer (whole blocks) | sublayer (attention / "
                  "MLP sub-blocks)")->capture_default_str();
  cmd->add_option("--ratio", a->ratio, "fraction of units removed in each targeted layer (or of the hidden width / layers)");
  cmd->add_option("--attn-ratio", a->attn_ratio, "ratio for attention heads (block strategy)");
  cmd->add_option("--mlp-ratio", a->mlp_ratio, "ratio for MLP channels (block strategy)");
  cmd->add_option("--attn-layers", a->attn_layers, "layers whose heads are pruned, A:B 0-based end-exclusive (default all)");
  cmd->add_option("--mlp-layers", a->mlp_layers, "layers whose MLP channels are pruned, A:B (default all)");
  cmd->add_option("--layers", a->layers, "layer strategy: candidate layers A:B (default all)");
  cmd->add_option("--drop-layers", a->drop_layers, "layer strategy: number of blocks to remove (instead of --ratio)");
  cmd->add_option("--drop-sublayers", a->drop_sublayers, "sublayer strategy: number of attention / MLP sub-blocks to remove (instead of --ratio)");
  cmd->add_option("--shortlist", a->shortlist,
                  "sublayer + ppl: score only the K candidates of lowest Block Influence per step (0: all, as BlockPruner)")
      ->capture_default_str();
  cmd->add_option("--importance", a->importance,
                  "random | l1 | l2 | taylor | flap (activation statistics, no gradients) | bi (Block Influence: layer, "
                  "sublayer) | ppl (BlockPruner's greedy search: sublayer)")->capture_default_str();
  cmd->add_option("--flap-metric", a->flap_metric, "flap: wifv (Var(x_j)·|W[:,j]|²) | ifv (Var(x_j)) | wifn (mean|W[:,j]|·rms(x_j))")->capture_default_str();
  cmd->add_option("--allocation", a->allocation,
                  "per-layer ratios: uniform | global (rank across layers) | adaptive (flap: one threshold on standardized "
                  "scores, weighed by parameters) | log-increasing (SlimGPT)")->capture_default_str();
  cmd->add_option("--layer-ratios", a->layer_ratios, "one ratio per layer, comma-separated (instead of --ratio per layer)");
  cmd->add_option("--min-ratio", a->min_ratio, "log-increasing: the first layer's ratio (default 0.3 x --ratio)");
  cmd->add_option("--compensate", a->compensate, "refit o_proj/down_proj after pruning: none | bias | lstsq | bias+lstsq")->capture_default_str();
  cmd->add_option("--damping", a->damping, "lstsq: damping relative to the mean diagonal of the Gram matrix")->capture_default_str();
  cmd->add_option("--stat-samples", a->stat_samples,
                  "calibration windows of the activation statistics (flap, --compensate; bi and ppl: 64 unless given)")
      ->capture_default_str();
  cmd->add_option("--stat-seq-len", a->stat_seq_len, "tokens per statistics window")->capture_default_str();
  cmd->add_option("--stat-calib", a->stat_calib, "text of the statistics windows (default: --calib)");
  cmd->add_option("--taylor", a->taylor, "vector | element1 | element2 | fisher")->capture_default_str();
  cmd->add_option("--group-reduction", a->reduction, "sum | mean | max | prod | first | last")->capture_default_str();
  cmd->add_flag("--global", a->global, "rank each kind across the targeted layers instead of per layer");
  cmd->add_option("--iterative-steps", a->iterative_steps, "re-estimate importance between K pruning steps")->capture_default_str();
  cmd->add_option("--round-to", a->round_to, "round kept MLP widths down to a multiple of M")->capture_default_str();
  cmd->add_option("--gqa-unit", a->gqa_unit, "kv-group (whole KV groups) | query (query heads evenly per KV group)")->capture_default_str();
  cmd->add_option("--calib", a->calib, "calibration text file (taylor criteria)");
  cmd->add_option("--calib-samples", a->calib_samples, "calibration windows")->capture_default_str();
  cmd->add_option("--calib-seq-len", a->calib_seq_len, "tokens per calibration window")->capture_default_str();
  cmd->add_option("--calib-sampling", a->calib_sampling, "random | sequential")->capture_default_str();
  cmd->add_option("--seed", a->seed, "seed for calibration sampling and the random criterion")->capture_default_str();
  cmd->add_option("--save-importance", a->save_importance, "write every unit's score to this JSON file");
  add_compute_option(cmd, a->compute);
  cmd->add_option("--max-memory", a->max_memory,
                  "memory budget (e.g. 16G): refuse up front when the estimated peak exceeds it");
  cmd->add_option("--activations", a->activations,
                  "auto | keep | recompute: keep every layer's activations for the backward (faster) or recompute "
                  "them layer by layer (least memory); auto keeps them when that fits the budget")
      ->capture_default_str();
  cmd->add_option("--report", a->report, "also write the HTML report of this run (llmprune report) to FILE");
  cmd->add_flag("--force", a->force, "replace --out if it exists");
  cmd->add_flag("--json", a->json, "print pruning.json to stdout instead of the table");
  cmd->callback([a, cmd] {
    // Depth pruning runs the model over its windows many times: BlockPruner's 64 windows by default.
    if (!cmd->count("--stat-samples") && (a->importance == "bi" || a->importance == "ppl")) a->stat_samples = 64;
    run_prune(*a);
  });
}

AutoRegister reg(register_prune);

}  // namespace
}  // namespace llmprune::cli
