#include "prune/sparsify.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>

#include "core/error.h"
#include "model/forward.h"
#include "prune/surgery.h"

namespace llmprune {

namespace {

uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

bool has_role(const std::vector<Role>& v, Role r) { return std::find(v.begin(), v.end(), r) != v.end(); }

// Strict total order: key, then position.
struct KeyLess {
  const uint32_t* k;
  bool operator()(int64_t a, int64_t b) const { return k[a] != k[b] ? k[a] < k[b] : a < b; }
};

// An owned copy of `t` (storage dtype) with the masked elements set to zero. Returns the number
// of elements masked.
int64_t zero_masked(Tensor& t, const std::vector<uint8_t>& mask) {
  Tensor out = t.converted(t.dtype);
  const size_t es = dtype_size(t.dtype);
  auto* p = static_cast<uint8_t*>(out.data);
  int64_t n = 0;
  for (size_t i = 0; i < mask.size(); i++)
    if (mask[i]) {
      std::memset(p + i * es, 0, es);
      n++;
    }
  t = std::move(out);
  return n;
}

int64_t count_zeros(const Tensor& t) {
  std::vector<float> buf;
  const float* f = as_f32(t, buf);
  int64_t z = 0;
  for (int64_t i = 0; i < t.numel(); i++) z += f[i] == 0.0f;
  return z;
}

// Sum of squares of every targeted projection's input, per input column, for one layer at a time.
class NormHook : public LinearHook {
 public:
  explicit NormHook(const std::vector<Role>& targets) : targets_(targets) {}
  void reset() {
    for (auto& v : sumsq_) v.clear();
  }
  void forward(int, Role r, const float* x, float*, int N, int in, int) override {
    if (!has_role(targets_, r)) return;
    auto& s = sumsq_[size_t(r)];
    if (s.empty()) s.assign(size_t(in), 0.0);
    for (int n = 0; n < N; n++) {
      const float* row = x + size_t(n) * in;
      for (int j = 0; j < in; j++) s[size_t(j)] += double(row[j]) * row[j];
    }
  }
  void backward(int, Role, const float*, const float*, float*, int, int, int) override {}
  // ‖x_j‖₂ over all calibration tokens, as fp32.
  std::vector<float> norms(Role r) const {
    const auto& s = sumsq_[size_t(r)];
    std::vector<float> out(s.size());
    for (size_t j = 0; j < s.size(); j++) out[j] = float(std::sqrt(s[j]));
    return out;
  }

 private:
  std::vector<Role> targets_;
  std::array<std::vector<double>, kNumLayerRoles> sumsq_;
};

// Calibration activations flowing through the model layer by layer (Wanda's procedure).
class LayerStream {
 public:
  LayerStream(const Model& m, const std::vector<int32_t>& tokens, int B, int T, const std::vector<Role>& targets)
      : m_(m), runner_(m, T), hook_(targets), B_(B), T_(T) {
    const int C = m.cfg.hidden;
    x_.resize(size_t(B) * T * C);
    runner_.embed(tokens.data(), B * T, x_.data());
  }
  // Input norms of layer l's targeted projections on the current activations (not advanced).
  void measure(int l, std::map<std::pair<int, int>, std::vector<float>>& out, const std::vector<Role>& targets) {
    hook_.reset();
    runner_.set_hook(&hook_);
    LayerF32 w;
    w.load(m_, l);
    run(l, w, true);
    runner_.set_hook(nullptr);
    for (Role r : targets)
      if (!m_.layers[size_t(l)][r].empty()) out[{l, int(r)}] = hook_.norms(r);
  }
  // Runs layer l (as it is now in the model) on the activations in place.
  void advance(int l) {
    LayerF32 w;
    w.load(m_, l);
    run(l, w, false);
  }

