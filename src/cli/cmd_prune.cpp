// llmprune prune MODEL --out DIR: estimate group importance on calibration text, remove the
// least important groups physically, save a smaller dense HF model plus pruning.json.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/progress.h"
#include "eval/perplexity.h"
#include "importance/activation_stats.h"
#include "importance/block_influence.h"
#include "importance/flap.h"
#include "importance/importance.h"
#include "prune/allocation.h"
#include "prune/budget.h"
#include "prune/compensate.h"
#include "prune/depth.h"
#include "prune/plan.h"
#include "prune/surgery.h"
#include "report/report.h"
#include "tokenizer/tokenizer.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace llmprune::cli {
namespace {

struct PruneArgs {
  std::string model, out, strategy = "block", importance = "taylor", taylor = "element1", reduction = "sum";
  // NaN = not given (any number given, -1 included, is checked against [0, 1)).
  double ratio = std::nan(""), attn_ratio = std::nan(""), mlp_ratio = std::nan("");
  std::string attn_layers, mlp_layers, layers;
  bool global = false, force = false, json = false;
  int iterative_steps = 1, round_to = 1, drop_layers = -1, drop_sublayers = -1, shortlist = 0;
  std::string gqa_unit = "kv-group";
  std::string calib, calib_sampling = "random", save_importance, report;
  int calib_samples = 10, calib_seq_len = 64;
  uint64_t seed = 0;
  std::string max_memory, activations = "auto", compute = "fp32";
  // Activation statistics (FLAP scores, compensation): their own, larger calibration set.
  std::string flap_metric = "wifv", allocation = "uniform", layer_ratios, compensate = "none", stat_calib;
  double min_ratio = std::nan(""), damping = 0.01;
  int stat_samples = 1024, stat_seq_len = 128;
};

json unit_json(const Group& g, double score) {
  return {{"layer", g.layer}, {"kind", unit_kind_name(g.kind)}, {"index", g.index}, {"score", score}};
}

// pruning.json's parameter figures before / after.
void put_param_counts(json& pj, const ParamCounts& before, const ParamCounts& after) {
  pj["params_before"] = before.total;
  pj["params_after"] = after.total;
  pj["fraction_removed"] = 1.0 - double(after.total) / double(before.total);
  pj["params_by_role_before"] = {{"embed", before.embed}, {"lm_head", before.lm_head}, {"attention", before.attention}, {"mlp", before.mlp}, {"norms", before.norms}};
  pj["params_by_role_after"] = {{"embed", after.embed}, {"lm_head", after.lm_head}, {"attention", after.attention}, {"mlp", after.mlp}, {"norms", after.norms}};
}

// pruning.json's "layers" as the per-layer table prune prints.
void print_layer_table(const json& layers) {
  std::printf("\n layer  heads        kv_heads     mlp_width\n");
  for (auto& row : layers)
    std::printf(" %5d  %3d -> %-4d  %3d -> %-4d  %5d -> %-5d%s\n", row["layer"].get<int>(), row["heads_before"].get<int>(),
                row["heads_after"].get<int>(), row["kv_heads_before"].get<int>(), row["kv_heads_after"].get<int>(),
                row["mlp_before"].get<int>(), row["mlp_after"].get<int>(), row.contains("removed") ? "  (layer removed)" : "");
}

// The statistics windows (--stat-samples x --stat-seq-len of --stat-calib or --calib).
std::vector<int32_t> statistics_windows(const PruneArgs& a, const Model& m, const std::string& what) {
  const std::string& stat_file = a.stat_calib.empty() ? a.calib : a.stat_calib;
  if (stat_file.empty()) throw UserError(what + " needs --calib FILE (calibration text)");
  if (a.stat_seq_len > m.cfg.max_pos)
    throw UserError("--stat-seq-len " + std::to_string(a.stat_seq_len) + " exceeds the model's context of " + std::to_string(m.cfg.max_pos));
  auto tok = load_tokenizer(model_dir_of(a.model));
  auto stream = tokenize_file_with_bos(*tok, stat_file);
  if (int64_t(stream.size()) < int64_t(a.stat_samples) * a.stat_seq_len)
    throw input_error(stat_file, "has " + std::to_string(stream.size()) + " tokens, fewer than --stat-samples x --stat-seq-len = " +
                                   std::to_string(int64_t(a.stat_samples) * a.stat_seq_len));
  CalibOptions co;
  co.samples = a.stat_samples;
  co.seq_len = a.stat_seq_len;
  co.random = a.calib_sampling == "random";
  co.seed = a.seed;
  return calibration_windows(stream, co, stat_file);
}

// --strategy sublayer: BlockPruner's greedy removal of attention / MLP sub-blocks by calibration
// perplexity (--importance ppl), or their one-shot ranking by Block Influence (--importance bi).
void run_sublayer_prune(const PruneArgs& a) {
  auto t0 = std::chrono::steady_clock::now();
  const bool by_ppl = a.importance == "ppl";
  const double ratio = std::isnan(a.ratio) ? 0.0 : a.ratio;
  if (ratio == 0 && a.drop_sublayers < 0) throw UserError("nothing to prune: give --ratio (fraction of all parameters) or --drop-sublayers N");
  if (ratio > 0 && a.drop_sublayers >= 0) throw UserError("give either --ratio or --drop-sublayers, not both");
  if (!std::isnan(a.attn_ratio) || !std::isnan(a.mlp_ratio) || a.drop_layers >= 0)
    throw UserError("--strategy sublayer takes --ratio or --drop-sublayers (not --attn-ratio, --mlp-ratio, --drop-layers)");
  if (a.shortlist > 0 && !by_ppl) throw UserError("--shortlist narrows the perplexity search: it needs --importance ppl");
  if (a.iterative_steps != 1) throw UserError("--strategy sublayer is greedy already: leave --iterative-steps 1");
  if (a.compensate != "none") throw UserError("--compensate refits pruned o_proj/down_proj columns: it needs --strategy block");
  Model m = Model::load(a.model);
  const int L = m.cfg.n_layer;
  LayerRange range = parse_layer_range(a.layers, "--layers", L);
  if (fs::exists(a.out) && !a.force) throw UserError(a.out + ": output already exists (use --force to replace it)");
  std::vector<int32_t> tokens = statistics_windows(a, m, "--strategy sublayer");
  SublayerSearchOptions so;
  so.criterion = by_ppl ? SublayerCriterion::Perplexity : SublayerCriterion::BlockInfluence;
  so.remove = a.drop_sublayers;
  so.param_ratio = ratio;
  so.shortlist = a.shortlist;
  so.candidate_layers.assign(size_t(L), 0);
  for (int l = 0; l < L; l++) so.candidate_layers[size_t(l)] = range.contains(l, L);
  SublayerSearch found = search_sublayers(m, tokens, a.stat_samples, a.stat_seq_len, so);
  std::vector<Sublayer> gone;
  json removed = json::array(), importance = json::array();
  for (size_t k = 0; k < found.steps.size(); k++) {
    const SublayerStep& st = found.steps[k];
    gone.push_back(st.removed);
    json u = {{"layer", st.removed.layer}, {"kind", sublayer_kind_name(st.removed.attention)}, {"index", 0},
              {"step", int(k) + 1}, {"calib_ppl", st.calib_ppl}, {"score", by_ppl ? st.calib_ppl : st.bi}};
    if (by_ppl) u["candidates_scored"] = st.evaluated;
    removed.push_back(u);
    for (auto& [c, ppl] : st.candidates)
      importance.push_back({{"layer", c.layer}, {"kind", sublayer_kind_name(c.attention)}, {"index", 0}, {"step", int(k) + 1},
                            {"score", ppl}});
  }
  std::vector<int> kept;
  Model pruned = remove_sublayers(m, gone, &kept);
  auto t_save = std::chrono::steady_clock::now();
  AtomicDir out(a.out, a.force);
  save_model_files(pruned, out.path(), m.storage_dtype(), model_dir_of(a.model));
  const double save_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_save).count();
  const ParamCounts before = count_params(m), after = count_params(pruned);
  json layers = json::array();
  for (int l = 0; l < L; l++) {
    const LayerConfig& b = m.cfg.layers[size_t(l)];
    auto it = std::find(kept.begin(), kept.end(), l);
    const LayerConfig c = it == kept.end() ? LayerConfig{} : pruned.cfg.layers[size_t(it - kept.begin())];
    json row = {{"layer", l}, {"heads_before", b.n_head}, {"kv_heads_before", b.n_kv_head}, {"mlp_before", b.d_ff},
                {"heads_after", c.n_head}, {"kv_heads_after", c.n_kv_head}, {"mlp_after", c.d_ff}};
    if (it == kept.end()) row["removed"] = true;
    row["attn_ratio"] = b.n_head ? 1.0 - double(c.n_head) / double(b.n_head) : 0.0;
    row["mlp_ratio"] = b.d_ff ? 1.0 - double(c.d_ff) / double(b.d_ff) : 0.0;
    layers.push_back(row);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  json pj;
  pj["llmprune_version"] = LLMPRUNE_VERSION;
  pj["source_model"] = a.model;
  pj["settings"] = {{"strategy", a.strategy}, {"importance", a.importance}, {"criterion", by_ppl ? "blockpruner-ppl" : "bi"},
                    {"ratio", ratio}, {"drop_sublayers", a.drop_sublayers}, {"shortlist", a.shortlist},
                    {"layers", a.layers.empty() ? "0:" + std::to_string(L) : a.layers},
                    {"stat_calib", a.stat_calib.empty() ? a.calib : a.stat_calib}, {"stat_samples", a.stat_samples},
                    {"stat_seq_len", a.stat_seq_len}, {"calib_sampling", a.calib_sampling}, {"seed", a.seed}};
  pj["removed"] = removed;
  pj["layers"] = layers;
  pj["hidden_before"] = m.cfg.hidden;
  pj["hidden_after"] = pruned.cfg.hidden;
  put_param_counts(pj, before, after);
  pj["calib_ppl_before"] = found.base_ppl;
  pj["calib_ppl_after"] = found.steps.empty() ? found.base_ppl : found.steps.back().calib_ppl;
  pj["search_seconds"] = found.seconds;
  pj["save_seconds"] = save_seconds;
  pj["seconds"] = secs;
  pj["peak_rss_bytes"] = peak_rss_bytes();
  atomic_write_file(out.path() / "pruning.json", pj.dump(2) + "\n");
  atomic_write_file(out.path() / "importance.json", importance.dump(1) + "\n");
  if (!a.save_importance.empty()) atomic_write_file(a.save_importance, importance.dump(1) + "\n");
  out.commit();
  if (!a.report.empty()) write_report({a.out}, a.report);
  if (a.json) {
    std::cout << pj.dump(2) << "\n";
    return;
  }
  std::printf("pruned %s -> %s (sublayer, %s)\n", a.model.c_str(), a.out.c_str(),
              by_ppl ? "BlockPruner: greedy by calibration perplexity" : "Block Influence, one shot");
  std::printf("\n step  removed          calib ppl%s\n", by_ppl ? "  candidates" : "  BI");
  std::printf("    0  -             %10.4f\n", found.base_ppl);
  for (size_t k = 0; k < found.steps.size(); k++) {
    const SublayerStep& st = found.steps[k];
    const std::string what = std::string("layer ") + std::to_string(st.removed.layer) + " " + sublayer_kind_name(st.removed.attention);
    if (by_ppl) std::printf(" %4zu  %-13s %10.4f  %10d\n", k + 1, what.c_str(), st.calib_ppl, st.evaluated);
    else std::printf(" %4zu  %-13s %10.4f  %.5f\n", k + 1, what.c_str(), st.calib_ppl, st.bi);
  }
  print_layer_table(layers);
  std::printf("\nparameters %s -> %s (%.2f%% removed)\n", format_count(double(before.total)).c_str(),
              format_count(double(after.total)).c_str(), 100.0 * (1.0 - double(after.total) / double(before.total)));
  std::printf("time %.1fs (search %.1fs), peak memory %s\n", secs, found.seconds, human_bytes(double(peak_rss_bytes())).c_str());
}

void run_prune(const PruneArgs& a) {
  auto t0 = std::chrono::steady_clock::now();
  if (a.json) Progress::set_enabled(false);
  if (a.out.empty()) throw UserError("--out DIR is required");
  if (a.activations != "auto" && a.activations != "keep" && a.activations != "recompute")
    throw UserError("--activations must be auto, keep or recompute");
  auto check_ratio = [](double r, const char* flag) {
    if (!std::isnan(r) && !(r >= 0 && r < 1)) throw UserError(std::string(flag) + " must be in [0, 1)");
  };
  check_ratio(a.ratio, "--ratio");
  check_ratio(a.attn_ratio, "--attn-ratio");
  check_ratio(a.mlp_ratio, "--mlp-ratio");
  if (a.iterative_steps < 1) throw UserError("--iterative-steps must be at least 1");
  if (a.round_to < 1) throw UserError("--round-to must be at least 1");
  if (a.calib_samples <= 0) throw UserError("--calib-samples must be positive");
  if (a.calib_seq_len < 2) throw UserError("--calib-seq-len must be at least 2");
  if (a.calib_sampling != "random" && a.calib_sampling != "sequential")
    throw UserError("--calib-sampling must be random or sequential");
  if (a.shortlist < 0) throw UserError("--shortlist must be >= 0 (0 scores every candidate)");
  if (a.drop_sublayers >= 0 && a.strategy != "sublayer") throw UserError("--drop-sublayers needs --strategy sublayer");
  if (a.importance == "ppl" && a.strategy != "sublayer")
    throw UserError("--importance ppl (BlockPruner's search) removes sub-blocks: use --strategy sublayer");
  if (a.importance == "bi" && a.strategy != "layer" && a.strategy != "sublayer")
    throw UserError("--importance bi (Block Influence) scores layers or sub-blocks: use --strategy layer or sublayer");
  if (a.strategy == "sublayer") {
    if (a.importance != "ppl" && a.importance != "bi")
      throw UserError("--strategy sublayer takes --importance ppl (BlockPruner) or bi (Block Influence)");
    if (a.stat_samples <= 0) throw UserError("--stat-samples must be positive");
    if (a.stat_seq_len < 2) throw UserError("--stat-seq-len must be at least 2");
    run_sublayer_prune(a);
    return;
  }
  ImportanceOptions io;
  const bool flap = a.importance == "flap";  // activation statistics, no gradients
  const bool bi = a.importance == "bi";      // ShortGPT's Block Influence: one forward pass
  // flap: no gradient pass (the memory estimate counts it as a magnitude criterion).
  io.criterion = flap || bi ? Criterion::L1 : parse_criterion(a.importance, a.taylor);
  const bool grads = !flap && !bi && needs_gradients(io.criterion);
  const std::string criterion = flap ? "flap-" + a.flap_metric : bi ? "bi" : criterion_name(io.criterion);
  const FlapMetric flap_metric = parse_flap_metric(a.flap_metric);
  const Compensation compensation = parse_compensation(a.compensate);
  AllocationOptions alloc;
  alloc.allocation = parse_allocation(a.allocation);
  if (!(a.damping > 0)) throw UserError("--damping must be > 0");
  if (a.stat_samples <= 0) throw UserError("--stat-samples must be positive");
  if (a.stat_seq_len < 2) throw UserError("--stat-seq-len must be at least 2");
  if (!std::isnan(a.min_ratio)) check_ratio(a.min_ratio, "--min-ratio");
  const bool needs_stats = flap || bi || compensation != Compensation::None;
  if ((flap || compensation != Compensation::None) && a.strategy != "block")
    throw UserError("--importance flap and --compensate work on heads and MLP channels: use --strategy block");
  if (alloc.allocation == Allocation::Adaptive && !flap)
    throw UserError("--allocation adaptive needs --importance flap (it compares standardized activation scores)");
  if ((alloc.allocation == Allocation::Adaptive || compensation != Compensation::None) && a.iterative_steps != 1)
    throw UserError("--allocation adaptive and --compensate take --iterative-steps 1");
  if (alloc.allocation != Allocation::Uniform && !a.layer_ratios.empty())
    throw UserError("--layer-ratios sets the per-layer ratios itself: leave --allocation uniform");
  if (alloc.allocation != Allocation::Uniform && (!std::isnan(a.attn_ratio) || !std::isnan(a.mlp_ratio)))
    throw UserError("--allocation " + a.allocation + " takes one --ratio (not --attn-ratio / --mlp-ratio)");
  io.reduction = parse_reduction(a.reduction);
  io.seed = a.seed;
  io.compute = parse_compute(a.compute);
  PlanOptions po;
  po.strategy = parse_strategy(a.strategy);
  po.global = a.global;
  po.round_to = a.round_to;
  if (a.gqa_unit == "kv-group") po.gqa_unit = GqaUnit::KvGroup;
  else if (a.gqa_unit == "query") po.gqa_unit = GqaUnit::Query;
  else throw UserError("--gqa-unit must be kv-group or query");
  double base = std::isnan(a.ratio) ? 0.0 : a.ratio;
  po.attn_ratio = std::isnan(a.attn_ratio) ? base : a.attn_ratio;
  po.mlp_ratio = std::isnan(a.mlp_ratio) ? base : a.mlp_ratio;
  po.channel_ratio = base;
  po.layer_ratio = base;
  po.drop_layers = a.drop_layers;
  alloc.ratio = base;
  alloc.min_ratio = std::isnan(a.min_ratio) ? -1 : a.min_ratio;
  if (po.strategy == Strategy::Block && po.attn_ratio == 0 && po.mlp_ratio == 0)
    throw UserError("nothing to prune: give --ratio (or --attn-ratio / --mlp-ratio)");
  if (po.strategy != Strategy::Block && base == 0 && a.drop_layers < 0) throw UserError("nothing to prune: give --ratio");

  const double budget = a.max_memory.empty() ? 0 : parse_byte_size(a.max_memory, "--max-memory");
  auto since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  };
  Model original = Model::load(a.model);
  // Stream the weights: each layer's file pages leave RSS once converted (docs/scale.md).
  original.release_pages = true;
  const double load_seconds = since(t0);
  const int L = original.cfg.n_layer;
  po.attn_layers = parse_layer_range(a.attn_layers, "--attn-layers", L);
  po.mlp_layers = parse_layer_range(a.mlp_layers, "--mlp-layers", L);
  po.block_layers = parse_layer_range(a.layers, "--layers", L);
  if (!a.layer_ratios.empty()) alloc.layer_ratios = parse_layer_ratios(a.layer_ratios, L);
  if (fs::exists(a.out) && !a.force) throw UserError(a.out + ": output already exists (use --force to replace it)");

