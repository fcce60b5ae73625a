// prune::run: the `prune` pipeline (prune/pipeline.h).
#include "prune/pipeline.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "core/progress.h"
#include "eval/perplexity.h"
#include "importance/activation_stats.h"
#include "importance/block_influence.h"
#include "importance/flap.h"
#include "importance/importance.h"
#include "kernels/gemm_bf16.h"
#include "prune/allocation.h"
#include "prune/budget.h"
#include "prune/calibration.h"
#include "prune/compensate.h"
#include "prune/depth.h"
#include "prune/plan.h"
#include "prune/surgery.h"
#include "tokenizer/tokenizer.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace llmprune {
namespace {

json unit_json(const Group& g, double score) {
  return {{"layer", g.layer}, {"kind", unit_kind_name(g.kind)}, {"index", g.index}, {"score", score}};
}

// The statistics windows (--stat-samples x --stat-seq-len of --stat-calib or --calib).
std::vector<int32_t> statistics_windows(const PruneSpec& a, const Model& m, const std::string& what) {
  CalibOptions co;
  co.file = a.stat_calib.empty() ? a.calib : a.stat_calib;
  if (co.file.empty()) throw UserError(what + " needs --calib FILE (calibration text)");
  co.samples = a.stat_samples;
  co.seq_len = a.stat_seq_len;
  co.random = a.calib_sampling == "random";
  co.seed = a.seed;
  co.flag = "--stat";
  return read_calibration_windows(a.model, m.cfg.max_pos, co);
}

void put_param_counts(PruneSummary& sum, const ParamCounts& before, const ParamCounts& after) {
  sum.params_before = before.total;
  sum.params_after = after.total;
  sum.by_role_before = RoleParams{before.embed, before.lm_head, before.attention, before.mlp, before.norms};
  sum.by_role_after = RoleParams{after.embed, after.lm_head, after.attention, after.mlp, after.norms};
}

// --strategy sublayer: BlockPruner's greedy removal of attention / MLP sub-blocks by calibration
// perplexity (--importance ppl), or their one-shot ranking by Block Influence (--importance bi).
// Refuses, before the pass runs, an estimate over --max-memory (`budget` bytes, 0: none);
// `flags` are the ones that shrink it.
void check_memory_budget(const MemoryEstimate& e, double budget, const std::string& max_memory, const std::string& flags) {
  if (budget > 0 && e.total > budget)
    throw UserError("estimated peak memory " + e.describe() + " exceeds --max-memory " + max_memory + " (" +
                    human_bytes(budget) + "); lower " + flags + " or raise the budget");
}

PruneSummary run_sublayer_prune(const PruneSpec& a) {
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
  SublayerSearchOptions so;
  const double budget = a.max_memory.empty() ? 0 : parse_byte_size(a.max_memory, "--max-memory");
  const MemoryEstimate mem = estimate_sublayer_search_memory(m, a.stat_samples, a.stat_seq_len, so.chunk_windows);
  check_memory_budget(mem, budget, a.max_memory, "--stat-samples / --stat-seq-len");
  std::vector<int32_t> tokens = statistics_windows(a, m, "--strategy sublayer");
  so.criterion = by_ppl ? SublayerCriterion::Perplexity : SublayerCriterion::BlockInfluence;
  so.remove = a.drop_sublayers;
  so.param_ratio = ratio;
  so.shortlist = a.shortlist;
  so.candidate_layers.assign(size_t(L), 0);
  for (int l = 0; l < L; l++) so.candidate_layers[size_t(l)] = range.contains(l, L);
  SublayerSearch found = search_sublayers(m, tokens, a.stat_samples, a.stat_seq_len, so);
  PruneSummary sum;
  std::vector<Sublayer> gone;
  json importance = json::array();
  for (size_t k = 0; k < found.steps.size(); k++) {
    const SublayerStep& st = found.steps[k];
    gone.push_back(st.removed);
    RemovedUnit u{st.removed.layer, sublayer_kind_name(st.removed.attention), 0, by_ppl ? st.calib_ppl : st.bi, int(k) + 1};
    u.calib_ppl = st.calib_ppl;
    if (by_ppl) u.candidates_scored = st.evaluated;
    sum.removed.push_back(u);
    for (auto& [c, ppl] : st.candidates)
      importance.push_back({{"layer", c.layer}, {"kind", sublayer_kind_name(c.attention)}, {"index", 0}, {"step", int(k) + 1},
                            {"score", ppl}});
  }
  std::vector<int> kept;
  Model pruned = remove_sublayers(m, gone, &kept);
  auto t_save = std::chrono::steady_clock::now();
  AtomicDir out(a.out, a.force);
  save_model_files(pruned, out.path(), m.storage_dtype(), model_dir_of(a.model));
  sum.save_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_save).count();
  for (int l = 0; l < L; l++) {
    const LayerConfig& b = m.cfg.layers[size_t(l)];
    auto it = std::find(kept.begin(), kept.end(), l);
    const LayerConfig c = it == kept.end() ? LayerConfig{} : pruned.cfg.layers[size_t(it - kept.begin())];
    sum.layers.push_back({l, b.n_head, c.n_head, b.n_kv_head, c.n_kv_head, b.d_ff, c.d_ff, it == kept.end()});
  }
  PruneSettings& st = sum.settings;
  st.strategy = a.strategy;
  st.importance = a.importance;
  st.criterion = by_ppl ? "blockpruner-ppl" : "bi";
  st.ratio = ratio;
  st.drop_sublayers = a.drop_sublayers;
  st.shortlist = a.shortlist;
  st.layers = a.layers.empty() ? "0:" + std::to_string(L) : a.layers;
  st.stat_calib = a.stat_calib.empty() ? a.calib : a.stat_calib;
  st.stat_samples = a.stat_samples;
  st.stat_seq_len = a.stat_seq_len;
  st.calib_sampling = a.calib_sampling;
  st.seed = a.seed;
  sum.llmprune_version = LLMPRUNE_VERSION;
  sum.source_model = a.model;
  sum.hidden_before = m.cfg.hidden;
  sum.hidden_after = pruned.cfg.hidden;
  put_param_counts(sum, count_params(m), count_params(pruned));
  sum.memory_estimate = mem;
  if (budget > 0) sum.max_memory_bytes = int64_t(budget);
  sum.calib_ppl_before = found.base_ppl;
  sum.calib_ppl_after = found.steps.empty() ? found.base_ppl : found.steps.back().calib_ppl;
  sum.search_seconds = found.seconds;
  sum.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  sum.peak_rss_bytes = int64_t(peak_rss_bytes());
  atomic_write_file(out.path() / "pruning.json", sum.to_json().dump(2) + "\n");
  atomic_write_file(out.path() / "importance.json", importance.dump(1) + "\n");
  if (!a.save_importance.empty()) atomic_write_file(a.save_importance, importance.dump(1) + "\n");
  out.commit();
  return sum;
}

}  // namespace

