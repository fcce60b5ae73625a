#include "graph/groups.h"

#include "graph/dependency.h"

namespace llmprune {

const char* unit_kind_name(UnitKind k) {
  switch (k) {
    case UnitKind::Head: return "head";
    case UnitKind::KvGroup: return "kv_group";
    case UnitKind::Mlp: return "mlp";
    case UnitKind::Hidden: return "hidden";
    case UnitKind::Layer: return "layer";
  }
  return "?";
}

bool unit_kind_from_name(const std::string& s, UnitKind* out) {
  for (UnitKind k : {UnitKind::Head, UnitKind::KvGroup, UnitKind::Mlp, UnitKind::Hidden, UnitKind::Layer})
    if (s == unit_kind_name(k)) {
      *out = k;
      return true;
    }
  return false;
}

std::vector<Group> discover_groups(const Model& m, const GroupOptions& opt) {
  DependencyGraph g(m);
  std::vector<Group> out;
  const int L = int(m.layers.size());

  if (opt.heads) {
    // Start from a KV head (whole KV groups) or a query head; the §1 rules decide what follows.
    // A closure holding exactly one query head is that head (MHA, or --gqa-unit query); one
    // holding several is a KV group.
    const Space start = opt.gqa_unit == GqaUnit::KvGroup ? Space::KVHeads : Space::QHeads;
    for (int l = 0; l < L; l++) {
      int si = g.space_instance(start, l), qi = g.space_instance(Space::QHeads, l), ki = g.space_instance(Space::KVHeads, l);
      if (si < 0) continue;
      for (int64_t b = 0; b < g.spaces()[size_t(si)].n_blocks(); b++) {
        std::vector<Unit> units = g.closure({si, b});
        int n_q = 0;
        int64_t q_block = -1, kv_block = -1;
        for (const Unit& u : units) {
          if (u.space_inst == qi) {
            n_q++;
            q_block = u.block;
          }
          if (u.space_inst == ki) kv_block = u.block;
        }
        Group grp;
        grp.layer = l;
        if (n_q == 1) {
          grp.kind = UnitKind::Head;
          grp.index = int(q_block);
        } else {
          grp.kind = UnitKind::KvGroup;
          grp.index = int(kv_block);
        }
        grp.members = g.members_of(units, false);
        out.push_back(std::move(grp));
      }
    }
  }

  if (opt.mlp)
    for (int l = 0; l < L; l++) {
      int si = g.space_instance(Space::Mlp, l);
      if (si < 0) continue;
      for (int64_t c = 0; c < g.spaces()[size_t(si)].n_blocks(); c++) {
        Group grp;
        grp.kind = UnitKind::Mlp;
        grp.layer = l;
        grp.index = int(c);
        grp.members = g.members_of(g.closure({si, c}), false);
        out.push_back(std::move(grp));
      }
    }

  if (opt.hidden) {
    int si = g.space_instance(Space::Hidden, -1);
    for (int64_t d = 0; si >= 0 && d < g.spaces()[size_t(si)].n_blocks(); d++) {
      Group grp;
      grp.kind = UnitKind::Hidden;
      grp.layer = -1;
      grp.index = int(d);
      grp.members = g.members_of(g.closure({si, d}), true);  // norm weights score here (METHOD §8)
      out.push_back(std::move(grp));
    }
  }

  if (opt.layers)
    for (int l = 0; l < L; l++) {
      Group grp;
      grp.kind = UnitKind::Layer;
      grp.layer = l;
      grp.index = l;
      grp.members = g.layer_members(l);
      out.push_back(std::move(grp));
    }
  return out;
}

std::string member_tensor_name(const Model& m, const Member& mem) {
  if (mem.layer >= 0) return layer_tensor_name(*m.arch, Role(mem.role), mem.layer);
  return m.arch->global.at(size_t(mem.role)).pattern;
}

const Tensor& member_tensor(const Model& m, const Member& mem) {
  if (mem.layer >= 0) return m.layers.at(size_t(mem.layer)).w.at(size_t(mem.role));
  if (GlobalRole(mem.role) == GlobalRole::LmHead) return m.lm_head();
  return m.global.at(size_t(mem.role));
}

int64_t member_numel(const Model& m, const Member& mem) {
  const Tensor& t = member_tensor(m, mem);
  int64_t other = t.ndim() == 2 ? t.dim(1 - mem.axis) : 1;
  return int64_t(mem.index.size()) * other;
}

}  // namespace llmprune