  // Calibration windows (only the gradient criteria read them).
  std::vector<int32_t> calib;
  if (grads) {
    if (a.calib.empty()) throw UserError("--importance taylor needs --calib FILE (calibration text)");
    if (a.calib_seq_len > original.cfg.max_pos)
      throw UserError("--calib-seq-len " + std::to_string(a.calib_seq_len) + " exceeds the model's context of " + std::to_string(original.cfg.max_pos));
    auto tok = load_tokenizer_for_model(model_dir_of(a.model));
    auto stream = tokenize_file_with_bos(*tok, a.calib);
    CalibOptions co;
    co.file = a.calib;
    co.samples = a.calib_samples;
    co.seq_len = a.calib_seq_len;
    co.random = a.calib_sampling == "random";
    co.seed = a.seed;
    calib = calibration_windows(stream, co, a.calib);
  }

  // Statistics windows (FLAP scores, compensation): --stat-samples x --stat-seq-len.
  std::vector<int32_t> stat_tokens;
  if (needs_stats)
    stat_tokens = statistics_windows(a, original, flap ? "--importance flap" : bi ? "--importance bi" : "--compensate");

  std::vector<double> layer_ratio_plan;  // the per-layer ratios of log-increasing / --layer-ratios
  KeepTargets targets;
  if (alloc.allocation != Allocation::Adaptive) targets = allocation_keep_targets(original, po, alloc, {}, nullptr, &layer_ratio_plan);
  double stats_seconds = 0;
  Model current = original;
  json removed = json::array(), importance_dump = json::array();
  double calib_loss = 0;
  std::vector<int> layer_ids(static_cast<size_t>(L));  // current layer -> original layer index
  for (int l = 0; l < L; l++) layer_ids[size_t(l)] = l;
  MemoryEstimate mem;
  double importance_seconds = 0, grad_flops = 0;
  std::vector<Group> final_chosen;  // the last step's removals, applied while saving
  Progress prog("prune", a.iterative_steps, "step");
  for (int step = 1; step <= a.iterative_steps; step++) {
    auto all = discover_groups(current, plan_group_options(po));
    std::vector<Group> groups;
    for (auto& g : all)
      if (plan_targets(po, g, int(current.cfg.layers.size()))) groups.push_back(std::move(g));
    if (groups.empty()) throw UserError("the plan targets no prunable structure (check the layer ranges and ratios)");
    // As the scoring sink decides: hidden-channel members need the embedding / lm_head
    // gradients; only layers with a scored member need weight gradients.
    bool global_grads = false;
    std::vector<uint8_t> layer_grads(current.layers.size(), 0);
    for (auto& g : groups)
      for (auto& mem_ : g.members) {
        if (!mem_.scores) continue;
        if (mem_.layer < 0) global_grads = true;
        else layer_grads[size_t(mem_.layer)] = 1;
      }
    if (step == 1) {
      PruneShape shape{io.criterion, a.calib_samples, a.calib_seq_len, global_grads, groups.size(), layer_grads, false, io.compute};
      auto check = [&](const MemoryEstimate& e) {
        if (budget > 0 && e.total > budget)
          throw UserError("estimated peak memory " + e.describe() + " exceeds --max-memory " + a.max_memory + " (" +
                          human_bytes(budget) + "); lower --calib-samples / --calib-seq-len or raise the budget");
      };
      mem = estimate_prune_memory(current, shape);
      check(mem);
      // Faster when it fits (the budget, or half the RAM without one): keep every layer's
      // activations for the backward instead of recomputing them.
      shape.keep_activations = true;
      MemoryEstimate keep = estimate_prune_memory(current, shape);
      const bool fits = keep.total <= (budget > 0 ? budget : 0.5 * physical_memory_bytes());
      if (grads && (a.activations == "keep" || (a.activations == "auto" && fits))) {
        check(keep);
        io.keep_activations = true;
        mem = keep;
      }
    }
    ImportanceResult imp;
    if (flap) {
      auto ts = std::chrono::steady_clock::now();
      auto stats = collect_activation_stats(current, stat_tokens, a.stat_samples, a.stat_seq_len);
      FlapScores fs = flap_scores(current, groups, stats, flap_metric);
      imp.scores = fs.raw;
      imp.seconds = since(ts);
      stats_seconds += imp.seconds;
      if (alloc.allocation == Allocation::Adaptive) targets = allocation_keep_targets(current, po, alloc, groups, &fs.standardized);
    } else if (bi) {
      // Layer groups: the layer with the lowest Block Influence goes first.
      BlockInfluence b = block_influence(current, stat_tokens, a.stat_samples, a.stat_seq_len);
      for (const Group& g : groups) imp.scores.push_back(b.layer[size_t(g.index)]);
      imp.seconds = b.seconds;
      stats_seconds += imp.seconds;
    } else {
      imp = estimate_importance(current, groups, io, calib, a.calib_samples, a.calib_seq_len);
    }
    importance_seconds += imp.seconds;
    if (grads) grad_flops += gradient_flops(current, a.calib_samples, a.calib_seq_len, global_grads, layer_grads, io.keep_activations);
    if (step == 1) calib_loss = imp.calib_loss;
    for (size_t i = 0; i < groups.size(); i++) {
      Group g = groups[i];
      if (g.layer >= 0) g.layer = layer_ids[size_t(g.layer)];
      json u = unit_json(g, imp.scores[i]);
      if (a.iterative_steps > 1) u["step"] = step;
      importance_dump.push_back(u);
    }
    auto pick = select_removals(current, groups, imp.scores, po, targets, step, a.iterative_steps);
    std::vector<Group> chosen;
    for (size_t i : pick) {
      chosen.push_back(groups[i]);
      Group g = groups[i];
      if (g.layer >= 0) g.layer = layer_ids[size_t(g.layer)];
      if (g.kind == UnitKind::Layer) g.index = layer_ids[size_t(groups[i].index)];
      json u = unit_json(g, imp.scores[i]);
      if (a.iterative_steps > 1) u["step"] = step;
      removed.push_back(u);
    }
    if (po.strategy == Strategy::Layer) {
      std::vector<int> kept;
      for (int l = 0; l < int(layer_ids.size()); l++) {
        bool gone = false;
        for (auto& g : chosen) gone = gone || g.layer == l;
        if (!gone) kept.push_back(layer_ids[size_t(l)]);
      }
      layer_ids = kept;
    }
    if (step == a.iterative_steps) {
      final_chosen = chosen;
    } else if (!chosen.empty()) {
      // Streaming surgery for intermediate steps too: write the pruned model to a scratch
      // directory and go on with its mapping (the files vanish with `scratch`, the mapping stays).
      AtomicDir scratch(fs::path(a.out).string() + ".step", true);
      save_pruned(current, chosen, scratch.path(), current.storage_dtype(), {});
      current = Model::load_unfinished(scratch.path());
      current.release_pages = true;
    }
    prog.add(1);
  }
  prog.finish();