 private:
  void run(int l, const LayerF32& w, bool on_copy) {
    const int C = m_.cfg.hidden, chunk = 8;
    for (int b0 = 0; b0 < B_; b0 += chunk) {
      const int nb = std::min(chunk, B_ - b0);
      float* xs = x_.data() + size_t(b0) * T_ * C;
      if (on_copy) {
        tmp_.assign(xs, xs + size_t(nb) * T_ * C);
        runner_.block_forward(l, w, tmp_.data(), nb, T_, nullptr, nullptr);
      } else {
        runner_.block_forward(l, w, xs, nb, T_, nullptr, nullptr);
      }
    }
  }
  const Model& m_;
  Runner runner_;
  NormHook hook_;
  int B_, T_;
  std::vector<float> x_, tmp_;
};

void sparsify_unstructured(Model& m, const SparsifyOptions& o, const std::vector<Role>& targets, const std::vector<int32_t>& calib,
                           int B, int T, SparsifyReport& rep) {
  const int L = int(m.layers.size());
  struct Target {
    int layer;
    Role role;
  };
  std::vector<Target> list;  // model order
  for (int l = 0; l < L; l++)
    for (Role r : matrix_roles())
      if (has_role(targets, r) && !m.layers[size_t(l)][r].empty()) list.push_back({l, r});
  if (list.empty()) throw UserError("--targets selects no tensor of the model");

  const bool wanda = o.method == SparsifyMethod::Wanda;
  if (wanda && (calib.empty() || B <= 0 || T <= 0)) throw UserError("--method wanda needs --calib FILE (calibration text)");
  std::map<std::pair<int, int>, std::vector<float>> norms;
  std::unique_ptr<LayerStream> stream;
  if (wanda) {
    stream = std::make_unique<LayerStream>(m, calib, B, T, targets);
    rep.calib_tokens = B * T;
  }

  auto keys_of = [&](const Target& t) {
    const Tensor& w = m.layers[size_t(t.layer)][t.role];
    std::vector<float> buf;
    const float* f = as_f32(w, buf);
    const float* cn = wanda ? norms.at({t.layer, int(t.role)}).data() : nullptr;
    return matrix_score_keys(f, w.dim(0), w.dim(1), o.method, cn, o.seed, uint64_t(t.layer) * 16 + uint64_t(t.role));
  };
  auto record = [&](const Target& t, int64_t zeroed) {
    const Tensor& w = m.layers[size_t(t.layer)][t.role];
    TensorSparsity s;
    s.name = layer_tensor_name(*m.arch, t.role, t.layer);
    s.layer = t.layer;
    s.role = t.role;
    s.numel = w.numel();
    s.zeroed = zeroed;
    s.zeros = count_zeros(w);
    rep.tensors.push_back(s);
  };

  if (o.scope == SparsityScope::Global && o.nm_m == 0) {
    // One ranking over every targeted weight; Wanda norms all from the dense model.
    if (wanda)
      for (int l = 0; l < L; l++) {
        stream->measure(l, norms, targets);
        stream->advance(l);
      }
    int64_t total = 0;
    for (auto& t : list) total += m.layers[size_t(t.layer)][t.role].numel();
    const int64_t k = amount_to_count(o.amount, total);
    KeyThreshold thr = kth_smallest_threshold(
        [&](const KeyChunkFn& fn) {
          for (auto& t : list) {
            auto keys = keys_of(t);
            fn(keys.data(), int64_t(keys.size()));
          }
        },
        k);
    int64_t taken = 0;
    for (auto& t : list) {
      auto keys = keys_of(t);
      std::vector<uint8_t> mask(keys.size(), 0);
      for (size_t i = 0; i < keys.size(); i++) {
        if (keys[i] < thr.key) mask[i] = 1;
        else if (keys[i] == thr.key && taken < thr.take_equal) {
          mask[i] = 1;
          taken++;
        }
      }
      int64_t z = zero_masked(m.layers[size_t(t.layer)][t.role], mask);
      record(t, z);
    }
    return;
  }

  for (int l = 0; l < L; l++) {
    if (wanda) stream->measure(l, norms, targets);
    for (auto& t : list) {
      if (t.layer != l) continue;
      Tensor& w = m.layers[size_t(l)][t.role];
      auto keys = keys_of(t);
      auto mask = select_in_matrix(keys.data(), w.dim(0), w.dim(1), o.scope, o.amount, o.nm_n, o.nm_m,
                                   layer_tensor_name(*m.arch, t.role, l));
      int64_t z = zero_masked(w, mask);
      record(t, z);
    }
    if (wanda && l + 1 < L) stream->advance(l);
  }
}

void zero_member_slice(Tensor& t, const Member& mem) {
  Tensor out = t.converted(t.dtype);
  const size_t es = dtype_size(t.dtype);
  auto* p = static_cast<uint8_t*>(out.data);
  const int64_t rows = t.dim(0), cols = t.ndim() == 2 ? t.dim(1) : 1;
  for (int64_t i : mem.index) {
    if (mem.axis == 0) std::memset(p + size_t(i) * cols * es, 0, size_t(cols) * es);
    else
      for (int64_t r = 0; r < rows; r++) std::memset(p + (size_t(r) * cols + i) * es, 0, es);
  }
  t = std::move(out);
}

Tensor& member_tensor_mut(Model& m, const Member& mem) {
  if (mem.layer >= 0) return m.layers[size_t(mem.layer)].w[size_t(mem.role)];
  if (mem.role == int(GlobalRole::LmHead) && m.cfg.tied) return m.global[size_t(GlobalRole::Embed)];
  return m.global[size_t(mem.role)];
}

void sparsify_ln(Model& m, const SparsifyOptions& o, const std::vector<Role>& targets, SparsifyReport& rep) {
  GroupOptions go;
  go.gqa_unit = GqaUnit::KvGroup;
  go.heads = go.mlp = go.hidden = false;
  for (Role r : targets) {
    UnitKind k = ln_unit_kind(r, o.ln_dim);
    if (k == UnitKind::Mlp) go.mlp = true;
    else if (k == UnitKind::Hidden) go.hidden = true;
    else go.heads = true;
  }
  std::vector<Group> groups = discover_groups(m, go);
  std::vector<double> scores = ln_group_scores(m, groups, targets, o.ln_dim, o.ln_norm);
  // Buckets: attention units of a layer (heads or KV groups), MLP channels of a layer, hidden.
  std::map<std::pair<int, int>, std::vector<size_t>> buckets;
  for (size_t i = 0; i < groups.size(); i++) {
    const Group& g = groups[i];
    int kind = g.kind == UnitKind::KvGroup ? int(UnitKind::Head) : int(g.kind);
    buckets[{g.layer, kind}].push_back(i);
  }
  std::vector<Group> chosen;
  for (auto& [key, idx] : buckets) {
    const int n = int(idx.size());
    int r = int(amount_to_count(o.amount, n));
    r = std::min(r, n - 1);  // a layer keeps at least one unit of each kind (remove_groups' rule)
    std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return scores[a] < scores[b]; });
    LnUnits u;
    u.kind = groups[idx[0]].kind;
    u.layer = key.first;
    u.before = n;
    u.removed = r;
    rep.ln_units.push_back(u);
    for (int j = 0; j < r; j++) chosen.push_back(groups[idx[size_t(j)]]);
  }
  std::sort(rep.ln_units.begin(), rep.ln_units.end(), [](const LnUnits& a, const LnUnits& b) {
    return a.layer != b.layer ? (a.layer < 0 ? false : b.layer < 0 ? true : a.layer < b.layer) : int(a.kind) < int(b.kind);
  });
  if (!o.ln_keep_shape) {
    if (!chosen.empty()) m = remove_groups(m, chosen);
    return;
  }
  for (const Group& g : chosen)
    for (const Member& mem : g.members) zero_member_slice(member_tensor_mut(m, mem), mem);
  for (int l = 0; l < int(m.layers.size()); l++)
    for (Role r : matrix_roles()) {
      if (!has_role(targets, r) || m.layers[size_t(l)][r].empty()) continue;
      const Tensor& w = m.layers[size_t(l)][r];
      TensorSparsity s;
      s.name = layer_tensor_name(*m.arch, r, l);
      s.layer = l;
      s.role = r;
      s.numel = w.numel();
      s.zeros = count_zeros(w);
      s.zeroed = s.zeros;
      rep.tensors.push_back(s);
    }
}

}  // namespace

