#include "prune/surgery.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "core/error.h"
#include "graph/dependency.h"
#include "io/safetensors.h"

namespace llmprune {
namespace {

std::string axis_name(int axis) { return axis == 0 ? "rows" : "columns"; }

std::string tensor_name(const Model& m, int layer, int role) {
  Member mem;
  mem.layer = layer;
  mem.role = role;
  return member_tensor_name(m, mem);
}

std::string group_str(const Group& g) {
  return std::string(unit_kind_name(g.kind)) + " " + (g.layer >= 0 ? std::to_string(g.layer) + ":" : "") + std::to_string(g.index);
}

std::string plural(int64_t n, const std::string& noun) { return std::to_string(n) + " " + noun + (n == 1 ? "" : "s"); }

// What a plan cuts: per AxisNode, the sorted indices removed; plus the layers dropped whole.
struct Plan {
  std::vector<char> drop_layer;
  std::vector<std::vector<int64_t>> cut;
};

Plan collect(const Model& m, const DependencyGraph& g, const std::vector<Group>& removed) {
  const int L = int(m.layers.size());
  Plan p;
  p.drop_layer.assign(size_t(L), 0);
  p.cut.resize(g.axes().size());
  for (const Group& grp : removed) {
    if (grp.kind == UnitKind::Layer) {
      if (grp.layer < 0 || grp.layer >= L)
        throw UserError("pruning plan: " + group_str(grp) + " is out of range (the model has " + plural(L, "layer") + ")");
      p.drop_layer[size_t(grp.layer)] = 1;
      continue;
    }
    for (const Member& mem : grp.members) {
      int a = mem.layer >= L ? -1 : g.axis_node(mem.layer, mem.role, mem.axis);
      if (a < 0)
        throw UserError("pruning plan: " + group_str(grp) + " slices a tensor axis this model does not have (layer " +
                        std::to_string(mem.layer) + ", role " + std::to_string(mem.role) + ", axis " + std::to_string(mem.axis) + ")");
      const AxisNode& n = g.axes()[size_t(a)];
      for (int64_t i : mem.index)
        if (i < 0 || i >= n.size)
          throw UserError("pruning plan: " + group_str(grp) + " slices " + axis_name(mem.axis) + " " + std::to_string(i) + " of '" +
                          tensor_name(m, n.layer, n.role) + "', which has " + std::to_string(n.size) + " (plan made for another model?)");
      auto& c = p.cut[size_t(a)];
      c.insert(c.end(), mem.index.begin(), mem.index.end());
    }
  }
  for (auto& c : p.cut) {
    std::sort(c.begin(), c.end());
    c.erase(std::unique(c.begin(), c.end()), c.end());
  }
  return p;
}

bool axis_dropped(const Plan& p, const AxisNode& n) { return n.layer >= 0 && p.drop_layer[size_t(n.layer)]; }

// The cut of a space instance, checked to be the same on every live axis of it (coupled axes
// go together), made of whole blocks, and not the whole space. Null when the instance is dropped.
const std::vector<int64_t>* checked_space_cut(const Model& m, const DependencyGraph& g, const Plan& p, int si) {
  const SpaceInstance& s = g.spaces()[size_t(si)];
  const SpaceDesc& sd = space_desc(s.space);
  if (s.layer >= 0 && p.drop_layer[size_t(s.layer)]) return nullptr;
  const std::vector<int64_t>* ref = nullptr;
  int ref_axis = -1;
  for (int a : s.axes) {
    const AxisNode& n = g.axes()[size_t(a)];
    if (axis_dropped(p, n)) continue;
    if (!ref) {
      ref = &p.cut[size_t(a)];
      ref_axis = a;
    } else if (p.cut[size_t(a)] != *ref) {
      const AxisNode& r = g.axes()[size_t(ref_axis)];
      throw UserError("pruning plan is inconsistent: it cuts " + std::to_string(p.cut[size_t(a)].size()) + " " + axis_name(n.axis) +
                      " of '" + tensor_name(m, n.layer, n.role) + "' but " + std::to_string(ref->size()) + " " + axis_name(r.axis) +
                      " of '" + tensor_name(m, r.layer, r.role) + "', which share the " + sd.name +
                      " index space (use groups discovered on this model)");
    }
  }
  if (!ref) return nullptr;
  std::string where = s.layer >= 0 ? "layer " + std::to_string(s.layer) + ": " : "";
  if (!ref->empty() && !sd.prunable) throw UserError("pruning plan: " + where + "the " + sd.name + " index space cannot be pruned");
  if (s.block > 1) {
    // Whole blocks only: a head's head_dim channels go together (RoPE pairs them).
    bool ok = ref->size() % size_t(s.block) == 0;
    for (size_t i = 0; ok && i < ref->size(); i += size_t(s.block))
      ok = (*ref)[i] % s.block == 0 && (*ref)[i + size_t(s.block) - 1] == (*ref)[i] + s.block - 1;
    if (!ok) throw UserError("pruning plan: " + where + "it cuts part of a " + sd.unit + " (" + sd.name + " must go in blocks of " + std::to_string(s.block) + ")");
  }
  if (int64_t(ref->size()) == s.size)
    throw UserError("pruning plan: " + where + "it removes all " + plural(s.n_blocks(), sd.unit) + " (at least one must stay)");
  return ref;
}

// METHOD §1 "never leave a ragged group": after the cut every kept producer block (KV head) must
// still feed the same number of consumer blocks (query heads), and no kept consumer may lose its
// producer.
void check_couplings(const DependencyGraph& g, const std::vector<const std::vector<int64_t>*>& space_cut, int layer) {
  for (const BlockCoupling& c : block_couplings()) {
    int pi = g.space_instance(c.producer, layer), qi = g.space_instance(c.consumer, layer);
    if (pi < 0 || qi < 0 || !space_cut[size_t(pi)] || !space_cut[size_t(qi)]) continue;
    const SpaceInstance &P = g.spaces()[size_t(pi)], &Q = g.spaces()[size_t(qi)];
    const SpaceDesc &pd = space_desc(c.producer), &qd = space_desc(c.consumer);
    std::set<int64_t> p_cut, q_cut;
    for (int64_t i : *space_cut[size_t(pi)]) p_cut.insert(i / P.block);
    for (int64_t i : *space_cut[size_t(qi)]) q_cut.insert(i / Q.block);
    const int64_t rep = Q.n_blocks() / P.n_blocks();
    int64_t first_kept = -1;
    std::string counts;
    bool uneven = false;
    for (int64_t b = 0; b < P.n_blocks(); b++) {
      int64_t kept = 0;
      for (int64_t j = b * rep; j < (b + 1) * rep; j++) kept += !q_cut.count(j);
      if (p_cut.count(b)) {
        if (kept > 0)
          throw UserError("pruning plan: layer " + std::to_string(layer) + ": it removes " + pd.unit + " " + std::to_string(b) +
                          " but keeps " + plural(kept, qd.unit) + " that read it");
        continue;
      }
      if (first_kept < 0) first_kept = kept;
      uneven |= kept != first_kept;
      counts += (counts.empty() ? "" : ", ") + std::to_string(kept);
    }
    if (uneven)
      throw UserError("pruning plan: layer " + std::to_string(layer) + ": " + qd.unit + "s would be spread unevenly over " + pd.unit +
                      "s (kept per " + pd.unit + ": " + counts + "); remove them evenly inside every group");
  }
}

// Indices of [0, n) not in the sorted `cut`.
std::vector<int64_t> kept_indices(int64_t n, const std::vector<int64_t>& cut) {
  std::vector<int64_t> out;
  out.reserve(size_t(n) - cut.size());
  size_t j = 0;
  for (int64_t i = 0; i < n; i++) {
    if (j < cut.size() && cut[j] == i) {
      j++;
      continue;
    }
    out.push_back(i);
  }
  return out;
}

std::vector<int64_t> sliced_shape(const Tensor& t, const std::vector<int64_t>& cut0, const std::vector<int64_t>& cut1) {
  if (t.ndim() == 1) return {t.dim(0) - int64_t(cut0.size())};
  if (t.ndim() != 2) throw RuntimeError("slice_tensor: expected a vector or a matrix, got shape " + shape_str(t.shape));
  return {t.dim(0) - int64_t(cut0.size()), t.dim(1) - int64_t(cut1.size())};
}

// `t` without the cut rows (cut0) and columns (cut1), same dtype, written to dst
// (sliced_shape(t, cut0, cut1) elements).
void slice_into(const Tensor& t, const std::vector<int64_t>& cut0, const std::vector<int64_t>& cut1, void* dst_v) {
  const size_t es = dtype_size(t.dtype);
  const auto* src = static_cast<const uint8_t*>(t.data);
  auto* dst = static_cast<uint8_t*>(dst_v);
  if (t.ndim() == 1) {
    std::vector<int64_t> keep = kept_indices(t.dim(0), cut0);
    for (size_t i = 0; i < keep.size(); i++) std::memcpy(dst + i * es, src + size_t(keep[i]) * es, es);
    return;
  }
  if (t.ndim() != 2) throw RuntimeError("slice_tensor: expected a vector or a matrix, got shape " + shape_str(t.shape));
  const int64_t C = t.dim(1);
  std::vector<int64_t> rows = kept_indices(t.dim(0), cut0), cols = kept_indices(C, cut1);
  // Kept columns as contiguous runs [start, start+len): one memcpy per run and row.
  std::vector<std::pair<int64_t, int64_t>> runs;
  for (int64_t c : cols) {
    if (!runs.empty() && runs.back().first + runs.back().second == c) runs.back().second++;
    else runs.push_back({c, 1});
  }
  const int64_t C2 = int64_t(cols.size());
#pragma omp parallel for if (rows.size() * size_t(C2) > 65536)
  for (size_t i = 0; i < rows.size(); i++) {
    const uint8_t* s = src + size_t(rows[i]) * size_t(C) * es;
    uint8_t* d = dst + i * size_t(C2) * es;
    for (auto [start, len] : runs) {
      std::memcpy(d, s + size_t(start) * es, size_t(len) * es);
      d += size_t(len) * es;
    }
  }
}

// An owned copy of `t` without the cut rows (cut0) and columns (cut1), same dtype.
Tensor slice_tensor(const Tensor& t, const std::vector<int64_t>& cut0, const std::vector<int64_t>& cut1) {
  Tensor out = Tensor::zeros(t.dtype, sliced_shape(t, cut0, cut1));
  slice_into(t, cut0, cut1, out.data);
  return out;
}

// Tensors whose output is added into the residual stream (their axis 0 is Hidden and they are
// not norms: o, down and their biases) and the embedding, which sets the residual's initial
// value. Zeroing a unit's slice there silences the unit exactly.
bool writes_residual(const Model& m, int layer, int role) {
  if (layer < 0) return GlobalRole(role) == GlobalRole::Embed;
  const RoleDesc& d = m.arch->layer[size_t(role)];
  return d.axis0 == Space::Hidden && !d.is_norm;
}

Tensor& tensor_slot(Model& m, int layer, int role) {
  return layer >= 0 ? m.layers[size_t(layer)].w[size_t(role)] : m.global[size_t(role)];
}

void zero_slice(Tensor& t, int axis, const std::vector<int64_t>& index) {
  const size_t es = dtype_size(t.dtype);
  auto* p = static_cast<uint8_t*>(t.data);  // all-zero bits are +0.0 in every storage dtype
  const int64_t C = t.ndim() == 2 ? t.dim(1) : 1;
  if (axis == 0) {
    for (int64_t r : index) std::memset(p + size_t(r) * size_t(C) * es, 0, size_t(C) * es);
  } else {
    for (int64_t r = 0; r < t.dim(0); r++)
      for (int64_t c : index) std::memset(p + (size_t(r) * size_t(C) + size_t(c)) * es, 0, es);
  }
}

// The pruned model with every kept tensor made by `slicer`(source tensor, cut rows, cut columns).
template <typename Slicer>
Model build_pruned(const Model& m, const std::vector<Group>& removed, Slicer slicer) {
  DependencyGraph g(m);
  const int L = int(m.layers.size());
  Plan p = collect(m, g, removed);
  int kept_layers = 0;
  for (char d : p.drop_layer) kept_layers += !d;
  if (kept_layers == 0) throw UserError("pruning plan: it removes all " + plural(L, "layer") + " (at least one must stay)");

  std::vector<const std::vector<int64_t>*> space_cut(g.spaces().size(), nullptr);
  for (size_t si = 0; si < g.spaces().size(); si++) space_cut[si] = checked_space_cut(m, g, p, int(si));
  for (int l = 0; l < L; l++)
    if (!p.drop_layer[size_t(l)]) check_couplings(g, space_cut, l);

  static const std::vector<int64_t> kNone;
  auto cut_of = [&](int layer, int role, int axis) -> const std::vector<int64_t>& {
    int a = g.axis_node(layer, role, axis);
    return a < 0 ? kNone : p.cut[size_t(a)];
  };

  Model out;
  out.cfg = m.cfg;
  out.arch = m.arch;
  out.dir = m.dir;  // provenance (tokenizer files); `files` stays empty: nothing is on disk yet
  for (int r = 0; r < kNumGlobalRoles; r++) {
    const Tensor& t = m.global[size_t(r)];
    if (!t.empty()) out.global[size_t(r)] = slicer(t, cut_of(-1, r, 0), cut_of(-1, r, 1));
  }
  for (int l = 0; l < L; l++) {
    if (p.drop_layer[size_t(l)]) continue;
    LayerWeights lw;
    for (int r = 0; r < kNumLayerRoles; r++) {
      const Tensor& t = m.layers[size_t(l)].w[size_t(r)];
      if (!t.empty()) lw.w[size_t(r)] = slicer(t, cut_of(l, r, 0), cut_of(l, r, 1));
    }
    out.layers.push_back(std::move(lw));
  }
  int hs = g.space_instance(Space::Hidden, -1);
  if (hs >= 0 && space_cut[size_t(hs)]) out.cfg.hidden = m.cfg.hidden - int(space_cut[size_t(hs)]->size());
  out.cfg.n_layer = kept_layers;
  out.validate_and_derive_sizes("pruned model");
  // config.json's uniform sizes as ModelConfig::to_json writes them (layer 0, or the maximum
  // over layers when ragged), so the in-memory model matches its saved-and-reloaded self.
  const bool uniform = out.cfg.uniform();
  out.cfg.n_head = out.cfg.n_kv_head = out.cfg.d_ff = 0;
  for (const LayerConfig& lc : out.cfg.layers) {
    out.cfg.n_head = uniform ? out.cfg.layers[0].n_head : std::max(out.cfg.n_head, lc.n_head);
    out.cfg.n_kv_head = uniform ? out.cfg.layers[0].n_kv_head : std::max(out.cfg.n_kv_head, lc.n_kv_head);
    out.cfg.d_ff = uniform ? out.cfg.layers[0].d_ff : std::max(out.cfg.d_ff, lc.d_ff);
  }
  return out;
}

}  // namespace

Model remove_groups(const Model& m, const std::vector<Group>& removed) { return build_pruned(m, removed, slice_tensor); }

void save_pruned(const Model& m, const std::vector<Group>& removed, const std::filesystem::path& dir, DType dtype,
                 const std::filesystem::path& source_dir, const std::function<void(Model&)>& edit) {
  // A skeleton of the pruned model: every tensor has its pruned shape and dtype, and as data a
  // unique token (no bytes) that names its source and cuts. It never escapes this function: the
  // writer asks for each tensor's bytes in turn and gets them sliced straight from the source.
  struct Source {
    Tensor src;
    std::vector<int64_t> cut0, cut1;
  };
  std::map<const void*, Source> sources;
  Model skel = build_pruned(m, removed, [&](const Tensor& t, const std::vector<int64_t>& c0, const std::vector<int64_t>& c1) {
    Tensor k;
    k.dtype = t.dtype;
    k.shape = sliced_shape(t, c0, c1);
    auto token = std::make_shared<char>(0);
    k.data = token.get();
    k.owner = token;
    sources[token.get()] = Source{t, c0, c1};
    return k;
  });
  if (edit) edit(skel);
  const bool release = m.release_pages;
  std::vector<uint8_t> tmp;
  std::vector<float> f32;
  auto convert_into = [&](DType from, const void* src, void* dst, size_t n) {  // src in `from` -> dst in `dtype`
    f32.resize(n);
    to_f32(from, src, f32.data(), n);
    from_f32(dtype, f32.data(), dst, n);
  };
  save_model_files(skel, dir, dtype, source_dir, [&](const std::string& name, const Tensor& k, void* dst) {
    auto it = sources.find(k.data);
    if (it == sources.end()) {  // a tensor `edit` put in: its own bytes
      const size_t n = size_t(k.numel());
      if (k.dtype == dtype) std::memcpy(dst, k.data, k.nbytes());
      else convert_into(k.dtype, k.data, dst, n);
      return;
    }
    const Source& s = it->second;
    if (s.src.dtype == dtype) {
      slice_into(s.src, s.cut0, s.cut1, dst);
    } else {
      const size_t n = size_t(k.numel());
      tmp.resize(n * dtype_size(s.src.dtype));
      slice_into(s.src, s.cut0, s.cut1, tmp.data());
      convert_into(s.src.dtype, tmp.data(), dst, n);
    }
    if (release) release_mapped_pages(s.src);
  });
}

Model zero_groups(const Model& m, const std::vector<Group>& groups) {
  Model out = m;
  const int L = int(m.layers.size());
  std::set<std::pair<int, int>> owned;  // tensors already copied out of m's storage
  auto own = [&](int layer, int role) -> Tensor& {
    Tensor& t = tensor_slot(out, layer, role);
    if (owned.insert({layer, role}).second) t = t.converted(t.dtype);
    return t;
  };
  for (const Group& grp : groups) {
    if (grp.kind == UnitKind::Layer) {
      if (grp.layer < 0 || grp.layer >= L) throw UserError("zero_groups: " + group_str(grp) + " is out of range");
      for (int r = 0; r < kNumLayerRoles; r++)
        if (writes_residual(m, grp.layer, r) && !m.layers[size_t(grp.layer)].w[size_t(r)].empty()) {
          Tensor& t = own(grp.layer, r);
          std::memset(t.data, 0, t.nbytes());
        }
      continue;
    }
    for (const Member& mem : grp.members) {
      if (!writes_residual(m, mem.layer, mem.role)) continue;
      Tensor& t = own(mem.layer, mem.role);
      for (int64_t i : mem.index)
        if (i < 0 || i >= t.dim(mem.axis))
          throw UserError("zero_groups: " + group_str(grp) + " index " + std::to_string(i) + " is out of range for '" +
                          member_tensor_name(m, mem) + "'");
      zero_slice(t, mem.axis, mem.index);
    }
  }
  return out;
}

}  // namespace llmprune