  // Save atomically: temp dir, then rename. The last step's surgery streams into the writer.
  auto t_save = std::chrono::steady_clock::now();
  AtomicDir out(a.out, a.force);
  json compensation_json;
  double compensation_seconds = 0;
  if (compensation != Compensation::None && !final_chosen.empty()) {
    // The refit needs the pruned layers in memory (remove_groups), not the streaming surgery.
    CompensationOptions co;
    co.mode = compensation;
    co.damping = a.damping;
    CompensatedModel cm = compensate_pruned(current, final_chosen, stat_tokens, a.stat_samples, a.stat_seq_len, co);
    compensation_seconds = cm.seconds;
    compensation_json = json::array();
    for (size_t l = 0; l < cm.layers.size(); l++) {
      json row = {{"layer", layer_ids[l]}};
      for (auto [name, f] : {std::pair{"o_proj", &cm.layers[l].o}, std::pair{"down_proj", &cm.layers[l].down}})
        if (f->pruned)
          row[name] = {{"rel_error_plain", f->energy > 0 ? f->err_plain / f->energy : 0.0},
                       {"rel_error_compensated", f->energy > 0 ? f->err_refit / f->energy : 0.0}};
      compensation_json.push_back(row);
    }
    save_model_files(cm.model, out.path(), current.storage_dtype(), model_dir_of(a.model));
    current = Model::load_unfinished(out.path());
  } else if (!final_chosen.empty()) {
    save_pruned(current, final_chosen, out.path(), current.storage_dtype(), model_dir_of(a.model));
    current = Model::load_unfinished(out.path());  // the result, mapped (for the figures below)
  } else {
    save_model_files(current, out.path(), current.storage_dtype(), model_dir_of(a.model));
  }
  const double save_seconds = since(t_save);
  ParamCounts before = count_params(original), after = count_params(current);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  json pj;
  pj["llmprune_version"] = LLMPRUNE_VERSION;
  pj["source_model"] = a.model;
  pj["settings"] = {{"strategy", a.strategy}, {"importance", a.importance}, {"taylor", a.taylor}, {"criterion", criterion},
                    {"group_reduction", a.reduction}, {"attn_ratio", po.attn_ratio}, {"mlp_ratio", po.mlp_ratio},
                    {"ratio", base}, {"attn_layers", a.attn_layers.empty() ? "0:" + std::to_string(L) : a.attn_layers},
                    {"mlp_layers", a.mlp_layers.empty() ? "0:" + std::to_string(L) : a.mlp_layers}, {"global", a.global},
                    {"iterative_steps", a.iterative_steps}, {"round_to", a.round_to}, {"gqa_unit", a.gqa_unit},
                    {"calib", a.calib}, {"calib_samples", a.calib_samples}, {"calib_seq_len", a.calib_seq_len},
                    {"calib_sampling", a.calib_sampling}, {"seed", a.seed}, {"allocation", a.allocation},
                    {"compensate", a.compensate}};
  if (flap) pj["settings"]["flap_metric"] = a.flap_metric;
  if (bi) pj["statistics_seconds"] = stats_seconds;
  if (needs_stats) {
    pj["settings"]["stat_calib"] = a.stat_calib.empty() ? a.calib : a.stat_calib;
    pj["settings"]["stat_samples"] = a.stat_samples;
    pj["settings"]["stat_seq_len"] = a.stat_seq_len;
  }
  if (compensation_has_lstsq(compensation)) pj["settings"]["damping"] = a.damping;
  if (!layer_ratio_plan.empty()) pj["settings"]["layer_ratios"] = layer_ratio_plan;
  pj["removed"] = removed;
  json layers = json::array();
  for (int l = 0; l < L; l++) {
    const LayerConfig& b = original.cfg.layers[size_t(l)];
    json row = {{"layer", l}, {"heads_before", b.n_head}, {"kv_heads_before", b.n_kv_head}, {"mlp_before", b.d_ff}};
    auto it = std::find(layer_ids.begin(), layer_ids.end(), l);
    if (it == layer_ids.end()) {
      row["removed"] = true;
      row["heads_after"] = 0;
      row["kv_heads_after"] = 0;
      row["mlp_after"] = 0;
    } else {
      const LayerConfig& c = current.cfg.layers[size_t(it - layer_ids.begin())];
      row["heads_after"] = c.n_head;
      row["kv_heads_after"] = c.n_kv_head;
      row["mlp_after"] = c.d_ff;
    }
    // The ratio each layer got (adaptive / log-increasing allocations differ per layer).
    row["attn_ratio"] = 1.0 - row["heads_after"].get<double>() / double(b.n_head);
    row["mlp_ratio"] = 1.0 - row["mlp_after"].get<double>() / double(b.d_ff);
    layers.push_back(row);
  }
  pj["layers"] = layers;
  pj["hidden_before"] = original.cfg.hidden;
  pj["hidden_after"] = current.cfg.hidden;
  put_param_counts(pj, before, after);
  pj["calib_loss"] = calib_loss;
  pj["seconds"] = secs;
  pj["peak_rss_bytes"] = peak_rss_bytes();
  pj["memory_estimate"] = mem.to_json();
  if (budget > 0) pj["max_memory_bytes"] = int64_t(budget);
  pj["activations"] = io.keep_activations ? "kept" : "recomputed";
  pj["compute"] = kernels::compute_name(io.compute);
  pj["load_seconds"] = load_seconds;
  pj["importance_seconds"] = importance_seconds;
  pj["save_seconds"] = save_seconds;
  if (flap) pj["statistics_seconds"] = stats_seconds;
  if (!compensation_json.is_null()) {
    pj["compensation"] = compensation_json;
    pj["compensation_seconds"] = compensation_seconds;
  }
  if (grad_flops > 0) {
    pj["gradient_flops"] = grad_flops;
    pj["gradient_gflops_per_s"] = importance_seconds > 0 ? grad_flops / importance_seconds / 1e9 : 0.0;
  }
  atomic_write_file(out.path() / "pruning.json", pj.dump(2) + "\n");
  // Every candidate's score, always: `llmprune report` plots the distributions from it.
  atomic_write_file(out.path() / "importance.json", importance_dump.dump(1) + "\n");
  if (!a.save_importance.empty()) atomic_write_file(a.save_importance, importance_dump.dump(1) + "\n");
  out.commit();
  if (!a.report.empty()) write_report({a.out}, a.report);