SparsifyMethod parse_sparsify_method(const std::string& s) {
  if (s == "l1") return SparsifyMethod::L1;
  if (s == "random") return SparsifyMethod::Random;
  if (s == "wanda") return SparsifyMethod::Wanda;
  if (s == "ln") return SparsifyMethod::Ln;
  throw UserError("--method '" + s + "' is not one of l1, random, wanda, ln");
}

SparsityScope parse_sparsity_scope(const std::string& s) {
  if (s == "per-tensor") return SparsityScope::PerTensor;
  if (s == "per-row") return SparsityScope::PerRow;
  if (s == "global") return SparsityScope::Global;
  throw UserError("--scope '" + s + "' is not one of per-tensor, per-row, global");
}

std::string sparsify_method_name(SparsifyMethod m) {
  const char* n[] = {"l1", "random", "wanda", "ln"};
  return n[int(m)];
}

std::string sparsity_scope_name(SparsityScope s) {
  const char* n[] = {"per-tensor", "per-row", "global"};
  return n[int(s)];
}

std::pair<int, int> parse_nm(const std::string& s, const std::string& flag) {
  auto colon = s.find(':');
  auto bad = [&] { return UserError(flag + " '" + s + "' must be N:M with integers 0 < N < M (e.g. 2:4)"); };
  if (colon == std::string::npos) throw bad();
  std::string a = s.substr(0, colon), b = s.substr(colon + 1);
  auto digits = [](const std::string& x) {
    return !x.empty() && x.size() <= 6 && std::all_of(x.begin(), x.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  if (!digits(a) || !digits(b)) throw bad();
  int n = std::stoi(a), m = std::stoi(b);
  if (n <= 0 || n >= m) throw bad();
  return {n, m};
}

std::vector<Role> default_sparsify_targets(const SparsifyOptions& o) {
  if (o.method != SparsifyMethod::Ln) return matrix_roles();
  std::vector<Role> out;
  for (Role r : matrix_roles())
    if (ln_unit_kind(r, o.ln_dim) != UnitKind::Hidden) out.push_back(r);
  return out;
}

int64_t amount_to_count(double amount, int64_t n) {
  double x = amount * double(n);
  double f = std::floor(x), d = x - f;
  int64_t k = int64_t(f);
  if (d > 0.5 || (d == 0.5 && (k % 2) != 0)) k++;
  return std::clamp<int64_t>(k, 0, n);
}

uint32_t score_key(float s) {
  uint32_t u;
  std::memcpy(&u, &s, 4);
  return u & 0x7fffffffu;
}

std::vector<uint32_t> matrix_score_keys(const float* w, int64_t rows, int64_t cols, SparsifyMethod m, const float* col_norms,
                                        uint64_t seed, uint64_t stream) {
  const int64_t n = rows * cols;
  std::vector<uint32_t> keys(static_cast<size_t>(n));
  switch (m) {
    case SparsifyMethod::L1:
    case SparsifyMethod::Ln:
      for (int64_t i = 0; i < n; i++) keys[size_t(i)] = score_key(std::fabs(w[i]));
      break;
    case SparsifyMethod::Wanda:
      if (!col_norms) throw RuntimeError("wanda scores need the input-column norms");
      for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < cols; j++) {
          const int64_t i = r * cols + j;
          keys[size_t(i)] = score_key(std::fabs(w[i]) * col_norms[j]);
        }
      break;
    case SparsifyMethod::Random: {
      const uint64_t base = mix64(seed ^ mix64(stream + 0x51ED270B27A2F1ull));
      for (int64_t i = 0; i < n; i++) keys[size_t(i)] = uint32_t(mix64(base + uint64_t(i)) >> 33);
      break;
    }
  }
  return keys;
}

KeyThreshold kth_smallest_threshold(const std::function<void(const KeyChunkFn&)>& visit, int64_t k) {
  if (k <= 0) return {0, 0};
  std::vector<int64_t> hist(1 << 16, 0);
  int64_t total = 0;
  visit([&](const uint32_t* keys, int64_t n) {
    for (int64_t i = 0; i < n; i++) hist[keys[i] >> 16]++;
    total += n;
  });
  if (k >= total) return {0xffffffffu, 0};  // every key (keys never reach 2^32-1: the sign bit is clear)
  int64_t before = 0;
  uint32_t hi = 0;
  while (before + hist[hi] < k) before += hist[hi++];
  std::fill(hist.begin(), hist.end(), 0);
  visit([&](const uint32_t* keys, int64_t n) {
    for (int64_t i = 0; i < n; i++)
      if ((keys[i] >> 16) == hi) hist[keys[i] & 0xffffu]++;
  });
  uint32_t lo = 0;
  while (before + hist[lo] < k) before += hist[lo++];
  return {(hi << 16) | lo, k - before};
}

std::vector<uint8_t> select_in_matrix(const uint32_t* keys, int64_t rows, int64_t cols, SparsityScope scope, double amount,
                                      int nm_n, int nm_m, const std::string& name) {
  std::vector<uint8_t> mask(size_t(rows * cols), 0);
  if (nm_m > 0) {
    if (cols % nm_m != 0)
      throw UserError(name + ": " + std::to_string(cols) + " input columns are not a multiple of M = " + std::to_string(nm_m) +
                      " (--nm)");
    std::vector<int64_t> idx(static_cast<size_t>(nm_m));
    for (int64_t g0 = 0; g0 < rows * cols; g0 += nm_m) {
      for (int j = 0; j < nm_m; j++) idx[size_t(j)] = g0 + j;
      std::partial_sort(idx.begin(), idx.begin() + nm_n, idx.end(), KeyLess{keys});
      for (int j = 0; j < nm_n; j++) mask[size_t(idx[size_t(j)])] = 1;
    }
    return mask;
  }
  if (scope == SparsityScope::PerRow) {
    const int64_t k = amount_to_count(amount, cols);
    if (k == 0) return mask;
    std::vector<int64_t> idx(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; r++) {
      for (int64_t j = 0; j < cols; j++) idx[size_t(j)] = r * cols + j;
      std::nth_element(idx.begin(), idx.begin() + (k - 1), idx.end(), KeyLess{keys});
      for (int64_t j = 0; j < k; j++) mask[size_t(idx[size_t(j)])] = 1;
    }
    return mask;
  }
  if (scope == SparsityScope::Global) throw RuntimeError("select_in_matrix: the global scope spans tensors");
  const int64_t n = rows * cols;
  KeyThreshold thr = kth_smallest_threshold([&](const KeyChunkFn& fn) { fn(keys, n); }, amount_to_count(amount, n));
  int64_t taken = 0;
  for (int64_t i = 0; i < n; i++) {
    if (keys[i] < thr.key) mask[size_t(i)] = 1;
    else if (keys[i] == thr.key && taken < thr.take_equal) {
      mask[size_t(i)] = 1;
      taken++;
    }
  }
  return mask;
}

UnitKind ln_unit_kind(Role r, int dim) {
  if (!is_matrix_role(r)) throw RuntimeError("ln_unit_kind: not a projection");
  // The unit a row (dim 0) or column (dim 1) belongs to is the index space of that axis.
  const RoleDesc& d = role_desc(arch_for_model_type("llama", "<builtin>"), r);
  switch (dim == 0 ? d.axis0 : d.axis1) {
    case Space::QHeads:
    case Space::KVHeads: return UnitKind::Head;
    case Space::Mlp: return UnitKind::Mlp;
    default: return UnitKind::Hidden;
  }
}

std::vector<double> ln_group_scores(const Model& m, const std::vector<Group>& groups, const std::vector<Role>& targets, int dim,
                                    int p) {
  std::map<std::pair<int, int>, std::vector<float>> cache;
  auto f32_of = [&](int layer, Role r) -> const std::vector<float>& {
    auto it = cache.find({layer, int(r)});
    if (it != cache.end()) return it->second;
    const Tensor& t = m.layers[size_t(layer)][r];
    std::vector<float> v(size_t(t.numel()));
    to_f32(t.dtype, t.data, v.data(), v.size());
    return cache.emplace(std::make_pair(layer, int(r)), std::move(v)).first->second;
  };
  std::vector<double> scores(groups.size(), 0.0);
  for (size_t gi = 0; gi < groups.size(); gi++) {
    double sum = 0;
    for (const Member& mem : groups[gi].members) {
      if (mem.layer < 0 || mem.axis != dim) continue;
      Role r = Role(mem.role);
      if (!is_matrix_role(r) || !has_role(targets, r)) continue;
      const Tensor& t = m.layers[size_t(mem.layer)][r];
      const std::vector<float>& w = f32_of(mem.layer, r);
      const int64_t rows = t.dim(0), cols = t.dim(1);
      auto acc = [&](float x) { sum += p == 1 ? std::fabs(double(x)) : double(x) * x; };
      for (int64_t i : mem.index) {
        if (dim == 0)
          for (int64_t j = 0; j < cols; j++) acc(w[size_t(i * cols + j)]);
        else
          for (int64_t r2 = 0; r2 < rows; r2++) acc(w[size_t(r2 * cols + i)]);
      }
    }
    scores[gi] = p == 1 ? sum : std::sqrt(sum);
  }
  return scores;
}

SparsifyReport sparsify_model(Model& m, const SparsifyOptions& o, const std::vector<int32_t>& calib, int B, int T) {
  auto t0 = std::chrono::steady_clock::now();
  if (!(o.amount >= 0 && o.amount < 1)) throw UserError("--amount must be in [0, 1)");
  if (o.nm_m > 0 && (o.nm_n <= 0 || o.nm_n >= o.nm_m)) throw UserError("--nm must be N:M with 0 < N < M");
  if (o.method == SparsifyMethod::Ln && o.nm_m > 0) throw UserError("--nm applies to unstructured methods, not ln");
  if (o.ln_norm != 1 && o.ln_norm != 2) throw UserError("--n must be 1 or 2");
  if (o.ln_dim != 0 && o.ln_dim != 1) throw UserError("--dim must be rows or cols");
  std::vector<Role> targets = o.targets.empty() ? default_sparsify_targets(o) : o.targets;
  for (Role r : targets)
    if (!is_matrix_role(r)) throw UserError("--targets names a tensor that is not a projection");
  SparsifyReport rep;
  rep.params_before = m.n_params();
  if (o.method == SparsifyMethod::Ln) sparsify_ln(m, o, targets, rep);
  else sparsify_unstructured(m, o, targets, calib, B, T, rep);
  for (auto& t : rep.tensors) {
    rep.target_params += t.numel;
    rep.target_zeroed += t.zeroed;
    rep.target_zeros += t.zeros;
  }
  rep.params_after = m.n_params();
  m.for_each_tensor([&](const std::string&, const Tensor& t) { rep.model_zeros_after += count_zeros(t); });
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

}  // namespace llmprune
