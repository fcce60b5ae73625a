#include "prune/allocation.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <sstream>

#include "core/error.h"
#include "core/names.h"

namespace llmprune {

namespace {
constexpr NameTable<Allocation, 4> kAllocationNames{{{Allocation::Uniform, "uniform"},
                                                    {Allocation::Global, "global"},
                                                    {Allocation::Adaptive, "adaptive"},
                                                    {Allocation::LogIncreasing, "log-increasing"}}};
}  // namespace

Allocation parse_allocation(const std::string& s) { return parse_name(kAllocationNames, s, "--allocation"); }

std::string allocation_name(Allocation a) { return name_of(kAllocationNames, a); }

std::vector<double> log_increasing_ratios(int n, double ratio, double min_ratio) {
  if (n <= 0) return {};
  if (!(min_ratio >= 0 && min_ratio <= ratio))
    throw UserError("--min-ratio must be in [0, --ratio] for --allocation log-increasing");
  std::vector<double> shape(size_t(n), 1.0);  // ln(1+l)/ln(n): 0 at the first layer, 1 at the last
  if (n > 1)
    for (int l = 0; l < n; l++) shape[size_t(l)] = std::log(1.0 + l) / std::log(double(n));
  const double mean_shape = std::accumulate(shape.begin(), shape.end(), 0.0) / double(n);
  const double max_ratio = min_ratio + (ratio - min_ratio) / mean_shape;
  if (!(max_ratio < 1))
    throw UserError("--allocation log-increasing: --ratio " + std::to_string(ratio) + " with --min-ratio " +
                    std::to_string(min_ratio) + " needs a last-layer ratio of " + std::to_string(max_ratio) +
                    " (>= 1); lower --ratio or raise --min-ratio");
  std::vector<double> r(static_cast<size_t>(n));
  for (int l = 0; l < n; l++) r[size_t(l)] = min_ratio + (max_ratio - min_ratio) * shape[size_t(l)];
  return r;
}

std::vector<double> parse_layer_ratios(const std::string& s, int n_layers) {
  std::vector<double> r;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(item, &used);
    } catch (const std::logic_error&) {
      used = 0;
    }
    if (used == 0 || used != item.size()) throw UserError("--layer-ratios: '" + item + "' is not a number");
    if (!(v >= 0 && v < 1)) throw UserError("--layer-ratios: " + item + " is not in [0, 1)");
    r.push_back(v);
  }
  if (int(r.size()) != n_layers)
    throw UserError("--layer-ratios has " + std::to_string(r.size()) + " values; the model has " + std::to_string(n_layers) +
                    " layers");
  return r;
}

KeepTargets per_layer_keep_targets(const Model& m, const PlanOptions& o, const std::vector<double>& ratio) {
  const int L = int(m.cfg.layers.size());
  KeepTargets t;
  for (int l = 0; l < L; l++) {
    if (ratio.at(size_t(l)) <= 0) continue;
    PlanOptions one = o;  // this layer alone, at its ratio
    one.global = false;
    one.attn_ratio = o.attn_ratio > 0 && o.attn_layers.contains(l, L) ? ratio[size_t(l)] : 0;
    one.mlp_ratio = o.mlp_ratio > 0 && o.mlp_layers.contains(l, L) ? ratio[size_t(l)] : 0;
    one.attn_layers = one.mlp_layers = LayerRange{l, l + 1};
    KeepTargets lt = plan_keep_targets(m, one);
    t.start.insert(t.start.end(), lt.start.begin(), lt.start.end());
    t.keep.insert(t.keep.end(), lt.keep.begin(), lt.keep.end());
  }
  return t;
}

KeepTargets adaptive_keep_targets(const Model& m, const PlanOptions& o, const std::vector<Group>& groups,
                                  const std::vector<double>& z, double ratio) {
  if (groups.size() != z.size()) throw RuntimeError("internal: one standardized score per group expected");
  std::vector<double> cost(groups.size());
  double total = 0;
  for (size_t i = 0; i < groups.size(); i++) {
    double c = 0;
    for (const Member& mem : groups[i].members) c += double(member_numel(m, mem));
    cost[i] = c;
    total += c;
  }
  std::vector<size_t> order(groups.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return z[a] > z[b]; });
  // The sorted position whose cumulated cost is closest to the kept budget (FLAP: argmin |cumsum - keep|).
  const double budget = total * (1.0 - ratio);
  double cum = 0, best = INFINITY, threshold = INFINITY;
  for (size_t i : order) {
    cum += cost[i];
    if (std::abs(cum - budget) < best) best = std::abs(cum - budget), threshold = z[i];
  }
  std::map<long, std::pair<int, int>> count;  // key -> (units, kept)
  std::map<long, int> layer_of;
  for (size_t i = 0; i < groups.size(); i++) {
    const long key = keep_target_key(groups[i].kind, groups[i].layer);
    count[key].first++;
    count[key].second += z[i] > threshold ? 1 : 0;
    layer_of[key] = groups[i].layer;
  }
  KeepTargets t;
  for (auto& [key, c] : count) {
    int keep = std::max(1, c.second);
    const UnitKind kind = UnitKind(key / 1000000L);
    const LayerConfig& lc = m.cfg.layers.at(size_t(layer_of[key]));
    if (kind == UnitKind::Head && lc.n_kv_head < lc.n_head) {
      // Query heads under GQA: the same number in every KV group, at least one each.
      const int kv = lc.n_kv_head;
      keep = std::max(kv, (keep + kv - 1) / kv * kv);
    }
    if (kind == UnitKind::Mlp && o.round_to > 1) keep = std::max(o.round_to, keep / o.round_to * o.round_to);
    keep = std::min(keep, c.first);
    t.start.push_back({key, c.first});
    t.keep.push_back({key, keep});
  }
  return t;
}

}  // namespace llmprune

namespace llmprune {

KeepTargets allocation_keep_targets(const Model& m, PlanOptions& o, const AllocationOptions& a,
                                    const std::vector<Group>& groups, const std::vector<double>* standardized,
                                    std::vector<double>* per_layer_ratio) {
  const int L = int(m.cfg.layers.size());
  std::vector<double> ratios;
  switch (a.allocation) {
    case Allocation::Uniform:
      if (a.layer_ratios.empty()) return plan_keep_targets(m, o);
      ratios = a.layer_ratios;
      break;
    case Allocation::Global:
      o.global = true;
      return plan_keep_targets(m, o);
    case Allocation::LogIncreasing:
      ratios = log_increasing_ratios(L, a.ratio, a.min_ratio < 0 ? 0.3 * a.ratio : a.min_ratio);
      break;
    case Allocation::Adaptive:
      if (!standardized) throw UserError("--allocation adaptive needs --importance flap (standardized scores)");
      return adaptive_keep_targets(m, o, groups, *standardized, a.ratio);
  }
  if (per_layer_ratio) *per_layer_ratio = ratios;
  return per_layer_keep_targets(m, o, ratios);
}

}  // namespace llmprune