  if (a.json) {
    std::cout << pj.dump(2) << "\n";
    return;
  }
  std::printf("pruned %s -> %s (%s, %s, reduction %s)\n", a.model.c_str(), a.out.c_str(), a.strategy.c_str(),
              criterion.c_str(), a.reduction.c_str());
  print_layer_table(layers);
  if (current.cfg.hidden != original.cfg.hidden) std::printf(" hidden %d -> %d\n", original.cfg.hidden, current.cfg.hidden);
  std::printf("\nparameters %s -> %s (%.2f%% removed)\n", format_count(double(before.total)).c_str(),
              format_count(double(after.total)).c_str(), 100.0 * (1.0 - double(after.total) / double(before.total)));
  std::printf("time %.1fs, peak memory %s\n", secs, human_bytes(double(peak_rss_bytes())).c_str());
  std::printf("memory estimate %s\n", mem.describe().c_str());
  if (grad_flops > 0)
    std::printf("importance %.1fs (%.1f GFLOP/s over %.2f TFLOP of gradient passes, %s, activations %s), save %.1fs\n",
                importance_seconds, grad_flops / importance_seconds / 1e9, grad_flops / 1e12, kernels::compute_name(io.compute),
                io.keep_activations ? "kept" : "recomputed", save_seconds);
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
