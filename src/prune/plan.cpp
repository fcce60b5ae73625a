#include "prune/plan.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include "core/error.h"
#include "core/names.h"

namespace llmprune {

namespace {
constexpr NameTable<Strategy, 4> kStrategyNames{
    {{Strategy::Block, "block"}, {Strategy::Channel, "channel"}, {Strategy::Layer, "layer"}, {Strategy::Sublayer, "sublayer"}}};
}  // namespace

Strategy parse_strategy(const std::string& s) { return parse_name(kStrategyNames, s, "--strategy"); }

std::string strategy_name(Strategy s) { return name_of(kStrategyNames, s); }

LayerRange parse_layer_range(const std::string& s, const std::string& flag, int n_layers) {
  LayerRange r;
  if (s.empty() || s == ":") return r;
  auto colon = s.find(':');
  if (colon == std::string::npos) throw UserError(flag + " '" + s + "' must look like A:B (0-based, end-exclusive)");
  try {
    std::string a = s.substr(0, colon), b = s.substr(colon + 1);
    size_t used = 0;
    r.begin = a.empty() ? 0 : std::stoi(a, &used);
    if (!a.empty() && used != a.size()) throw std::invalid_argument(a);
    r.end = b.empty() ? n_layers : std::stoi(b, &used);
    if (!b.empty() && used != b.size()) throw std::invalid_argument(b);
  } catch (const std::logic_error&) {
    throw UserError(flag + " '" + s + "' must look like A:B with integers");
  }
  if (r.begin < 0 || r.end > n_layers || r.begin >= r.end)
    throw UserError(flag + " " + s + " is outside the model's " + std::to_string(n_layers) + " layers (0-based, end-exclusive)");
  return r;
}

int units_to_keep(int n, double ratio) {
  int keep = int(std::floor(double(n) * (1.0 - ratio) + 1e-9));
  return std::max(1, std::min(n, keep));
}

GroupOptions plan_group_options(const PlanOptions& o) {
  GroupOptions g;
  g.gqa_unit = o.gqa_unit;
  g.heads = o.strategy == Strategy::Block && o.attn_ratio > 0;
  g.mlp = o.strategy == Strategy::Block && o.mlp_ratio > 0;
  g.hidden = o.strategy == Strategy::Channel;
  g.layers = o.strategy == Strategy::Layer;
  return g;
}

bool plan_targets(const PlanOptions& o, const Group& g, int n_layers) {
  switch (g.kind) {
    case UnitKind::Head:
    case UnitKind::KvGroup: return o.strategy == Strategy::Block && o.attn_ratio > 0 && o.attn_layers.contains(g.layer, n_layers);
    case UnitKind::Mlp: return o.strategy == Strategy::Block && o.mlp_ratio > 0 && o.mlp_layers.contains(g.layer, n_layers);
    case UnitKind::Hidden: return o.strategy == Strategy::Channel;
    case UnitKind::Layer: return o.strategy == Strategy::Layer && o.block_layers.contains(g.layer, n_layers);
  }
  return false;
}

int KeepTargets::get(long key, const std::vector<std::pair<long, int>>& v) const {
  for (auto& [k, n] : v)
    if (k == key) return n;
  return -1;
}

long keep_target_key(UnitKind k, int layer) { return long(k) * 1000000L + layer; }
static long key_of(UnitKind k, int layer) { return keep_target_key(k, layer); }

KeepTargets plan_keep_targets(const Model& m, const PlanOptions& o) {
  KeepTargets t;
  const int L = int(m.cfg.layers.size());
  auto add = [&](UnitKind k, int layer, int n, int keep) {
    t.start.push_back({key_of(k, layer), n});
    t.keep.push_back({key_of(k, layer), keep});
  };
  if (o.strategy == Strategy::Block) {
    int tot_heads = 0, keep_heads_total = 0, tot_mlp = 0;
    for (int l = 0; l < L; l++) {
      const LayerConfig& lc = m.cfg.layers[size_t(l)];
      bool gqa = lc.n_kv_head < lc.n_head;
      if (o.attn_ratio > 0 && o.attn_layers.contains(l, L)) {
        if (!gqa || o.gqa_unit == GqaUnit::KvGroup) {
          UnitKind k = gqa ? UnitKind::KvGroup : UnitKind::Head;
          int n = gqa ? lc.n_kv_head : lc.n_head;
          add(k, l, n, units_to_keep(n, o.attn_ratio));
          tot_heads += n;
        } else {
          int rep = lc.n_head / lc.n_kv_head;
          int keep_per_group = units_to_keep(rep, o.attn_ratio);
          add(UnitKind::Head, l, lc.n_head, keep_per_group * lc.n_kv_head);
          tot_heads += lc.n_head;
          keep_heads_total += keep_per_group * lc.n_kv_head;
        }
      }
      if (o.mlp_ratio > 0 && o.mlp_layers.contains(l, L)) {
        int keep = units_to_keep(lc.d_ff, o.mlp_ratio);
        if (o.round_to > 1) keep = std::max(o.round_to, keep / o.round_to * o.round_to);
        keep = std::min(keep, lc.d_ff);
        add(UnitKind::Mlp, l, lc.d_ff, keep);
        tot_mlp += lc.d_ff;
      }
    }
    if (o.global) {
      // Global: one budget per kind across the targeted layers (key layer = -1).
      std::vector<std::pair<long, int>> start, keep;
      for (UnitKind k : {UnitKind::Head, UnitKind::KvGroup, UnitKind::Mlp}) {
        int n = 0;
        for (auto& [key, cnt] : t.start)
          if (key / 1000000L == long(k)) n += cnt;
        if (n == 0) continue;
        double ratio = k == UnitKind::Mlp ? o.mlp_ratio : o.attn_ratio;
        start.push_back({key_of(k, -1), n});
        keep.push_back({key_of(k, -1), units_to_keep(n, ratio)});
      }
      t.start = start;
      t.keep = keep;
    }
    (void)tot_heads;
    (void)keep_heads_total;
    (void)tot_mlp;
  } else if (o.strategy == Strategy::Channel) {
    add(UnitKind::Hidden, -1, m.cfg.hidden, units_to_keep(m.cfg.hidden, o.channel_ratio));
  } else {
    int n = 0;
    for (int l = 0; l < L; l++) n += o.block_layers.contains(l, L) ? 1 : 0;
    int drop = o.drop_layers >= 0 ? o.drop_layers : n - units_to_keep(n, o.layer_ratio);
    if (drop >= L) throw UserError("the plan would remove every layer");
    if (drop > n) throw UserError("--drop-layers " + std::to_string(drop) + " exceeds the " + std::to_string(n) + " layers in range");
    add(UnitKind::Layer, -1, n, n - drop);
  }
  return t;
}

std::vector<size_t> select_removals(const Model& cur, const std::vector<Group>& groups, const std::vector<double>& scores,
                                    const PlanOptions& o, const KeepTargets& targets, int step, int steps) {
  // Bucket targeted groups by (kind, layer) — or by kind alone when the budget is global.
  std::map<long, std::vector<size_t>> buckets;
  for (size_t i = 0; i < groups.size(); i++) {
    const Group& g = groups[i];
    bool global_key = o.global || g.kind == UnitKind::Hidden || g.kind == UnitKind::Layer;
    buckets[key_of(g.kind, global_key ? -1 : g.layer)].push_back(i);
  }
  auto by_score = [&](size_t a, size_t b) { return scores[a] != scores[b] ? scores[a] < scores[b] : a < b; };
  std::vector<size_t> out;
  for (auto& [key, idx] : buckets) {
    int start = targets.get(key, targets.start), keep = targets.get(key, targets.keep);
    if (start < 0) continue;
    int want = start - int((long(start - keep) * step) / steps);  // units left after this step
    int have = int(idx.size());
    int remove = have - want;
    if (remove <= 0) continue;
    UnitKind kind = UnitKind(key / 1000000L);
    const bool query_even = kind == UnitKind::Head && o.gqa_unit == GqaUnit::Query;
    if (query_even && !o.global) {
      // Query heads under GQA: remove the same number inside every KV group of the layer.
      int layer = groups[idx.front()].layer;
      const LayerConfig& lc = cur.cfg.layers[size_t(layer)];
      int rep = lc.n_head / lc.n_kv_head;
      if (rep > 1 || lc.n_kv_head != lc.n_head) {
        if (remove % lc.n_kv_head != 0) throw UserError("internal: uneven query-head removal in layer " + std::to_string(layer));
        int per_group = remove / lc.n_kv_head;
        for (int gidx = 0; gidx < lc.n_kv_head; gidx++) {
          std::vector<size_t> members;
          for (size_t i : idx)
            if (groups[i].index / rep == gidx) members.push_back(i);
          std::sort(members.begin(), members.end(), by_score);
          for (int r = 0; r < per_group && r < int(members.size()) - 1; r++) out.push_back(members[size_t(r)]);
        }
        continue;
      }
    }
    if (query_even && o.global)
      throw UserError("--global ranking with --gqa-unit query is not supported (removal must stay even per KV group); use --gqa-unit kv-group");
    std::vector<size_t> order = idx;
    std::sort(order.begin(), order.end(), by_score);
    if (kind == UnitKind::Hidden || kind == UnitKind::Layer || !o.global) {
      for (int r = 0; r < remove; r++) out.push_back(order[size_t(r)]);
      continue;
    }
    // Global budget: lowest first, but never the last unit of a layer.
    std::map<int, int> left;
    for (size_t i : idx) left[groups[i].layer]++;
    int removed = 0;
    for (size_t i : order) {
      if (removed == remove) break;
      int& l = left[groups[i].layer];
      if (l <= 1) continue;
      l--;
      out.push_back(i);
      removed++;
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace llmprune
