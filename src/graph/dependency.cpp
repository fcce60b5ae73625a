#include "graph/dependency.h"

#include <algorithm>
#include <deque>
#include <limits>
#include <map>
#include <set>
#include <string>

#include "core/error.h"

namespace llmprune {
namespace {

// Every index space of the llama-like families. Head spaces move in whole heads.
const SpaceDesc kSpaces[] = {
    {Space::None, "none", "index", false, BlockSize::One, false},
    {Space::Hidden, "hidden", "hidden channel", false, BlockSize::One, true},
    {Space::Vocab, "vocab", "vocabulary entry", false, BlockSize::One, false},
    {Space::QHeads, "q_heads", "query head", true, BlockSize::HeadDim, true},
    {Space::KVHeads, "kv_heads", "KV head", true, BlockSize::HeadDim, true},
    {Space::Mlp, "mlp", "MLP channel", true, BlockSize::One, true},
};

constexpr int kRoleSlots = kNumLayerRoles > kNumGlobalRoles ? kNumLayerRoles : kNumGlobalRoles;

// Attention: query head h attends with KV head h / rep (rep = n_head / n_kv_head).
const std::vector<BlockCoupling> kCouplings = {
    {"attention", Space::KVHeads, Space::QHeads},
};

}  // namespace

const SpaceDesc& space_desc(Space s) {
  for (const auto& d : kSpaces)
    if (d.space == s) return d;
  return kSpaces[0];
}

const std::vector<BlockCoupling>& block_couplings() { return kCouplings; }

int64_t DependencyGraph::exec_order(int layer, int role) {
  constexpr int64_t kEnd = std::numeric_limits<int64_t>::max() / 4;
  if (layer >= 0) return 1 + int64_t(layer) * kNumLayerRoles + role;
  switch (GlobalRole(role)) {
    case GlobalRole::Embed: return 0;
    case GlobalRole::FinalNorm: return kEnd;
    default: return kEnd + 1 + role;
  }
}

DependencyGraph::DependencyGraph(const Model& m) : n_layers_(int(m.layers.size())) {
  std::map<std::pair<int, int>, int> inst_of;  // (space, layer or -1) -> instance
  const std::string src = m.dir.empty() ? std::string("model") : m.dir.string();

  auto add_tensor = [&](int layer, int role, const RoleDesc& d, const Tensor& t) {
    if (t.empty()) return;
    const Space sp[2] = {d.axis0, d.axis1};
    for (int axis = 0; axis < 2 && axis < t.ndim(); axis++) {
      if (sp[axis] == Space::None) continue;
      const SpaceDesc& sd = space_desc(sp[axis]);
      if (sd.per_layer && layer < 0)
        throw RuntimeError(std::string("architecture table: whole-model tensor '") + d.pattern + "' has a per-layer index space");
      int inst_layer = sd.per_layer ? layer : -1;
      auto key = std::make_pair(int(sp[axis]), inst_layer);
      auto it = inst_of.find(key);
      int si;
      if (it == inst_of.end()) {
        SpaceInstance s;
        s.space = sp[axis];
        s.layer = inst_layer;
        s.size = t.dim(axis);
        s.block = sd.block == BlockSize::HeadDim ? m.cfg.layers.at(size_t(layer)).head_dim : 1;
        if (s.block <= 0 || s.size % s.block != 0)
          throw input_error(src, "layer " + std::to_string(layer) + ": " + sd.name + " size " + std::to_string(s.size) +
                                     " is not a multiple of head_dim " + std::to_string(s.block));
        si = int(spaces_.size());
        spaces_.push_back(s);
        inst_of[key] = si;
      } else {
        si = it->second;
        if (spaces_[size_t(si)].size != t.dim(axis))
          throw input_error(src, "tensor axis " + std::to_string(axis) + " of '" + std::string(d.pattern) + "' (layer " +
                                     std::to_string(layer) + ") has " + std::to_string(t.dim(axis)) + " " + sd.name +
                                     " indices, others in its space have " + std::to_string(spaces_[size_t(si)].size));
      }
      AxisNode n;
      n.layer = layer;
      n.role = role;
      n.axis = axis;
      n.space = sp[axis];
      n.size = t.dim(axis);
      n.space_inst = si;
      n.is_norm = d.is_norm;
      n.is_bias = d.is_bias;
      n.is_matrix = t.ndim() == 2;
      spaces_[size_t(si)].axes.push_back(int(axes_.size()));
      axes_.push_back(n);
    }
  };

  // Execution order: embed, every layer's roles, final norm, lm_head (absent when tied: the
  // embedding's Hidden axis already stands for it).
  add_tensor(-1, int(GlobalRole::Embed), m.arch->global[size_t(GlobalRole::Embed)], m.embed());
  for (int l = 0; l < n_layers_; l++)
    for (int r = 0; r < kNumLayerRoles; r++) add_tensor(l, r, m.arch->layer[size_t(r)], m.layers[size_t(l)].w[size_t(r)]);
  add_tensor(-1, int(GlobalRole::FinalNorm), m.arch->global[size_t(GlobalRole::FinalNorm)], m.final_norm());
  add_tensor(-1, int(GlobalRole::FinalNormBias), m.arch->global[size_t(GlobalRole::FinalNormBias)], m.final_norm_bias());
  if (!m.cfg.tied)
    add_tensor(-1, int(GlobalRole::LmHead), m.arch->global[size_t(GlobalRole::LmHead)], m.global[size_t(GlobalRole::LmHead)]);

  axis_lookup_.assign(size_t(n_layers_ + 1) * kRoleSlots * 2, -1);
  for (size_t i = 0; i < axes_.size(); i++) {
    const AxisNode& n = axes_[i];
    axis_lookup_[(size_t(n.layer + 1) * kRoleSlots + size_t(n.role)) * 2 + size_t(n.axis)] = int(i);
  }

  for (int l = 0; l < n_layers_; l++)
    for (const BlockCoupling& c : kCouplings) {
      int p = space_instance(c.producer, l), q = space_instance(c.consumer, l);
      if (p < 0 || q < 0) continue;
      int64_t np = spaces_[size_t(p)].n_blocks(), nq = spaces_[size_t(q)].n_blocks();
      if (np == 0 || nq % np != 0)
        throw input_error(src, "layer " + std::to_string(l) + ": " + c.op + " needs " + space_desc(c.consumer).name +
                                   " blocks (" + std::to_string(nq) + ") to be a multiple of " + space_desc(c.producer).name +
                                   " blocks (" + std::to_string(np) + ")");
      edges_.push_back({p, q, nq / np});
    }
}

int DependencyGraph::space_instance(Space s, int layer) const {
  int want = space_desc(s).per_layer ? layer : -1;
  for (size_t i = 0; i < spaces_.size(); i++)
    if (spaces_[i].space == s && spaces_[i].layer == want) return int(i);
  return -1;
}

int DependencyGraph::axis_node(int layer, int role, int axis) const {
  if (layer < -1 || layer >= n_layers_ || role < 0 || role >= kRoleSlots || axis < 0 || axis > 1) return -1;
  return axis_lookup_[(size_t(layer + 1) * kRoleSlots + size_t(role)) * 2 + size_t(axis)];
}

std::vector<Unit> DependencyGraph::consumers(const Unit& u) const {
  std::vector<Unit> out;
  for (const Edge& e : edges_)
    if (e.producer_inst == u.space_inst)
      for (int64_t j = u.block * e.rep; j < (u.block + 1) * e.rep; j++) out.push_back({e.consumer_inst, j});
  return out;
}

std::vector<Unit> DependencyGraph::producers(const Unit& u) const {
  std::vector<Unit> out;
  for (const Edge& e : edges_)
    if (e.consumer_inst == u.space_inst) out.push_back({e.producer_inst, u.block / e.rep});
  return out;
}

std::vector<Unit> DependencyGraph::closure(const Unit& start) const {
  std::set<Unit> in{start};
  std::deque<Unit> todo{start};
  while (!todo.empty()) {
    Unit u = todo.front();
    todo.pop_front();
    // (1) N_j in Out(N_i), Deg-(N_j) = 1: its only input is gone.
    for (const Unit& v : consumers(u))
      if (!in.count(v) && producers(v).size() == 1) {
        in.insert(v);
        todo.push_back(v);
      }
    // (2) N_i in In(N_j), Deg+(N_i) = 1: its only reader is gone.
    for (const Unit& v : producers(u))
      if (!in.count(v) && consumers(v).size() == 1) {
        in.insert(v);
        todo.push_back(v);
      }
  }
  return {in.begin(), in.end()};
}

std::vector<Member> DependencyGraph::members_of(const std::vector<Unit>& units, bool norms_score) const {
  std::map<int, std::set<int64_t>> blocks;  // space instance -> blocks
  for (const Unit& u : units) blocks[u.space_inst].insert(u.block);
  std::vector<Member> out;
  for (auto& [si, bs] : blocks) {
    const SpaceInstance& s = spaces_[size_t(si)];
    std::vector<int64_t> index;
    index.reserve(bs.size() * size_t(s.block));
    for (int64_t b : bs)
      for (int64_t i = b * s.block; i < (b + 1) * s.block; i++) index.push_back(i);
    for (int a : s.axes) {
      const AxisNode& n = axes_[size_t(a)];
      Member mem;
      mem.layer = n.layer;
      mem.role = n.role;
      mem.axis = n.axis;
      mem.index = index;
      mem.scores = !n.is_bias && (!n.is_norm || norms_score);
      out.push_back(std::move(mem));
    }
  }
  std::stable_sort(out.begin(), out.end(), [](const Member& a, const Member& b) {
    int64_t ka = exec_order(a.layer, a.role), kb = exec_order(b.layer, b.role);
    return ka != kb ? ka < kb : a.axis < b.axis;
  });
  return out;
}

std::vector<Member> DependencyGraph::layer_members(int l) const {
  std::vector<Member> out;
  for (const AxisNode& n : axes_) {
    if (n.layer != l || n.axis != 0) continue;
    Member mem;
    mem.layer = l;
    mem.role = n.role;
    mem.axis = 0;
    mem.index.resize(size_t(n.size));
    for (int64_t i = 0; i < n.size; i++) mem.index[size_t(i)] = i;
    mem.scores = n.is_matrix;
    out.push_back(std::move(mem));
  }
  return out;
}

}  // namespace llmprune
