// llmprune groups MODEL: the coupled structures the dependency graph finds (METHOD.md §1, §8):
// counts per kind and per layer, and with --show the tensor slices of one group.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "core/error.h"
#include "graph/groups.h"
#include "model/model.h"

namespace llmprune::cli {
namespace {

struct GroupsArgs {
  std::string model;
  std::string gqa_unit = "kv-group";
  std::string kind;  // empty: all kinds
  std::string show;  // "LAYER:INDEX", or "INDEX" for hidden / layer
  bool json = false;
};

// Ascending indices as inclusive runs: 0..31,64..95 (a lone index prints as itself).
std::string compress_ranges(const std::vector<int64_t>& idx) {
  std::string s;
  for (size_t i = 0; i < idx.size();) {
    size_t j = i;
    while (j + 1 < idx.size() && idx[j + 1] == idx[j] + 1) j++;
    if (!s.empty()) s += ",";
    s += std::to_string(idx[i]);
    if (j > i) s += ".." + std::to_string(idx[j]);
    i = j + 1;
  }
  return s;
}

int64_t group_params(const Model& m, const Group& g) {
  int64_t n = 0;
  for (const Member& mem : g.members) n += member_numel(m, mem);
  return n;
}

int parse_int(const std::string& s, const std::string& what) {
  size_t pos = 0;
  int v = 0;
  try {
    v = std::stoi(s, &pos);
  } catch (const std::exception&) {
    pos = std::string::npos;
  }
  if (s.empty() || pos != s.size()) throw UserError("--show: '" + s + "' is not a " + what);
  return v;
}

void run_groups(const GroupsArgs& a) {
  Model m = Model::load(a.model);
  const int L = int(m.layers.size());
  GroupOptions opt;
  opt.gqa_unit = a.gqa_unit == "query" ? GqaUnit::Query : GqaUnit::KvGroup;
  UnitKind only{};
  const bool filtered = !a.kind.empty();
  if (filtered) {
    if (!unit_kind_from_name(a.kind, &only)) throw UserError("--kind: '" + a.kind + "' is not one of head, kv_group, mlp, hidden, layer");
    opt.heads = only == UnitKind::Head || only == UnitKind::KvGroup;
    opt.mlp = only == UnitKind::Mlp;
    opt.hidden = only == UnitKind::Hidden;
    opt.layers = only == UnitKind::Layer;
  } else {
    opt.heads = opt.mlp = opt.hidden = opt.layers = true;
  }
  std::vector<Group> groups = discover_groups(m, opt);
  if (filtered) std::erase_if(groups, [&](const Group& g) { return g.kind != only; });

  const UnitKind kinds[] = {UnitKind::Head, UnitKind::KvGroup, UnitKind::Mlp, UnitKind::Hidden, UnitKind::Layer};
  std::map<UnitKind, int64_t> count, pmin, pmax;
  std::vector<std::map<UnitKind, int>> per_layer(static_cast<size_t>(L));
  for (const Group& g : groups) {
    int64_t p = group_params(m, g);
    if (!count[g.kind]++) pmin[g.kind] = pmax[g.kind] = p;
    pmin[g.kind] = std::min(pmin[g.kind], p);
    pmax[g.kind] = std::max(pmax[g.kind], p);
    if (g.layer >= 0 && g.kind != UnitKind::Layer) per_layer[size_t(g.layer)][g.kind]++;
  }
  // Columns of the per-layer table: the per-layer kinds present.
  std::vector<UnitKind> cols;
  for (UnitKind k : {UnitKind::Head, UnitKind::KvGroup, UnitKind::Mlp})
    if (count[k] > 0) cols.push_back(k);

  // --show: one group's member slices.
  const Group* shown = nullptr;
  if (!a.show.empty()) {
    UnitKind k;
    int layer = -1, index = 0;
    auto colon = a.show.find(':');
    if (colon == std::string::npos) {
      if (!filtered || (only != UnitKind::Hidden && only != UnitKind::Layer))
        throw UserError("--show needs LAYER:INDEX (a lone INDEX only with --kind hidden or --kind layer)");
      index = parse_int(a.show, "hidden channel or layer index");
      k = only;
      layer = k == UnitKind::Layer ? index : -1;
    } else {
      layer = parse_int(a.show.substr(0, colon), "layer number");
      index = parse_int(a.show.substr(colon + 1), "unit index");
      if (layer < 0 || layer >= L) throw UserError("--show: layer " + std::to_string(layer) + " is out of range (the model has " + std::to_string(L) + " layers)");
      if (filtered && (only == UnitKind::Hidden || only == UnitKind::Layer))
        throw UserError(std::string("--show: --kind ") + unit_kind_name(only) + " takes a lone INDEX");
      k = filtered ? only : UnitKind::Head;  // attention unit by default: head or kv_group
    }
    for (const Group& g : groups) {
      bool kind_ok = g.kind == k || (!filtered && k == UnitKind::Head && g.kind == UnitKind::KvGroup);
      if (kind_ok && g.layer == layer && g.index == index) {
        shown = &g;
        break;
      }
    }
    if (!shown) {
      std::string what = std::string(filtered ? unit_kind_name(k) : "attention") + " group " +
                         (layer >= 0 && k != UnitKind::Layer ? std::to_string(layer) + ":" : "") + std::to_string(index);
      std::string hint = filtered && k == UnitKind::Head && count[UnitKind::Head] == 0
                             ? " (GQA layers have kv_group units; use --gqa-unit query for single query heads)"
                             : "";
      throw UserError(a.model + ": no " + what + hint);
    }
  }

  if (a.json) {
    nlohmann::json j;
    j["model"] = a.model;
    j["gqa_unit"] = opt.gqa_unit == GqaUnit::Query ? "query" : "kv-group";
    j["counts"] = nlohmann::json::object();
    for (UnitKind k : kinds)
      if (count[k] > 0) {
        j["counts"][unit_kind_name(k)] = count[k];
        j["params_per_group"][unit_kind_name(k)] = {{"min", pmin[k]}, {"max", pmax[k]}};
      }
    j["layers"] = nlohmann::json::array();
    for (int l = 0; l < L; l++) {
      nlohmann::json row = {{"layer", l}};
      for (UnitKind k : cols) row[unit_kind_name(k)] = per_layer[size_t(l)][k];
      j["layers"].push_back(row);
    }
    if (shown) {
      nlohmann::json g = {{"kind", unit_kind_name(shown->kind)}, {"layer", shown->layer}, {"index", shown->index},
                          {"params", group_params(m, *shown)}};
      g["members"] = nlohmann::json::array();
      for (const Member& mem : shown->members)
        g["members"].push_back({{"tensor", member_tensor_name(m, mem)},
                                {"axis", mem.axis},
                                {"ranges", compress_ranges(mem.index)},
                                {"count", mem.index.size()},
                                {"scores", mem.scores}});
      j["group"] = g;
    }
    std::cout << j.dump(2) << "\n";
    return;
  }

  const LayerConfig& l0 = m.cfg.layers[0];
  std::printf("%s: %s, %d layers, hidden %d, head_dim %d, %s, %s embeddings\n", a.model.c_str(), m.arch->family.c_str(), L,
              m.cfg.hidden, m.cfg.head_dim, l0.n_kv_head == l0.n_head ? "MHA" : "GQA", m.cfg.tied ? "tied" : "untied");
  std::printf("attention unit: %s\n\n", opt.gqa_unit == GqaUnit::Query ? "query head (--gqa-unit query)" : "KV group (--gqa-unit kv-group)");
  std::printf("%-9s %8s  %s\n", "kind", "groups", "params/group");
  for (UnitKind k : kinds) {
    if (count[k] == 0) continue;
    std::string p = format_count(double(pmin[k]));
    if (pmax[k] != pmin[k]) p += ".." + format_count(double(pmax[k]));
    std::printf("%-9s %8lld  %s\n", unit_kind_name(k), (long long)count[k], p.c_str());
  }
  if (!cols.empty()) {
    std::printf("\n%6s", "layer");
    for (UnitKind k : cols) std::printf("  %8s", unit_kind_name(k));
    std::printf("\n");
    for (int l = 0; l < L; l++) {
      std::printf("%6d", l);
      for (UnitKind k : cols) std::printf("  %8d", per_layer[size_t(l)][k]);
      std::printf("\n");
    }
  }
  if (shown) {
    std::printf("\n%s %s%d: %zu members, %lld params\n", unit_kind_name(shown->kind),
                shown->layer >= 0 && shown->kind != UnitKind::Layer ? (std::to_string(shown->layer) + ":").c_str() : "",
                shown->index, shown->members.size(), (long long)group_params(m, *shown));
    size_t w = 6;
    for (const Member& mem : shown->members) w = std::max(w, member_tensor_name(m, mem).size());
    std::printf("  %-*s  %-7s  %-6s  %s\n", int(w), "tensor", "axis", "scores", "indices");
    for (const Member& mem : shown->members)
      std::printf("  %-*s  %-7s  %-6s  %s\n", int(w), member_tensor_name(m, mem).c_str(), mem.axis == 0 ? "rows" : "columns",
                  mem.scores ? "yes" : "no", compress_ranges(mem.index).c_str());
  }
}

void register_groups(CLI::App& app) {
  auto* cmd = app.add_subcommand("groups", "Coupled structures (heads, KV groups, MLP/hidden channels, layers) found by the dependency graph");
  auto a = std::make_shared<GroupsArgs>();
  cmd->add_option("MODEL", a->model, "model directory (HF layout) or .gguf file")->required();
  cmd->add_option("--gqa-unit", a->gqa_unit, "GQA attention unit: whole KV groups, or single query heads (removed evenly per KV group)")
      ->check(CLI::IsMember({"kv-group", "query"}))
      ->capture_default_str();
  cmd->add_option("--kind", a->kind, "only this kind of group")->check(CLI::IsMember({"head", "kv_group", "mlp", "hidden", "layer"}));
  cmd->add_option("--show", a->show, "print the tensor slices of one group: LAYER:INDEX (INDEX alone with --kind hidden|layer)");
  cmd->add_flag("--json", a->json, "print JSON");
  cmd->callback([a] { run_groups(*a); });
}

AutoRegister reg(register_groups);

}  // namespace
}  // namespace llmprune::cli