namespace prune {

PruneSummary run(const PruneSpec& a) {
  auto t0 = std::chrono::steady_clock::now();
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
    return run_sublayer_prune(a);
  }
  ImportanceOptions io;
  const bool flap = a.importance == "flap";  // activation statistics, no gradients
  // flap: no gradient pass (the memory estimate counts it as a magnitude criterion).
  const bool bi = a.importance == "bi";      // ShortGPT's Block Influence: one forward pass
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
  io.compute = kernels::parse_compute(a.compute);
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
  auto check_budget = [&](const MemoryEstimate& e, const std::string& flags) { check_memory_budget(e, budget, a.max_memory, flags); };
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
    CalibOptions co;
    co.file = a.calib;
    co.samples = a.calib_samples;
    co.seq_len = a.calib_seq_len;
    co.random = a.calib_sampling == "random";
    co.seed = a.seed;
    calib = read_calibration_windows(a.model, original.cfg.max_pos, co);
  }

  // Statistics windows (FLAP scores, compensation): --stat-samples x --stat-seq-len.
  std::vector<int32_t> stat_tokens;
  MemoryEstimate stats_mem;  // the statistics / compensation passes (prune/budget.h), checked before they run
  if (needs_stats) {
    stats_mem = estimate_statistics_memory(original, a.stat_samples, a.stat_seq_len, ActivationStatsOptions{}.chunk_windows,
                                           compensation != Compensation::None);
    check_budget(stats_mem, "--stat-samples / --stat-seq-len");
    stat_tokens = statistics_windows(a, original, flap ? "--importance flap" : bi ? "--importance bi" : "--compensate");
  }

  std::vector<double> layer_ratio_plan;  // the per-layer ratios of log-increasing / --layer-ratios
  KeepTargets targets;
  if (alloc.allocation != Allocation::Adaptive) targets = allocation_keep_targets(original, po, alloc, {}, nullptr, &layer_ratio_plan);
  double stats_seconds = 0;
  Model current = original;
  std::vector<RemovedUnit> removed;
  json importance_dump = json::array();
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
      auto check = [&](const MemoryEstimate& e) { check_budget(e, "--calib-samples / --calib-seq-len"); };
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
      ActivationStatsOptions so;
      so.compute = io.compute;
      auto stats = collect_activation_stats(current, stat_tokens, a.stat_samples, a.stat_seq_len, so);
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
      removed.push_back({g.layer, unit_kind_name(g.kind), g.index, imp.scores[i], step});
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
  PruneSummary sum;
  if (compensation != Compensation::None && !final_chosen.empty()) {
    // The refit needs the pruned layers in memory (remove_groups), not the streaming surgery.
    CompensationOptions co;
    co.mode = compensation;
    co.damping = a.damping;
    co.compute = io.compute;
    co.materialize = false;  // streamed below: save_pruned with the refitted tensors put in
    CompensatedModel cm = compensate_pruned(current, final_chosen, stat_tokens, a.stat_samples, a.stat_seq_len, co);
    sum.compensation_seconds = cm.seconds;
    for (size_t l = 0; l < cm.layers.size(); l++) {
      LayerCompensationErrors row;
      row.layer = layer_ids[l];
      for (auto [to, f] : {std::pair{&row.o_proj, &cm.layers[l].o}, std::pair{&row.down_proj, &cm.layers[l].down}})
        if (f->pruned) *to = {true, f->energy > 0 ? f->err_plain / f->energy : 0.0, f->energy > 0 ? f->err_refit / f->energy : 0.0};
      sum.compensation.push_back(row);
    }
    save_pruned(current, final_chosen, out.path(), current.storage_dtype(), model_dir_of(a.model),
                [&](Model& skeleton) { cm.apply(skeleton); });
    current = Model::load_unfinished(out.path());
  } else if (!final_chosen.empty()) {
    save_pruned(current, final_chosen, out.path(), current.storage_dtype(), model_dir_of(a.model));
    current = Model::load_unfinished(out.path());  // the result, mapped (for the figures below)
  } else {
    save_model_files(current, out.path(), current.storage_dtype(), model_dir_of(a.model));
  }
  const double save_seconds = since(t_save);
  ParamCounts before = count_params(original), after = count_params(current);
  PruneSettings& st = sum.settings;
  st.strategy = a.strategy;
  st.importance = a.importance;
  st.taylor = a.taylor;
  st.criterion = criterion;
  st.reduction = a.reduction;
  st.attn_ratio = po.attn_ratio;
  st.mlp_ratio = po.mlp_ratio;
  st.ratio = base;
  st.attn_layers = a.attn_layers.empty() ? "0:" + std::to_string(L) : a.attn_layers;
  st.mlp_layers = a.mlp_layers.empty() ? "0:" + std::to_string(L) : a.mlp_layers;
  st.global = a.global;
  st.iterative_steps = a.iterative_steps;
  st.round_to = a.round_to;
  st.gqa_unit = a.gqa_unit;
  st.calib = a.calib;
  st.calib_samples = a.calib_samples;
  st.calib_seq_len = a.calib_seq_len;
  st.calib_sampling = a.calib_sampling;
  st.seed = a.seed;
  st.allocation = a.allocation;
  st.compensate = a.compensate;
  if (flap) st.flap_metric = a.flap_metric;
  if (needs_stats) {
    st.stat_calib = a.stat_calib.empty() ? a.calib : a.stat_calib;
    st.stat_samples = a.stat_samples;
    st.stat_seq_len = a.stat_seq_len;
  }
  if (compensation_has_lstsq(compensation)) st.damping = a.damping;
  st.layer_ratios = layer_ratio_plan;
  sum.llmprune_version = LLMPRUNE_VERSION;
  sum.source_model = a.model;
  sum.removed = removed;
  for (int l = 0; l < L; l++) {
    const LayerConfig& b = original.cfg.layers[size_t(l)];
    PrunedLayer row;
    row.layer = l;
    row.heads_before = b.n_head;
    row.kv_heads_before = b.n_kv_head;
    row.mlp_before = b.d_ff;
    auto it = std::find(layer_ids.begin(), layer_ids.end(), l);
    row.removed = it == layer_ids.end();
    if (!row.removed) {
      const LayerConfig& c = current.cfg.layers[size_t(it - layer_ids.begin())];
      row.heads_after = c.n_head;
      row.kv_heads_after = c.n_kv_head;
      row.mlp_after = c.d_ff;
    }
    sum.layers.push_back(row);
  }
  sum.hidden_before = original.cfg.hidden;
  sum.hidden_after = current.cfg.hidden;
  put_param_counts(sum, before, after);
  sum.calib_loss = calib_loss;
  // The pass that peaks: the gradient pass (Taylor), or the statistics / compensation passes.
  sum.memory_estimate = needs_stats && (!grads || stats_mem.total > mem.total) ? stats_mem : mem;
  if (budget > 0) sum.max_memory_bytes = int64_t(budget);
  sum.activations = io.keep_activations ? "kept" : "recomputed";
  sum.compute = kernels::compute_name(io.compute);
  sum.load_seconds = load_seconds;
  sum.importance_seconds = importance_seconds;
  sum.save_seconds = save_seconds;
  if (flap || bi) sum.statistics_seconds = stats_seconds;
  sum.gradient_flops = grad_flops;
  sum.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  sum.peak_rss_bytes = int64_t(peak_rss_bytes());
  atomic_write_file(out.path() / "pruning.json", sum.to_json().dump(2) + "\n");
  // Every candidate's score, always: `llmprune report` plots the distributions from it.
  atomic_write_file(out.path() / "importance.json", importance_dump.dump(1) + "\n");
  if (!a.save_importance.empty()) atomic_write_file(a.save_importance, importance_dump.dump(1) + "\n");
  out.commit();
  return sum;
}

}  // namespace prune
}  // namespace llmprune
