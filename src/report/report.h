#pragma once
// Self-contained HTML report of pruning runs (docs/report.md): inline SVG charts generated here,
// one <style> (light/dark system theme, print), no scripts, no network.
//
// A run directory is what `llmprune prune --out DIR` wrote, read by convention:
//   DIR/pruning.json    required: settings, per-layer sizes, removed units, parameter counts
//   DIR/importance.json optional: every candidate unit's score ({layer, kind, index, score, step?})
//   DIR/eval*.json      optional: saved `llmprune eval ... --json` outputs (one model, or {"models": [...]})
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "prune/summary.h"

namespace llmprune {

// One model row of an `eval --json` output.
struct ReportEvalTask {
  std::string name, display, metric;
  double score = 0;  // fraction in [0, 1], the paper's metric for the task
};
struct ReportEvalRow {
  std::string label, model, file;  // file: the eval*.json it came from (name only)
  int64_t params = 0;
  std::vector<std::pair<std::string, double>> ppl;  // dataset name -> perplexity
  std::vector<ReportEvalTask> tasks;
  bool has_average = false;
  double average = 0;  // mean of the task scores (the paper's "Average"), fraction
};

struct ReportLayer {
  int layer = 0;
  int heads_before = 0, heads_after = 0, kv_before = 0, kv_after = 0, mlp_before = 0, mlp_after = 0;
  bool removed = false;  // the whole block was removed (layer strategy)
};

struct ReportUnit {
  int layer = -1;  // -1: a model-wide unit (hidden channel)
  std::string kind;  // head, kv_group, mlp, hidden, layer
  int index = 0, step = 1;
  double score = 0;
  bool removed = false;  // removed in this unit's step
};

struct ReportRun {
  std::string label;
  std::filesystem::path dir;
  // pruning.json as read: settings (summary.settings) and results (summary.params_before, ...)
  PruneSummary summary;
  // derived from it for the charts
  std::vector<ReportLayer> layers;
  std::vector<std::pair<std::string, std::pair<int64_t, int64_t>>> params_by_role;  // role -> (before, after)
  int removed_units = 0;
  bool has_importance = false;
  std::vector<ReportUnit> units;  // from importance.json, removed flags set from pruning.json
  std::vector<ReportEvalRow> evals;
  std::vector<std::string> notes;  // shown in the run's section (e.g. "no importance.json")
};

// Reads a run directory. `spec` is DIR or NAME=DIR (NAME labels the run; default: DIR's name).
// UserError naming the file when pruning.json is missing or malformed, or an eval*.json or
// importance.json is malformed.
ReportRun load_report_run(const std::string& spec);

struct ReportOptions {
  std::string title = "llmprune pruning report";
  // Strip plots draw every unit while a layer has at most this many and a chart at most
  // max_points_per_chart; beyond that only the box (quartiles, min/max) and the threshold.
  int max_points_per_layer = 1500;
  int max_points_per_chart = 20000;
};

// The whole HTML document.
std::string render_report(const std::vector<ReportRun>& runs, const ReportOptions& opt = {});

// load_report_run for every spec, render_report, atomic write to `out`. Returns the bytes written.
size_t write_report(const std::vector<std::string>& run_specs, const std::filesystem::path& out,
                    const ReportOptions& opt = {});

}  // namespace llmprune
